// The README's quick start in Go: quickstart.square in the cache directory
// the other quick starts filled, so their calls are hits here and only
// square(7) runs.
//
//	go run ./examples/square ../../quickstart-cache
package main

import (
	"context"
	"fmt"
	"os"

	"quiver"
)

func main() {
	dir := "quickstart-cache"
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	c, err := quiver.Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Close()
	ctx := quiver.NewContext(context.Background(), c)
	square, err := quiver.NewMemo("quickstart.square", "1", func(n int64) int64 { return n * n })
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer square.Free()
	for n := int64(1); n <= 7; n++ {
		v, err := quiver.Call[int64](ctx, square, n)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("square(%d) = %d\n", n, v)
	}
	fmt.Printf("%d hits, %d misses\n", square.Hits(), square.Misses())
}
