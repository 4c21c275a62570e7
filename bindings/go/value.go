package quiver

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"math/big"
	"reflect"
	"unsafe"
)

// Tag is a tagged value: the tags quiver gives meaning to for Python types
// (docs/FORMAT.md), or any other.
type Tag struct {
	Number  uint64
	Content any
}

// Entry is one entry of a Map.
type Entry struct{ Key, Value any }

// Map is a quiver map whose keys are not all text (a Go map cannot hold them
// all): entries in any order, quiver orders them canonically. Maps whose keys
// are all text come back as map[string]any.
type Map []Entry

// Go is the value as Go values: nil, bool, int64 (uint64 above the int64
// range, *big.Int beyond 64 bits), float64, string, []byte, []any,
// map[string]any (or Map when a key is not text), and Tag.
func (v *Value) Go() (any, error) {
	p := v.p
	switch C.qv_value_type(p) {
	case C.QV_TYPE_NULL:
		return nil, nil
	case C.QV_TYPE_BOOL:
		var b C.int
		err := check(func() C.qv_status { return C.qv_value_get_bool(p, &b) })
		return b != 0, err
	case C.QV_TYPE_INT:
		var neg C.int
		var n C.uint64_t
		if err := check(func() C.qv_status { return C.qv_value_get_cbor_int(p, &neg, &n) }); err != nil {
			return nil, err
		}
		switch {
		case neg == 0 && uint64(n) <= 1<<63-1:
			return int64(n), nil
		case neg == 0:
			return uint64(n), nil
		case uint64(n) <= 1<<63-1:
			return -1 - int64(n), nil
		default: // -1 - n below the int64 range
			b := new(big.Int).SetUint64(uint64(n))
			return b.Neg(b).Sub(b, big.NewInt(1)), nil
		}
	case C.QV_TYPE_BIGINT:
		var neg C.int
		var m *C.uint8_t
		var n C.size_t
		if err := check(func() C.qv_status { return C.qv_value_get_bigint(p, &neg, &m, &n) }); err != nil {
			return nil, err
		}
		b := new(big.Int).SetBytes(C.GoBytes(unsafe.Pointer(m), C.int(n)))
		if neg != 0 {
			b.Neg(b).Sub(b, big.NewInt(1))
		}
		return b, nil
	case C.QV_TYPE_FLOAT:
		return v.Float()
	case C.QV_TYPE_TEXT:
		return v.Text()
	case C.QV_TYPE_BYTES:
		return v.Bytes()
	case C.QV_TYPE_LIST:
		items := make([]any, v.Len())
		for i := range items {
			item, err := v.Index(i).Go()
			if err != nil {
				return nil, err
			}
			items[i] = item
		}
		return items, nil
	case C.QV_TYPE_MAP:
		n := v.Len()
		entries := make(Map, n)
		text := true
		for i := 0; i < n; i++ {
			k, err := borrowed(C.qv_value_map_key(p, C.size_t(i))).Go()
			if err != nil {
				return nil, err
			}
			x, err := borrowed(C.qv_value_map_value(p, C.size_t(i))).Go()
			if err != nil {
				return nil, err
			}
			_, isText := k.(string)
			text = text && isText
			entries[i] = Entry{k, x}
		}
		if !text {
			return entries, nil
		}
		m := make(map[string]any, n)
		for _, e := range entries {
			m[e.Key.(string)] = e.Value
		}
		return m, nil
	case C.QV_TYPE_TAG:
		var tag C.uint64_t
		var content *C.qv_value
		if err := check(func() C.qv_status { return C.qv_value_get_tag(p, &tag, &content) }); err != nil {
			return nil, err
		}
		c, err := borrowed(content).Go()
		return Tag{uint64(tag), c}, err
	}
	return nil, fmt.Errorf("quiver: a value of unknown type %d", int(C.qv_value_type(p)))
}

// Bool is a boolean value, else an error (ErrType).
func (v *Value) Bool() (bool, error) {
	var b C.int
	err := check(func() C.qv_status { return C.qv_value_get_bool(v.p, &b) })
	return b != 0, err
}

// Bytes is a byte string (copied), else an error (ErrType).
func (v *Value) Bytes() ([]byte, error) {
	var d *C.uint8_t
	var n C.size_t
	if err := check(func() C.qv_status { return C.qv_value_get_bytes(v.p, &d, &n) }); err != nil {
		return nil, err
	}
	return C.GoBytes(unsafe.Pointer(d), C.int(n)), nil
}

// Digest is the digest of the value's canonical encoding.
func (v *Value) Digest() (Digest, error) {
	var d Digest
	err := check(func() C.qv_status { return C.qv_value_digest(v.p, (*C.qv_digest)(unsafe.Pointer(&d))) })
	return d, err
}

