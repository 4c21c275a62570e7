// Package quiver is Go's binding of quiver: memoized function calls in a
// cache that C, Python, Lua, Rust and Go share, over quiver's C ABI with cgo
// and the standard library only.
//
//   - Open, OpenReadOnly, Memory and Stack give a *Cache (Close it); Contains,
//     Get, Load and Query read it.
//   - NewContext puts a cache in a context.Context; Memo.Call memoizes into
//     the cache of the context it is given (the default cache, which
//     QUIVER_CACHE names, when none).
//   - NewMemo memoizes a Go function over Go values, keyed exactly as Python's
//     @quiver.memo, Lua's quiver.memo and Rust's quiver::memo key the same
//     call: what one stores, the others hit.
//   - NewC memoizes a C function pointer (a Go function exported with
//     //export, say) through libffi; New a Go function over quiver values.
//   - Errors are *Error: the status, its name and qv_errmsg(); errors.Is
//     matches them against ErrNotFound, ErrInvalid, ...
//
// quiver keeps two things per OS thread: the last error message and the
// stack of active caches. Go moves goroutines between threads, so every call
// here locks its goroutine to its thread for as long as it needs either, and
// WithCache keeps it locked while the cache is active.
package quiver

/*
#cgo pkg-config: quiver
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/cgo"
	"unsafe"
)

// Error is a failed quiver call: the status code, its name and the message.
type Error struct {
	Status  int
	Name    string
	Message string
}

// Error is "QV_NAME: message".
func (e *Error) Error() string { return e.Name + ": " + e.Message }

// Is makes errors.Is(err, quiver.ErrNotFound) and the like match any *Error of
// the same status, whatever its message.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Status == e.Status
}

// Sentinels for errors.Is; a returned *Error also carries the message.
var (
	ErrNotFound = &Error{Status: int(C.QV_NOTFOUND), Name: "QV_NOTFOUND", Message: "no such entry"}
	ErrInvalid  = &Error{Status: int(C.QV_EINVAL), Name: "QV_EINVAL", Message: "invalid argument"}
	ErrType     = &Error{Status: int(C.QV_ETYPE), Name: "QV_ETYPE", Message: "wrong type"}
	ErrRange    = &Error{Status: int(C.QV_ERANGE), Name: "QV_ERANGE", Message: "out of range"}
	ErrDecode   = &Error{Status: int(C.QV_EDECODE), Name: "QV_EDECODE", Message: "not canonical CBOR"}
	ErrIO       = &Error{Status: int(C.QV_EIO), Name: "QV_EIO", Message: "input/output error"}
	ErrReadOnly = &Error{Status: int(C.QV_EREADONLY), Name: "QV_EREADONLY", Message: "read-only cache"}
	ErrFailed   = &Error{Status: int(C.QV_EFAILED), Name: "QV_EFAILED", Message: "the function failed"}
)

// lastError must run on the OS thread that saw status, before its next quiver call.
func lastError(status C.qv_status) *Error {
	return &Error{
		Status:  int(status),
		Name:    C.GoString(C.qv_status_name(status)),
		Message: C.GoString(C.qv_errmsg()),
	}
}

// do runs f on a locked thread and turns a negative status into an *Error;
// QV_NOTFOUND comes back as found == false.
func do(f func() C.qv_status) (found bool, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	switch st := f(); {
	case st == C.QV_OK:
		return true, nil
	case st == C.QV_NOTFOUND:
		return false, nil
	default:
		return false, lastError(st)
	}
}

func check(f func() C.qv_status) error {
	found, err := do(f)
	if err == nil && !found {
		return &Error{Status: int(C.QV_NOTFOUND), Name: "QV_NOTFOUND", Message: "no such entry"}
	}
	return err
}

// IsNotFound reports whether err is quiver's QV_NOTFOUND.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// cstr is a C copy of s, or NULL for the empty string when nullIfEmpty.
func cstr(s string, nullIfEmpty bool) *C.char {
	if nullIfEmpty && s == "" {
		return nil
	}
	return C.CString(s)
}

// Version is the library's version, "MAJOR.MINOR.PATCH".
func Version() string { return C.GoString(C.qv_version()) }

// Digest is a call or value digest: 16 bytes of XXH3-128, big-endian.
type Digest [16]byte

func (d Digest) c() *C.qv_digest { return (*C.qv_digest)(unsafe.Pointer(&d)) }

// String is the digest as 32 lowercase hex characters.
func (d Digest) String() string {
	var out [33]C.char
	C.qv_digest_hex(d.c(), &out[0])
	return C.GoString(&out[0])
}

// ParseDigest reads 32 hex characters.
func ParseDigest(hex string) (Digest, error) {
	var d Digest
	chex := C.CString(hex)
	defer C.free(unsafe.Pointer(chex))
	err := check(func() C.qv_status {
		return C.qv_digest_parse((*C.qv_digest)(unsafe.Pointer(&d)), chex, C.size_t(len(hex)))
	})
	return d, err
}

// CallDigest is the digest every language computes for name/version over
// positional args (a list) and kwargs (a map, or nil for none). An empty
// version means none (null).
func CallDigest(name, version string, args, kwargs *Value) (Digest, error) {
	var d Digest
	cname, cversion := cstr(name, false), cstr(version, true)
	defer C.free(unsafe.Pointer(cname))
	defer C.free(unsafe.Pointer(cversion))
	err := check(func() C.qv_status {
		return C.qv_call_digest((*C.qv_digest)(unsafe.Pointer(&d)), cname, cversion, args.p, kwargs.ptr())
	})
	return d, err
}

// Value is a quiver value tree. Values made here are owned and freed with
// Free; values reached through Index or Find are borrowed from their parent
// and live as long as it (Free does nothing to them).
type Value struct {
	p     *C.qv_value
	owned bool
}

func (v *Value) ptr() *C.qv_value {
	if v == nil {
		return nil
	}
	return v.p
}

// Free releases an owned value.
func (v *Value) Free() {
	if v != nil && v.owned && v.p != nil {
		C.qv_value_free(v.p)
		v.p = nil
	}
}

func newValue(f func(out **C.qv_value) C.qv_status) (*Value, error) {
	var p *C.qv_value
	if err := check(func() C.qv_status { return f(&p) }); err != nil {
		return nil, err
	}
	return &Value{p: p, owned: true}, nil
}

// mustValue is for constructors that fail only when memory is exhausted,
// which Go itself treats as fatal.
func mustValue(f func(out **C.qv_value) C.qv_status) *Value {
	v, err := newValue(f)
	if err != nil {
		panic(err)
	}
	return v
}

// Null is the null value (Python's None, Lua's quiver.null).
func Null() *Value {
	return mustValue(func(o **C.qv_value) C.qv_status { return C.qv_value_new_null(o) })
}

// Bool is a boolean value.
func Bool(b bool) *Value {
	i := C.int(0)
	if b {
		i = 1
	}
	return mustValue(func(o **C.qv_value) C.qv_status { return C.qv_value_new_bool(o, i) })
}

// Int is an integer value (ToValue takes every integer type and *big.Int).
func Int(i int64) *Value {
	return mustValue(func(o **C.qv_value) C.qv_status { return C.qv_value_new_int(o, C.int64_t(i)) })
}

// Float is a float value, always stored as a float (1.0 is not the integer 1).
func Float(f float64) *Value {
	return mustValue(func(o **C.qv_value) C.qv_status { return C.qv_value_new_float(o, C.double(f)) })
}

// Text fails when s is not valid UTF-8.
func Text(s string) (*Value, error) {
	cs := C.CString(s)
	defer C.free(unsafe.Pointer(cs))
	return newValue(func(o **C.qv_value) C.qv_status { return C.qv_value_new_text(o, cs, C.size_t(len(s))) })
}

// Bytes is a byte string value (copied).
func Bytes(b []byte) *Value {
	cb := C.CBytes(b)
	defer C.free(cb)
	return mustValue(func(o **C.qv_value) C.qv_status { return C.qv_value_new_bytes(o, cb, C.size_t(len(b))) })
}

// List takes ownership of its items.
func List(items ...*Value) *Value {
	l := mustValue(func(o **C.qv_value) C.qv_status { return C.qv_value_new_list(o) })
	for _, it := range items {
		p := it.take()
		if err := check(func() C.qv_status { return C.qv_value_list_append(l.p, p) }); err != nil {
			panic(err)
		}
	}
	return l
}

// NewMap is an empty map; fill it with Set.
func NewMap() *Value {
	return mustValue(func(o **C.qv_value) C.qv_status { return C.qv_value_new_map(o) })
}

// Set adds an entry, taking ownership of key and value; a key already
// present is refused.
func (v *Value) Set(key, value *Value) error {
	k, val := key.take(), value.take()
	return check(func() C.qv_status { return C.qv_value_map_set(v.p, k, val) })
}

// take hands an owned value's tree to a new owner in C.
func (v *Value) take() *C.qv_value {
	if !v.owned {
		panic("quiver: a borrowed value cannot be put into a container")
	}
	p := v.p
	v.p, v.owned = nil, false
	return p
}

// Decode reads one canonical CBOR item; anything non-canonical is refused.
func Decode(data []byte) (*Value, error) {
	cd := C.CBytes(data)
	defer C.free(cd)
	return newValue(func(o **C.qv_value) C.qv_status { return C.qv_value_decode(o, cd, C.size_t(len(data))) })
}

// Encode is the value's canonical encoding.
func (v *Value) Encode() ([]byte, error) {
	var data unsafe.Pointer
	var n C.size_t
	if err := check(func() C.qv_status { return C.qv_value_encode(v.p, &data, &n) }); err != nil {
		return nil, err
	}
	defer C.qv_free(data)
	return C.GoBytes(data, C.int(n)), nil
}

// IsNull reports whether v is null.
func (v *Value) IsNull() bool { return C.qv_value_type(v.p) == C.QV_TYPE_NULL }

// Int is an integer value that fits int64, else an error (ErrType, ErrRange).
func (v *Value) Int() (int64, error) {
	var i C.int64_t
	err := check(func() C.qv_status { return C.qv_value_get_int(v.p, &i) })
	return int64(i), err
}

// Float is a float value, else an error (ErrType).
func (v *Value) Float() (float64, error) {
	var d C.double
	err := check(func() C.qv_status { return C.qv_value_get_float(v.p, &d) })
	return float64(d), err
}

// Text is a text value, else an error (ErrType).
func (v *Value) Text() (string, error) {
	var s *C.char
	var n C.size_t
	if err := check(func() C.qv_status { return C.qv_value_get_text(v.p, &s, &n) }); err != nil {
		return "", err
	}
	return C.GoStringN(s, C.int(n)), nil
}

// Len is the number of items of a list or entries of a map, else 0.
func (v *Value) Len() int { return int(C.qv_value_count(v.p)) }

// Index is the i-th item of a list (borrowed), or nil.
func (v *Value) Index(i int) *Value {
	return borrowed(C.qv_value_list_get(v.p, C.size_t(i)))
}

// Find is the value of a map under a text key (borrowed), or nil.
func (v *Value) Find(key string) *Value {
	ck := C.CString(key)
	defer C.free(unsafe.Pointer(ck))
	return borrowed(C.qv_value_map_find(v.p, ck))
}

func borrowed(p *C.qv_value) *Value {
	if p == nil {
		return nil
	}
	return &Value{p: p}
}

// Cache is an LMDB cache directory, a remote tier (a redis:// or unix:// URL)
// or a stack of both. Safe for use by many goroutines.
type Cache struct{ p *C.qv_cache }

// Open opens (creating it when missing) the LMDB cache in directory path, or
// the remote tier a redis:// or unix:// URL names.
func Open(path string) (*Cache, error) { return open(path, 0) }

// OpenReadOnly opens an existing cache for reading only: stores are refused.
func OpenReadOnly(path string) (*Cache, error) { return open(path, C.QV_CACHE_READONLY) }

func open(path string, flags C.uint32_t) (*Cache, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var opts C.qv_cache_options
	var p *C.qv_cache
	err := check(func() C.qv_status {
		if st := C.qv_cache_options_init(&opts, C.QV_CACHE_OPTIONS_VERSION); st != C.QV_OK {
			return st
		}
		opts.flags = flags
		return C.qv_cache_open(&p, cpath, &opts)
	})
	if err != nil {
		return nil, err
	}
	return &Cache{p: p}, nil
}

// Memory is a new process-private memory cache: nothing is shared with
// another process, and it is gone when the last handle is closed.
func Memory() (*Cache, error) {
	var p *C.qv_cache
	if err := check(func() C.qv_status { return C.qv_cache_open_memory(&p) }); err != nil {
		return nil, err
	}
	return &Cache{p: p}, nil
}

// Stack is a cache over two: reads try local, then remote, and copy remote
// hits into local; stores go to both. Both stay usable and are closed on
// their own (the stack keeps its own references).
func Stack(local, remote *Cache) (*Cache, error) {
	var opts C.qv_stack_options
	var p *C.qv_cache
	err := check(func() C.qv_status {
		if st := C.qv_stack_options_init(&opts, C.QV_STACK_OPTIONS_VERSION); st != C.QV_OK {
			return st
		}
		return C.qv_cache_stack(&p, local.p, remote.p, &opts)
	})
	if err != nil {
		return nil, err
	}
	return &Cache{p: p}, nil
}

// Close releases the handle.
func (c *Cache) Close() {
	if c != nil && c.p != nil {
		C.qv_cache_close(c.p)
		c.p = nil
	}
}

// Path is the cache's absolute directory, or its URL, or "stack(...)".
func (c *Cache) Path() string { return C.GoString(C.qv_cache_path(c.p)) }

// Contains reports whether a call is stored (a stack asks its remote tier too).
func (c *Cache) Contains(key Digest) (bool, error) {
	return do(func() C.qv_status { return C.qv_cache_contains(c.p, key.c()) })
}

// Get is the stored result of a call, or nil on a miss.
func (c *Cache) Get(key Digest) (*Value, error) {
	var p *C.qv_value
	found, err := do(func() C.qv_status { return C.qv_cache_get_value(c.p, key.c(), &p) })
	if !found || err != nil {
		return nil, err
	}
	return &Value{p: p, owned: true}, nil
}

// Load is the whole call record: a map with "name", "version", "args",
// "kwargs", "result", "start_ns", "duration_ns", "lang" and "meta".
func (c *Cache) Load(key Digest) (*Value, error) {
	return newValue(func(o **C.qv_value) C.qv_status { return C.qv_cache_load(c.p, key.c(), o) })
}

// Query is the keys of the calls stored under name (an index lookup), or of
// every call when name is empty: a snapshot taken now. Load reads each.
func (c *Cache) Query(name string) ([]Digest, error) {
	cname := cstr(name, true)
	defer C.free(unsafe.Pointer(cname))
	var it *C.qv_iter
	if err := check(func() C.qv_status { return C.qv_cache_query(&it, c.p, cname) }); err != nil {
		return nil, err
	}
	defer C.qv_iter_free(it)
	keys := make([]Digest, 0, int(C.qv_iter_count(it)))
	for {
		var d Digest
		found, err := do(func() C.qv_status { return C.qv_iter_next(it, (*C.qv_digest)(unsafe.Pointer(&d))) })
		if err != nil {
			return nil, err
		}
		if !found {
			return keys, nil
		}
		keys = append(keys, d)
	}
}

// Entries is the number of calls stored in the cache (by anyone).
func (c *Cache) Entries() (uint64, error) {
	var n C.uint64_t
	err := check(func() C.qv_status { return C.qv_cache_stat(c.p, C.QV_STAT_ENTRIES, &n) })
	return uint64(n), err
}

// RemoteHits counts this stack's hits that its remote tier served.
func (c *Cache) RemoteHits() (uint64, error) {
	var n C.uint64_t
	err := check(func() C.qv_status { return C.qv_cache_stat(c.p, C.QV_STAT_REMOTE_HITS, &n) })
	return uint64(n), err
}

// WithCache runs f with c as the active cache of its goroutine, which stays
// on one OS thread until f returns: memoized calls made by f, through a Func
// or a memoized function pointer, go to c.
func WithCache(c *Cache, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if st := C.qv_ctx_push(c.p, nil); st != C.QV_OK {
		return lastError(st)
	}
	defer C.qv_ctx_pop()
	return f()
}

// Func is a memoized function. Safe for use by many goroutines.
type Func struct{ p *C.qv_fn }

// NewC memoizes a C function (a Go function exported with //export, say)
// described by a signature such as "f64(f64,i64)". An empty version means none.
func NewC(name, version string, fn unsafe.Pointer, signature string) (*Func, error) {
	cname, cversion, csig := cstr(name, false), cstr(version, true), C.CString(signature)
	defer C.free(unsafe.Pointer(cname))
	defer C.free(unsafe.Pointer(cversion))
	defer C.free(unsafe.Pointer(csig))
	var p *C.qv_fn
	err := check(func() C.qv_status {
		return C.qv_fn_new_c(&p, cname, cversion, (*[0]byte)(fn), csig)
	})
	if err != nil {
		return nil, err
	}
	return &Func{p: p}, nil
}

// Body computes a result from positional args (a list) and kwargs (a map).
// Both are borrowed for the call. An error fails the call, which is then not
// stored.
type Body func(args, kwargs *Value) (*Value, error)

// New memoizes a Go function over quiver values.
func New(name, version string, body Body) (*Func, error) {
	cname, cversion := cstr(name, false), cstr(version, true)
	defer C.free(unsafe.Pointer(cname))
	defer C.free(unsafe.Pointer(cversion))
	h := cgo.NewHandle(body) // released by quiverGoRelease, also when qv_fn_new fails
	var p *C.qv_fn
	err := check(func() C.qv_status { return C.quiver_go_fn_new(&p, cname, cversion, C.uintptr_t(h)) })
	if err != nil {
		return nil, err
	}
	return &Func{p: p}, nil
}

// Free drops the handle; a pointer from Pointer dies with it.
func (f *Func) Free() {
	if f != nil && f.p != nil {
		C.qv_fn_free(f.p)
		f.p = nil
	}
}

// Pointer is a C function pointer with the signature given to NewC that
// memoizes every call into the calling thread's active cache (the default
// cache when none). str and bytes results are owned by quiver until the
// thread's next call through any quiver function pointer. Valid until Free.
func (f *Func) Pointer() (unsafe.Pointer, error) {
	var ptr unsafe.Pointer
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if ptr = C.qv_fn_pointer(f.p); ptr == nil {
		return nil, lastError(C.QV_EINVAL)
	}
	return ptr, nil
}

// Call looks the call up in the active cache and runs the body on a miss.
func (f *Func) Call(args *Value) (*Value, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	C.free(unsafe.Pointer(C.quiver_go_body_error()))
	v, err := newValue(func(o **C.qv_value) C.qv_status { return C.qv_fn_call(f.p, args.p, o) })
	if m := C.quiver_go_body_error(); m != nil {
		defer C.free(unsafe.Pointer(m))
		if e, ok := err.(*Error); ok {
			e.Message = C.GoString(m)
		}
	}
	return v, err
}

// Digest is the call digest for these positional arguments.
func (f *Func) Digest(args *Value) (Digest, error) {
	var d Digest
	err := check(func() C.qv_status {
		return C.qv_fn_digest((*C.qv_digest)(unsafe.Pointer(&d)), f.p, args.p, nil)
	})
	return d, err
}

func (f *Func) stat(which C.int) uint64 {
	var n C.uint64_t
	if err := check(func() C.qv_status { return C.qv_fn_stat(f.p, which, &n) }); err != nil {
		panic(fmt.Sprintf("quiver: qv_fn_stat(%d): %v", which, err))
	}
	return uint64(n)
}

// Hits counts calls answered from a cache.
func (f *Func) Hits() uint64 { return f.stat(C.QV_FN_STAT_HITS) }

// Misses counts calls that ran the body.
func (f *Func) Misses() uint64 { return f.stat(C.QV_FN_STAT_MISSES) }
