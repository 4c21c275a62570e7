package quiver_test

import (
	"context"
	"fmt"

	"quiver"
)

func ExampleNewMemo() {
	c, err := quiver.Memory() // quiver.Open("work/cache") for a directory
	if err != nil {
		panic(err)
	}
	defer c.Close()
	ctx := quiver.NewContext(context.Background(), c)

	add, err := quiver.NewMemo("shared.add", "", func(x, y int64) int64 { return x + y })
	if err != nil {
		panic(err)
	}
	defer add.Free()
	for i := 0; i < 2; i++ {
		sum, err := quiver.Call[int64](ctx, add, 1, 2) // runs and stores, then a hit
		fmt.Println(sum, err)
	}
	// The key Python's @quiver.memo(name="shared.add") computes for add(1, 2).
	key, _ := add.Digest(1, 2)
	found, _ := c.Contains(key)
	fmt.Println(key, found, add.Hits(), add.Misses())
	// Output:
	// 3 <nil>
	// 3 <nil>
	// d2aec93101298c8daf75589ce9ce1f83 true 1 1
}
