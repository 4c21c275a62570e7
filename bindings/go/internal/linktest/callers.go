package linktest

/*
#include <stdlib.h>
#include "calls.h"
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// The original Go functions, as the C function pointers quiver memoizes.
func PowPointer() unsafe.Pointer     { return C.link_go_pow() }
func ScalePointer() unsafe.Pointer   { return C.link_go_scale() }
func CollatzPointer() unsafe.Pointer { return C.link_go_collatz() }
func GreetPointer() unsafe.Pointer   { return C.link_go_greet() }
func SharedPointer() unsafe.Pointer  { return C.link_go_shared() }
func AddPointer() unsafe.Pointer     { return C.link_go_add() }

// C callers of a function pointer: the same code runs the original or the
// memoized function, whichever pointer it is given.

func CallF64F64I64(f unsafe.Pointer, x float64, n int64) float64 {
	return float64(C.link_call_f64_f64_i64(f, C.double(x), C.int64_t(n)))
}

func CallU32U64(f unsafe.Pointer, n uint64) uint32 {
	return uint32(C.link_call_u32_u64(f, C.uint64_t(n)))
}

// CallStrStr copies the result before anything else can run on its thread: a
// memoized pointer's str result lives until the thread's next call through a
// quiver pointer.
func CallStrStr(f unsafe.Pointer, s string) string {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cs := C.CString(s)
	defer C.free(unsafe.Pointer(cs))
	return C.GoString(C.link_call_str_str(f, cs))
}

func CallF64I64Str(f unsafe.Pointer, n int64, s string) float64 {
	cs := C.CString(s)
	defer C.free(unsafe.Pointer(cs))
	return float64(C.link_call_f64_i64_str(f, C.int64_t(n), cs))
}

func CallI64I64I64(f unsafe.Pointer, x, y int64) int64 {
	return int64(C.link_call_i64_i64_i64(f, C.int64_t(x), C.int64_t(y)))
}
