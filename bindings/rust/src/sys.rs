//! The raw C ABI: the part of `quiver.h` this crate uses, declared by hand
//! from the header (no bindgen, no crates). Every item is the header's item of
//! the same name and is documented there; the safe layer is the crate root.
#![allow(non_camel_case_types, missing_docs)]

use std::os::raw::{c_char, c_int, c_void};

pub type qv_status = c_int;
pub type qv_type = c_int;

pub const QV_OK: qv_status = 0;
pub const QV_NOTFOUND: qv_status = -1;
pub const QV_EINVAL: qv_status = -2;
pub const QV_EIO: qv_status = -12;
pub const QV_ETYPE: qv_status = -14;
pub const QV_EFAILED: qv_status = -17;

pub const QV_TYPE_NULL: qv_type = 0;
pub const QV_TYPE_BOOL: qv_type = 1;
pub const QV_TYPE_INT: qv_type = 2;
pub const QV_TYPE_FLOAT: qv_type = 4;
pub const QV_TYPE_TEXT: qv_type = 5;
pub const QV_TYPE_BYTES: qv_type = 6;
pub const QV_TYPE_BIGINT: qv_type = 3;
pub const QV_TYPE_LIST: qv_type = 7;
pub const QV_TYPE_MAP: qv_type = 8;
pub const QV_TYPE_TAG: qv_type = 9;

pub const QV_CACHE_OPTIONS_VERSION: u32 = 2;
pub const QV_CACHE_READONLY: u32 = 0x1;

pub const QV_STAT_HITS: c_int = 0;
pub const QV_STAT_MISSES: c_int = 1;
pub const QV_STAT_ENTRIES: c_int = 2;
pub const QV_STAT_REMOTE_HITS: c_int = 11;

pub const QV_STACK_OPTIONS_VERSION: u32 = 1;

pub const QV_FN_STAT_HITS: c_int = 0;
pub const QV_FN_STAT_MISSES: c_int = 1;

#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct qv_digest {
    pub bytes: [u8; 16],
}

/// The version-2 layout (timeout and secret for the remote tier); the C side
/// copies as many fields as `version` says, so a version-1 caller still works.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct qv_cache_options {
    pub version: u32,
    pub durability: u32,
    pub flags: u32,
    pub inline_limit: u32,
    pub max_bytes: u64,
    pub map_size: u64,
    pub timeout_ms: u32,
    pub reserved: u32,
    pub secret: *const c_void,
    pub secret_len: usize,
}

