package quiver

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"fmt"
	"reflect"
	"runtime"
	"runtime/cgo"
)

type cacheKey struct{}

// NewContext is ctx carrying c as the active cache: Memo.Call and CallIn
// with this context memoize into c.
func NewContext(ctx context.Context, c *Cache) context.Context {
	return context.WithValue(ctx, cacheKey{}, c)
}

// FromContext is the cache ctx carries, if any.
func FromContext(ctx context.Context) (*Cache, bool) {
	c, ok := ctx.Value(cacheKey{}).(*Cache)
	return c, ok && c != nil
}

// CallIn runs f with the cache of ctx active on its OS thread (nothing
// changes when ctx carries none: calls go to the default cache, which
// QUIVER_CACHE names). Memoized calls made by f through a Func, or through a
// memoized C function pointer called on this goroutine, go to that cache.
func CallIn(ctx context.Context, f func() error) error {
	c, ok := FromContext(ctx)
	if !ok {
		return f()
	}
	return WithCache(c, f)
}

var (
	contextType = reflect.TypeOf((*context.Context)(nil)).Elem()
	errorType   = reflect.TypeOf((*error)(nil)).Elem()
)

// Memo is a memoized Go function over Go values. Safe for use by many
// goroutines.
type Memo struct {
	f       *Func
	fn      reflect.Value
	withCtx bool // fn's first parameter is a context.Context, not part of the key
}

// NewMemo memoizes fn, a Go function of any number of arguments (variadic
// too) of the types ToValue takes, returning one result, or a result and an
// error (an error fails the call, which is then not stored). A first
// parameter of type context.Context receives the context of the call and is
// not part of the key. A call is keyed by name, version (empty: none) and its
// arguments as a list, as every language keys it: Python's
// @quiver.memo(name=...) called with all its arguments positionally stores
// under the key Call computes here. Bump the version when fn's answers change.
func NewMemo(name, version string, fn any) (*Memo, error) {
	r := reflect.ValueOf(fn)
	t := r.Type()
	if t.Kind() != reflect.Func {
		return nil, fmt.Errorf("quiver: NewMemo wants a function, got a %T", fn)
	}
	if t.NumOut() < 1 || t.NumOut() > 2 || (t.NumOut() == 2 && t.Out(1) != errorType) {
		return nil, fmt.Errorf("quiver: %s: a memoized function returns a result, or a result and an error (%v)", name, t)
	}
	m := &Memo{fn: r, withCtx: t.NumIn() > 0 && t.In(0) == contextType}
	f, err := New(name, version, m.body)
	if err != nil {
		return nil, err
	}
	m.f = f
	return m, nil
}

// callState is what Call hands the body it runs: the body runs on the same
// locked OS thread, synchronously, so a C thread-local carries it.
type callState struct{ ctx context.Context }

func setCall(st *callState) (restore func()) {
	h := cgo.NewHandle(st)
	old := C.quiver_go_call_swap(C.uintptr_t(h))
	return func() {
		C.quiver_go_call_swap(old)
		h.Delete()
	}
}

func currentCall() *callState {
	if h := C.quiver_go_call_current(); h != 0 {
		return cgo.Handle(h).Value().(*callState)
	}
	return nil
}

// body runs fn on a miss: quiver values in, a quiver value out.
func (m *Memo) body(args, _ *Value) (*Value, error) {
	t := m.fn.Type()
	list, err := args.Go()
	if err != nil {
		return nil, err
	}
	items, _ := list.([]any)
	first := 0
	in := []reflect.Value{}
	if m.withCtx {
		first = 1
		in = append(in, reflect.ValueOf(context.Background()))
		if st := currentCall(); st != nil {
			in[0] = reflect.ValueOf(st.ctx)
		}
	}
	fixed := t.NumIn() - first
	if t.IsVariadic() {
		fixed--
	}
	if len(items) < fixed || (!t.IsVariadic() && len(items) != fixed) {
		return nil, fmt.Errorf("quiver: takes %d arguments, got %d", fixed, len(items))
	}
	for i, item := range items {
		var pt reflect.Type
		if i < fixed {
			pt = t.In(first + i)
		} else {
			pt = t.In(t.NumIn() - 1).Elem()
		}
		arg := reflect.New(pt).Elem()
		if err := assign(arg, item); err != nil {
			return nil, fmt.Errorf("argument %d: %w", i+1, err)
		}
		in = append(in, arg)
	}
	out := m.fn.Call(in)
	if len(out) == 2 && !out[1].IsNil() {
		return nil, out[1].Interface().(error)
	}
	return ToValue(out[0].Interface())
}

// args is the key's argument list.
func (m *Memo) args(args []any) (*Value, error) {
	return ToValue(args)
}

// Call is fn(args...): the stored result from the cache ctx carries (the
// default cache when none), or fn's, which is then stored. The result has
// fn's result type; a stored result that does not fit it is an error.
func (m *Memo) Call(ctx context.Context, args ...any) (any, error) {
	list, err := m.args(args)
	if err != nil {
		return nil, err
	}
	defer list.Free()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	restore := setCall(&callState{ctx})
	defer restore()
	var v *Value
	if err := CallIn(ctx, func() error {
		var err error
		v, err = m.f.Call(list)
		return err
	}); err != nil {
		return nil, err
	}
	defer v.Free()
	g, err := v.Go()
	if err != nil {
		return nil, err
	}
	out := reflect.New(m.fn.Type().Out(0)).Elem()
	if err := assign(out, g); err != nil {
		return nil, err
	}
	return out.Interface(), nil
}

// Call is m.Call with the result as an R.
func Call[R any](ctx context.Context, m *Memo, args ...any) (R, error) {
	var zero R
	got, err := m.Call(ctx, args...)
	if err != nil {
		return zero, err
	}
	r, ok := got.(R)
	if !ok && got != nil {
		return zero, fmt.Errorf("quiver: the result is a %T, not a %T", got, zero)
	}
	return r, nil
}

// Digest is the key of the call m.Call(ctx, args...) looks up: what
// Cache.Contains and Cache.Load take, equal to the key every language computes.
func (m *Memo) Digest(args ...any) (Digest, error) {
	list, err := m.args(args)
	if err != nil {
		return Digest{}, err
	}
	defer list.Free()
	return m.f.Digest(list)
}

// Hits counts calls answered from a cache; Misses calls that ran fn.
func (m *Memo) Hits() uint64 { return m.f.Hits() }

// Misses counts calls that ran fn.
func (m *Memo) Misses() uint64 { return m.f.Misses() }

// Free releases the memoized function.
func (m *Memo) Free() { m.f.Free() }
