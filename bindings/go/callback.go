package quiver

// A file with //export may only declare C things in its preamble.

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"runtime/cgo"
	"unsafe"
)

// quiverGoBody is the C body of every Func made by New: it finds the Go
// Body through the handle quiver passes as userdata.
//
//export quiverGoBody
func quiverGoBody(result **C.qv_value, args, kwargs *C.qv_value, userdata unsafe.Pointer) (status C.qv_status) {
	body := cgo.Handle(uintptr(userdata)).Value().(Body)
	fail := func(err error) {
		msg := C.CString(err.Error())
		defer C.free(unsafe.Pointer(msg))
		C.quiver_go_body_failed(msg)
		status = C.QV_EFAILED
		if e, ok := err.(*Error); ok && e.Status < 0 {
			status = C.qv_status(e.Status)
		}
	}
	// A panic must not unwind through C frames: it fails the call instead.
	defer func() {
		if r := recover(); r != nil {
			fail(fmt.Errorf("the body panicked: %v", r))
		}
	}()
	// A call made without kwargs passes NULL; the body always sees a map.
	kw := &Value{p: kwargs}
	if kwargs == nil {
		kw = NewMap()
		defer kw.Free()
	}
	v, err := body(&Value{p: args}, kw)
	if err != nil {
		fail(err)
		return
	}
	*result = v.take()
	return C.QV_OK
}

//export quiverGoRelease
func quiverGoRelease(userdata unsafe.Pointer) {
	cgo.Handle(uintptr(userdata)).Delete()
}