impl Default for qv_cache_options {
    fn default() -> Self {
        qv_cache_options {
            version: 0,
            durability: 0,
            flags: 0,
            inline_limit: 0,
            max_bytes: 0,
            map_size: 0,
            timeout_ms: 0,
            reserved: 0,
            secret: std::ptr::null(),
            secret_len: 0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct qv_stack_options {
    pub version: u32,
    pub flags: u32,
    pub queue_limit: u32,
    pub reserved: u32,
}

#[repr(C)]
pub struct qv_value {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct qv_cache {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct qv_fn {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct qv_iter {
    _opaque: [u8; 0],
}

pub type qv_fn_callback = unsafe extern "C" fn(
    result: *mut *mut qv_value,
    args: *const qv_value,
    kwargs: *const qv_value,
    userdata: *mut c_void,
) -> qv_status;

extern "C" {
    pub fn qv_version() -> *const c_char;
    pub fn qv_status_name(status: qv_status) -> *const c_char;
    pub fn qv_errmsg() -> *const c_char;
    pub fn qv_free(p: *mut c_void);

    pub fn qv_digest_hex(d: *const qv_digest, out: *mut c_char);
    pub fn qv_digest_parse(out: *mut qv_digest, hex: *const c_char, len: usize) -> qv_status;

    pub fn qv_value_new_null(out: *mut *mut qv_value) -> qv_status;
    pub fn qv_value_new_bool(out: *mut *mut qv_value, b: c_int) -> qv_status;
    pub fn qv_value_new_int(out: *mut *mut qv_value, i: i64) -> qv_status;
    pub fn qv_value_new_uint(out: *mut *mut qv_value, u: u64) -> qv_status;
    pub fn qv_value_new_negint(out: *mut *mut qv_value, n: u64) -> qv_status;
    pub fn qv_value_new_bigint(
        out: *mut *mut qv_value,
        negative: c_int,
        magnitude: *const c_void,
        len: usize,
    ) -> qv_status;
    pub fn qv_value_new_tag(out: *mut *mut qv_value, tag: u64, content: *mut qv_value) -> qv_status;
    pub fn qv_value_get_cbor_int(v: *const qv_value, negative: *mut c_int, n: *mut u64) -> qv_status;
    pub fn qv_value_get_bigint(
        v: *const qv_value,
        negative: *mut c_int,
        magnitude: *mut *const u8,
        len: *mut usize,
    ) -> qv_status;
    pub fn qv_value_get_tag(v: *const qv_value, tag: *mut u64, content: *mut *const qv_value) -> qv_status;
    pub fn qv_value_map_key(map: *const qv_value, i: usize) -> *const qv_value;
    pub fn qv_value_map_value(map: *const qv_value, i: usize) -> *const qv_value;
    pub fn qv_value_digest(v: *const qv_value, out: *mut qv_digest) -> qv_status;
    pub fn qv_value_new_float(out: *mut *mut qv_value, d: f64) -> qv_status;
    pub fn qv_value_new_text(out: *mut *mut qv_value, s: *const c_char, len: usize) -> qv_status;
    pub fn qv_value_new_bytes(out: *mut *mut qv_value, data: *const c_void, len: usize) -> qv_status;
    pub fn qv_value_new_list(out: *mut *mut qv_value) -> qv_status;
    pub fn qv_value_new_map(out: *mut *mut qv_value) -> qv_status;
    pub fn qv_value_free(v: *mut qv_value);
    pub fn qv_value_list_append(list: *mut qv_value, item: *mut qv_value) -> qv_status;
    pub fn qv_value_map_set(map: *mut qv_value, key: *mut qv_value, value: *mut qv_value) -> qv_status;
    pub fn qv_value_type(v: *const qv_value) -> qv_type;
    pub fn qv_value_get_bool(v: *const qv_value, out: *mut c_int) -> qv_status;
    pub fn qv_value_get_int(v: *const qv_value, out: *mut i64) -> qv_status;
    pub fn qv_value_get_float(v: *const qv_value, out: *mut f64) -> qv_status;
    pub fn qv_value_get_text(v: *const qv_value, s: *mut *const c_char, len: *mut usize) -> qv_status;
    pub fn qv_value_get_bytes(v: *const qv_value, data: *mut *const u8, len: *mut usize) -> qv_status;
    pub fn qv_value_count(v: *const qv_value) -> usize;
    pub fn qv_value_list_get(list: *const qv_value, i: usize) -> *const qv_value;
    pub fn qv_value_map_find(map: *const qv_value, key: *const c_char) -> *const qv_value;
    pub fn qv_value_encode(v: *const qv_value, data: *mut *mut c_void, len: *mut usize) -> qv_status;
    pub fn qv_value_decode(out: *mut *mut qv_value, data: *const c_void, len: usize) -> qv_status;

    pub fn qv_call_digest(
        out: *mut qv_digest,
        name: *const c_char,
        version: *const c_char,
        args: *const qv_value,
        kwargs: *const qv_value,
    ) -> qv_status;

    pub fn qv_cache_options_init(opts: *mut qv_cache_options, version: u32) -> qv_status;
    pub fn qv_cache_open(out: *mut *mut qv_cache, path: *const c_char, opts: *const qv_cache_options) -> qv_status;
    pub fn qv_cache_open_memory(out: *mut *mut qv_cache) -> qv_status;
    pub fn qv_cache_close(cache: *mut qv_cache);
    pub fn qv_cache_query(out: *mut *mut qv_iter, cache: *mut qv_cache, name: *const c_char) -> qv_status;
    pub fn qv_iter_next(iter: *mut qv_iter, key: *mut qv_digest) -> qv_status;
    pub fn qv_iter_count(iter: *const qv_iter) -> usize;
    pub fn qv_iter_free(iter: *mut qv_iter);
    pub fn qv_stack_options_init(opts: *mut qv_stack_options, version: u32) -> qv_status;
    pub fn qv_cache_stack(
        out: *mut *mut qv_cache,
        local: *mut qv_cache,
        remote: *mut qv_cache,
        opts: *const qv_stack_options,
    ) -> qv_status;
    pub fn qv_cache_path(cache: *const qv_cache) -> *const c_char;
    pub fn qv_cache_contains(cache: *mut qv_cache, key: *const qv_digest) -> qv_status;
    pub fn qv_cache_get_value(cache: *mut qv_cache, key: *const qv_digest, out: *mut *mut qv_value) -> qv_status;
    pub fn qv_cache_load(cache: *mut qv_cache, key: *const qv_digest, record: *mut *mut qv_value) -> qv_status;
    pub fn qv_cache_stat(cache: *mut qv_cache, which: c_int, out: *mut u64) -> qv_status;

    pub fn qv_ctx_push(cache: *mut qv_cache, meta: *const qv_value) -> qv_status;
    pub fn qv_ctx_pop() -> qv_status;

    pub fn qv_fn_new(
        out: *mut *mut qv_fn,
        name: *const c_char,
        version: *const c_char,
        body: qv_fn_callback,
        userdata: *mut c_void,
        destroy: Option<unsafe extern "C" fn(userdata: *mut c_void)>,
    ) -> qv_status;
    pub fn qv_fn_new_c(
        out: *mut *mut qv_fn,
        name: *const c_char,
        version: *const c_char,
        f: unsafe extern "C" fn(),
        signature: *const c_char,
    ) -> qv_status;
    pub fn qv_fn_free(f: *mut qv_fn);
    pub fn qv_fn_call(f: *mut qv_fn, args: *const qv_value, result: *mut *mut qv_value) -> qv_status;
    pub fn qv_fn_digest(
        out: *mut qv_digest,
        f: *const qv_fn,
        args: *const qv_value,
        kwargs: *const qv_value,
    ) -> qv_status;
    pub fn qv_fn_pointer(f: *mut qv_fn) -> *mut c_void;
    pub fn qv_fn_stat(f: *const qv_fn, which: c_int, out: *mut u64) -> qv_status;
}