// ToValue is the quiver value of a Go value (an owned tree; Free it): nil,
// bool, every integer type, *big.Int, float32/64, string, []byte, slices and
// arrays, maps, Map, Tag, a *Value (copied), and pointers to any of these
// (nil: null). Integers stay integers and floats stay floats, as in every
// language, so 2 and 2.0 are different calls.
func ToValue(x any) (*Value, error) {
	switch x := x.(type) {
	case nil:
		return Null(), nil
	case *Value:
		return newValue(func(o **C.qv_value) C.qv_status { return C.qv_value_clone(o, x.ptr()) })
	case *big.Int:
		if x.Sign() >= 0 {
			return bigValue(false, x.Bytes())
		}
		m := new(big.Int).Neg(x)
		return bigValue(true, m.Sub(m, big.NewInt(1)).Bytes())
	case []byte:
		return Bytes(x), nil
	case string:
		return Text(x)
	case Tag:
		content, err := ToValue(x.Content)
		if err != nil {
			return nil, err
		}
		c := content.take()
		return newValue(func(o **C.qv_value) C.qv_status { return C.qv_value_new_tag(o, C.uint64_t(x.Number), c) })
	case Map:
		m := NewMap()
		for _, e := range x {
			if err := setEntry(m, e.Key, e.Value); err != nil {
				m.Free()
				return nil, err
			}
		}
		return m, nil
	}
	r := reflect.ValueOf(x)
	switch r.Kind() {
	case reflect.Bool:
		return Bool(r.Bool()), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return Int(r.Int()), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		u := C.uint64_t(r.Uint())
		return mustValue(func(o **C.qv_value) C.qv_status { return C.qv_value_new_uint(o, u) }), nil
	case reflect.Float32, reflect.Float64:
		return Float(r.Float()), nil
	case reflect.String:
		return Text(r.String())
	case reflect.Slice, reflect.Array:
		if r.Kind() == reflect.Slice && r.IsNil() {
			return Null(), nil
		}
		if r.Type().Elem().Kind() == reflect.Uint8 {
			b := make([]byte, r.Len())
			reflect.Copy(reflect.ValueOf(b), r)
			return Bytes(b), nil
		}
		l := List()
		for i := 0; i < r.Len(); i++ {
			item, err := ToValue(r.Index(i).Interface())
			if err == nil {
				p := item.take()
				err = check(func() C.qv_status { return C.qv_value_list_append(l.p, p) })
			}
			if err != nil {
				l.Free()
				return nil, err
			}
		}
		return l, nil
	case reflect.Map:
		if r.IsNil() {
			return Null(), nil
		}
		m := NewMap()
		for it := r.MapRange(); it.Next(); {
			if err := setEntry(m, it.Key().Interface(), it.Value().Interface()); err != nil {
				m.Free()
				return nil, err
			}
		}
		return m, nil
	case reflect.Pointer, reflect.Interface:
		if r.IsNil() {
			return Null(), nil
		}
		return ToValue(r.Elem().Interface())
	}
	return nil, &Error{Status: int(C.QV_EENCODE), Name: "QV_EENCODE",
		Message: fmt.Sprintf("quiver has no value for a Go %T", x)}
}

func setEntry(m *Value, key, value any) error {
	k, err := ToValue(key)
	if err != nil {
		return err
	}
	v, err := ToValue(value)
	if err != nil {
		k.Free()
		return err
	}
	return m.Set(k, v)
}

func bigValue(negative bool, magnitude []byte) (*Value, error) {
	neg := C.int(0)
	if negative {
		neg = 1
	}
	m := C.CBytes(magnitude)
	defer C.free(m)
	return newValue(func(o **C.qv_value) C.qv_status {
		return C.qv_value_new_bigint(o, neg, m, C.size_t(len(magnitude)))
	})
}

// assign stores the Go value src (as Go returns it) into dst, converting
// between Go types where nothing is lost; anything else is an error.
func assign(dst reflect.Value, src any) error {
	t := dst.Type()
	if src == nil {
		switch t.Kind() {
		case reflect.Interface, reflect.Pointer, reflect.Slice, reflect.Map:
			dst.Set(reflect.Zero(t))
			return nil
		}
		return fmt.Errorf("quiver: null for a Go %v", t)
	}
	s := reflect.ValueOf(src)
	if s.Type().AssignableTo(t) {
		dst.Set(s)
		return nil
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if i, ok := src.(int64); ok && !dst.OverflowInt(i) {
			dst.SetInt(i)
			return nil
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		switch u := src.(type) {
		case int64:
			if u >= 0 && !dst.OverflowUint(uint64(u)) {
				dst.SetUint(uint64(u))
				return nil
			}
		case uint64:
			if !dst.OverflowUint(u) {
				dst.SetUint(u)
				return nil
			}
		}
	case reflect.Float32, reflect.Float64:
		if f, ok := src.(float64); ok {
			dst.SetFloat(f)
			return nil
		}
	case reflect.Pointer:
		p := reflect.New(t.Elem())
		if err := assign(p.Elem(), src); err != nil {
			return err
		}
		dst.Set(p)
		return nil
	case reflect.Slice:
		if items, ok := src.([]any); ok {
			out := reflect.MakeSlice(t, len(items), len(items))
			for i, item := range items {
				if err := assign(out.Index(i), item); err != nil {
					return err
				}
			}
			dst.Set(out)
			return nil
		}
	case reflect.Map:
		if m, ok := src.(map[string]any); ok && t.Key().Kind() == reflect.String {
			out := reflect.MakeMapWithSize(t, len(m))
			for k, v := range m {
				x := reflect.New(t.Elem()).Elem()
				if err := assign(x, v); err != nil {
					return err
				}
				out.SetMapIndex(reflect.ValueOf(k).Convert(t.Key()), x)
			}
			dst.Set(out)
			return nil
		}
	}
	return &Error{Status: int(C.QV_ETYPE), Name: "QV_ETYPE", Message: fmt.Sprintf("a %T for a Go %v", src, t)}
}
