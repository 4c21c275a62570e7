// Package linktest holds Go functions exported to C, memoized by quiver
// through libffi in link_test.go (cgo cannot appear in test files).
package linktest

/*
#include <stdint.h>
#include "calls.h"
*/
import "C"

import (
	"math"
	"sync/atomic"
	"unsafe"
)

// Runs counts how often each body really ran.
var Runs struct{ Pow, Scale, Collatz, Greet, Shared, Add atomic.Int64 }

//export goPow
func goPow(x C.double, n C.int64_t) C.double {
	Runs.Pow.Add(1)
	return C.double(math.Pow(float64(x), float64(n)))
}

//export goScale
func goScale(x C.double, n C.int64_t) C.double {
	Runs.Scale.Add(1)
	return x * C.double(n)
}

// Steps is the number of Collatz steps from n down to 1.
func Steps(n uint64) uint32 {
	var steps uint32
	for ; n > 1; steps++ {
		if n%2 == 0 {
			n /= 2
		} else {
			n = 3*n + 1
		}
	}
	return steps
}

//export goCollatz
func goCollatz(n C.uint64_t) C.uint32_t {
	Runs.Collatz.Add(1)
	return C.uint32_t(Steps(uint64(n)))
}

// greeting is C memory goGreet keeps owning until its next call, as quiver's
// str results require; the tests call it from one goroutine at a time.
var greeting *C.char

//export goGreet
func goGreet(name *C.char) *C.char {
	Runs.Greet.Add(1)
	C.free(unsafe.Pointer(greeting))
	greeting = C.CString("hello, " + C.GoString(name))
	return greeting
}

//export goShared
func goShared(n C.int64_t, s *C.char) C.double {
	Runs.Shared.Add(1)
	return -1 // never the stored 42.5: a run would show
}

//export goAdd
func goAdd(x, y C.int64_t) C.int64_t {
	Runs.Add.Add(1)
	return x + y
}
