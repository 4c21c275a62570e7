//! Rust bindings for quiver: memoized function calls stored in a cache that
//! every language shares (C, Python, Lua, Go, Rust), over quiver's C ABI with
//! no crates.
//!
//! - [`Cache`]: an LMDB directory ([`Cache::open`]), a process-private memory
//!   cache ([`Cache::memory`]), a Redis remote tier (a `redis://` URL) or a
//!   stack of two ([`Cache::stack`]); [`Cache::contains`], [`Cache::load`],
//!   [`Cache::query`].
//! - [`memo`] / [`Memo`]: a memoized Rust closure over Rust types, keyed
//!   exactly as Python's `@quiver.memo` and Lua's `quiver.memo` key a call of
//!   the same name, version and arguments: a call stored by one is a hit for
//!   the others.
//! - [`Native`]: a memoized `extern "C" fn` whose memoized pointer has the
//!   very type of the original; [`Function`]: a closure over quiver values.
//! - [`Val`]: a quiver value as a Rust enum; [`Value`]: the C tree itself.
//! - [`Error`]: the status, its name and the library's `qv_errmsg()`.
//!
//! ```no_run
//! let cache = quiver::Cache::open("work/cache")?;
//! let _active = cache.activate()?; // this thread's calls go to `cache`
//! let add = quiver::memo("shared.add", None, |(x, y): (i64, i64)| x + y)?;
//! assert_eq!(add.call((1, 2))?, 3); // runs and stores; Python's add(1, 2) now hits
//! assert_eq!(add.call((1, 2))?, 3); // a hit
//! # Ok::<(), quiver::Error>(())
//! ```
//!
//! ```no_run
//! extern "C" fn pow(x: f64, n: i64) -> f64 { x.powi(n as i32) }
//!
//! let cache = quiver::Cache::open("work/cache")?;
//! let _active = cache.activate()?; // this thread's calls go to `cache`
//! let memo = quiver::Native::new("demo.pow", Some("1"), pow as extern "C" fn(f64, i64) -> f64)?;
//! let pow = unsafe { memo.pointer() }; // same type as `pow`, memoized
//! assert_eq!(pow(1.5, 2), 2.25);
//! # Ok::<(), quiver::Error>(())
//! ```
#![deny(missing_docs)]

mod memo;
pub mod sys;
mod val;

pub use memo::{memo, try_memo, Args, FromVal, Memo, ToVal};
pub use val::Val;

/// The README's example compiles (`cargo test` checks it).
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

use std::ffi::{CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::os::raw::{c_char, c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};

/// A failed quiver call: the status, its symbolic name and the thread's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// The negative `qv_status` (`sys::QV_EINVAL`, ...).
    pub status: sys::qv_status,
    /// Its symbolic name, "QV_EINVAL".
    pub name: String,
    /// What went wrong: `qv_errmsg()` of the failed call, or a body's own message.
    pub message: String,
}

impl Error {
    /// Must be called on the thread that saw `status`, before its next quiver call.
    fn last(status: sys::qv_status) -> Error {
        // SAFETY: both return NUL-terminated strings that stay valid until the
        // next failing call on this thread; they are copied at once.
        let (name, mut message) = unsafe {
            (
                CStr::from_ptr(sys::qv_status_name(status)).to_string_lossy().into_owned(),
                CStr::from_ptr(sys::qv_errmsg()).to_string_lossy().into_owned(),
            )
        };
        if status == sys::QV_NOTFOUND {
            message = "no such entry".into(); // an answer, for which quiver sets no message
        }
        Error { status, name, message }
    }

    /// What a host body returns to fail its call (which is then not stored).
    pub fn failed(message: impl Into<String>) -> Error {
        Error { status: sys::QV_EFAILED, name: "QV_EFAILED".into(), message: message.into() }
    }

    /// An error raised on the Rust side (a bad argument that never reached C).
    pub(crate) fn invalid(message: impl Into<String>) -> Error {
        Error { status: sys::QV_EINVAL, name: "QV_EINVAL".into(), message: message.into() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

impl std::error::Error for Error {}

/// `std::result::Result` with quiver's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn check(status: sys::qv_status) -> Result<()> {
    if status == sys::QV_OK {
        Ok(())
    } else {
        Err(Error::last(status))
    }
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid(format!("{s:?} contains a NUL byte")))
}

fn optional_cstring(s: Option<&str>) -> Result<Option<CString>> {
    s.map(cstring).transpose()
}

fn as_ptr_or_null(s: &Option<CString>) -> *const c_char {
    s.as_ref().map_or(ptr::null(), |s| s.as_ptr())
}

fn path_cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("{} contains a NUL byte", path.display())))
}

/// The library's version, "MAJOR.MINOR.PATCH".
pub fn version() -> &'static str {
    // SAFETY: static storage, ASCII.
    unsafe { CStr::from_ptr(sys::qv_version()) }.to_str().unwrap_or("?")
}

/// A call or value digest (16 bytes, XXH3-128, big-endian).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Digest(pub sys::qv_digest);

impl Digest {
    /// Read 32 hex characters.
    pub fn parse(hex: &str) -> Result<Digest> {
        let mut d = sys::qv_digest::default();
        // SAFETY: the length is passed; no NUL needed.
        check(unsafe { sys::qv_digest_parse(&mut d, hex.as_ptr().cast(), hex.len()) })?;
        Ok(Digest(d))
    }

    /// The digest as 32 lowercase hex characters.
    pub fn hex(&self) -> String {
        let mut out = [0 as c_char; 33];
        // SAFETY: out has the 33 bytes the function writes.
        unsafe { sys::qv_digest_hex(&self.0, out.as_mut_ptr()) };
        // SAFETY: NUL-terminated lowercase hex.
        unsafe { CStr::from_ptr(out.as_ptr()) }.to_string_lossy().into_owned()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// The call digest of `name`/`version` over positional `args` (a list) and
/// `kwargs` (a map; `None` for the empty map), as every language computes it.
pub fn call_digest(name: &str, version: Option<&str>, args: &Value, kwargs: Option<&Value>) -> Result<Digest> {
    let name = cstring(name)?;
    let version = optional_cstring(version)?;
    let mut d = sys::qv_digest::default();
    let kwargs = kwargs.map_or(ptr::null(), |k| k.ptr.as_ptr() as *const _);
    // SAFETY: all pointers are valid for the call.
    check(unsafe { sys::qv_call_digest(&mut d, name.as_ptr(), as_ptr_or_null(&version), args.ptr.as_ptr(), kwargs) })?;
    Ok(Digest(d))
}

/// An owned value tree (`qv_value`), freed on drop.
pub struct Value {
    ptr: NonNull<sys::qv_value>,
}

// SAFETY: a qv_value has no thread affinity; &Value only reads.
unsafe impl Send for Value {}
unsafe impl Sync for Value {}

impl Drop for Value {
    fn drop(&mut self) {
        // SAFETY: we own the tree.
        unsafe { sys::qv_value_free(self.ptr.as_ptr()) }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.view().fmt(f)
    }
}

pub(crate) fn new_value(make: impl FnOnce(*mut *mut sys::qv_value) -> sys::qv_status) -> Result<Value> {
    let mut out = ptr::null_mut();
    check(make(&mut out))?;
    Ok(Value { ptr: NonNull::new(out).expect("quiver returned QV_OK and no value") })
}

impl Value {
    /// Null (Python's `None`, Lua's `quiver.null`).
    pub fn null() -> Result<Value> {
        new_value(|out| unsafe { sys::qv_value_new_null(out) })
    }
    /// A boolean.
    pub fn bool(b: bool) -> Result<Value> {
        new_value(|out| unsafe { sys::qv_value_new_bool(out, b as c_int) })
    }
    /// An integer (all of -2^64 .. 2^64-1 and beyond through [`Val`]).
    pub fn int(i: i64) -> Result<Value> {
        new_value(|out| unsafe { sys::qv_value_new_int(out, i) })
    }
    /// A float, always stored as a float (1.0 is not the integer 1).
    pub fn float(d: f64) -> Result<Value> {
        new_value(|out| unsafe { sys::qv_value_new_float(out, d) })
    }
    /// Text (UTF-8).
    pub fn text(s: &str) -> Result<Value> {
        new_value(|out| unsafe { sys::qv_value_new_text(out, s.as_ptr().cast(), s.len()) })
    }
    /// A byte string.
    pub fn bytes(b: &[u8]) -> Result<Value> {
        new_value(|out| unsafe { sys::qv_value_new_bytes(out, b.as_ptr().cast(), b.len()) })
    }
    /// A list that takes the items.
    pub fn list(items: impl IntoIterator<Item = Value>) -> Result<Value> {
        let list = new_value(|out| unsafe { sys::qv_value_new_list(out) })?;
        for item in items {
            // SAFETY: the list takes the item, also when appending fails.
            check(unsafe { sys::qv_value_list_append(list.ptr.as_ptr(), item.into_raw()) })?;
        }
        Ok(list)
    }
    /// A map that takes the entries; a key given twice is refused.
    pub fn map(entries: impl IntoIterator<Item = (Value, Value)>) -> Result<Value> {
        let map = new_value(|out| unsafe { sys::qv_value_new_map(out) })?;
        for (k, v) in entries {
            // SAFETY: the map takes key and value, also when it fails.
            check(unsafe { sys::qv_value_map_set(map.ptr.as_ptr(), k.into_raw(), v.into_raw()) })?;
        }
        Ok(map)
    }

    /// Decode one canonical CBOR item; anything non-canonical is refused.
    pub fn decode(data: &[u8]) -> Result<Value> {
        new_value(|out| unsafe { sys::qv_value_decode(out, data.as_ptr().cast(), data.len()) })
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut data = ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: on success data holds len bytes that we copy and free.
        unsafe {
            check(sys::qv_value_encode(self.ptr.as_ptr(), &mut data, &mut len))?;
            let out = std::slice::from_raw_parts(data as *const u8, len).to_vec();
            sys::qv_free(data);
            Ok(out)
        }
    }

    /// A borrowed view for reading.
    pub fn view(&self) -> ValueRef<'_> {
        ValueRef { ptr: self.ptr, _owner: PhantomData }
    }

    /// The digest of the value's canonical encoding.
    pub fn digest(&self) -> Result<Digest> {
        let mut d = sys::qv_digest::default();
        check(unsafe { sys::qv_value_digest(self.ptr.as_ptr(), &mut d) })?;
        Ok(Digest(d))
    }

    /// The value as a Rust enum (a deep copy).
    pub fn to_val(&self) -> Result<Val> {
        self.view().to_val()
    }

    pub(crate) fn into_raw(self) -> *mut sys::qv_value {
        let p = self.ptr.as_ptr();
        std::mem::forget(self);
        p
    }

    /// # Safety
    /// `p` must be an owned, non-NULL qv_value nobody else frees.
    pub(crate) unsafe fn from_raw(p: *mut sys::qv_value) -> Value {
        Value { ptr: NonNull::new(p).expect("quiver returned QV_OK and no value") }
    }
}

/// A value borrowed from a tree that outlives `'a`.
#[derive(Clone, Copy)]
pub struct ValueRef<'a> {
    ptr: NonNull<sys::qv_value>,
    _owner: PhantomData<&'a sys::qv_value>,
}

impl<'a> ValueRef<'a> {
    /// # Safety
    /// `p` must be valid and unmodified for `'a`.
    pub(crate) unsafe fn borrow(p: *const sys::qv_value) -> Option<ValueRef<'a>> {
        NonNull::new(p as *mut _).map(|ptr| ValueRef { ptr, _owner: PhantomData })
    }

    pub(crate) fn raw(&self) -> *const sys::qv_value {
        self.ptr.as_ptr()
    }

    /// Whether the value is null.
    pub fn is_null(&self) -> bool {
        unsafe { sys::qv_value_type(self.raw()) == sys::QV_TYPE_NULL }
    }
    /// A boolean, else `QV_ETYPE`.
    pub fn as_bool(&self) -> Result<bool> {
        let mut b = 0;
        check(unsafe { sys::qv_value_get_bool(self.raw(), &mut b) })?;
        Ok(b != 0)
    }
    /// An integer that fits `i64`, else `QV_ETYPE` or `QV_ERANGE`.
    pub fn as_int(&self) -> Result<i64> {
        let mut i = 0;
        check(unsafe { sys::qv_value_get_int(self.raw(), &mut i) })?;
        Ok(i)
    }
    /// A float, else `QV_ETYPE`.
    pub fn as_float(&self) -> Result<f64> {
        let mut d = 0.0;
        check(unsafe { sys::qv_value_get_float(self.raw(), &mut d) })?;
        Ok(d)
    }
    /// Text, borrowed from the tree, else `QV_ETYPE`.
    pub fn as_text(&self) -> Result<&'a str> {
        let (mut s, mut len) = (ptr::null(), 0usize);
        check(unsafe { sys::qv_value_get_text(self.raw(), &mut s, &mut len) })?;
        // SAFETY: quiver keeps text valid UTF-8, borrowed while the tree lives.
        Ok(unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(s.cast(), len)) })
    }
    /// A byte string, borrowed from the tree, else `QV_ETYPE`.
    pub fn as_bytes(&self) -> Result<&'a [u8]> {
        let (mut d, mut len) = (ptr::null(), 0usize);
        check(unsafe { sys::qv_value_get_bytes(self.raw(), &mut d, &mut len) })?;
        Ok(if len == 0 { &[] } else { unsafe { std::slice::from_raw_parts(d, len) } })
    }
    /// Items of a list, entries of a map, 0 otherwise.
    pub fn len(&self) -> usize {
        unsafe { sys::qv_value_count(self.raw()) }
    }
    /// Whether `len()` is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The i-th item of a list.
    pub fn get(&self, i: usize) -> Option<ValueRef<'a>> {
        unsafe { ValueRef::borrow(sys::qv_value_list_get(self.raw(), i)) }
    }
    /// The value of a map under a text key.
    pub fn find(&self, key: &str) -> Option<ValueRef<'a>> {
        let key = CString::new(key).ok()?;
        unsafe { ValueRef::borrow(sys::qv_value_map_find(self.raw(), key.as_ptr())) }
    }
}

impl fmt::Debug for ValueRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match unsafe { sys::qv_value_type(self.raw()) } {
            sys::QV_TYPE_NULL => f.write_str("null"),
            sys::QV_TYPE_BOOL => write!(f, "{:?}", self.as_bool().unwrap_or_default()),
            sys::QV_TYPE_INT => match self.as_int() {
                Ok(i) => write!(f, "{i}"),
                Err(_) => f.write_str("<int beyond i64>"),
            },
            sys::QV_TYPE_FLOAT => write!(f, "{:?}", self.as_float().unwrap_or(f64::NAN)),
            sys::QV_TYPE_TEXT => write!(f, "{:?}", self.as_text().unwrap_or_default()),
            sys::QV_TYPE_BYTES => write!(f, "b{:?}", self.as_bytes().unwrap_or_default()),
            sys::QV_TYPE_LIST => f.debug_list().entries((0..self.len()).filter_map(|i| self.get(i))).finish(),
            t => write!(f, "<quiver value of type {t}>"),
        }
    }
}

/// A cache handle: an LMDB directory (or ":memory:"), a remote tier or a stack. Shared by any number of threads.
pub struct Cache {
    ptr: NonNull<sys::qv_cache>,
}

// SAFETY: quiver.h: "A qv_cache may be shared by any number of threads."
unsafe impl Send for Cache {}
unsafe impl Sync for Cache {}

impl Drop for Cache {
    fn drop(&mut self) {
        // SAFETY: our handle; contexts that still use the cache keep it alive.
        unsafe { sys::qv_cache_close(self.ptr.as_ptr()) }
    }
}

impl Cache {
    /// Open (creating it when missing) the LMDB cache in directory `path`, or
    /// the remote tier a `redis://` or `unix://` URL names.
    pub fn open(path: impl AsRef<Path>) -> Result<Cache> {
        Cache::open_with(path.as_ref(), 0)
    }

    /// Open an existing cache for reading only: stores are refused.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Cache> {
        Cache::open_with(path.as_ref(), sys::QV_CACHE_READONLY)
    }

    fn open_with(path: &Path, flags: u32) -> Result<Cache> {
        let cpath = path_cstring(path)?;
        let mut opts = sys::qv_cache_options::default();
        // SAFETY: opts is the version-2 layout declared in sys.
        check(unsafe { sys::qv_cache_options_init(&mut opts, sys::QV_CACHE_OPTIONS_VERSION) })?;
        opts.flags = flags;
        let mut out = ptr::null_mut();
        check(unsafe { sys::qv_cache_open(&mut out, cpath.as_ptr(), &opts) })?;
        Ok(Cache { ptr: NonNull::new(out).expect("quiver returned QV_OK and no cache") })
    }

    /// A cache over two: reads try `local`, then `remote`, and copy remote
    /// hits into `local`; stores go to both. The stack holds its own
    /// references: the two handles may be dropped before or after it.
    pub fn stack(local: &Cache, remote: &Cache) -> Result<Cache> {
        let mut opts = sys::qv_stack_options::default();
        check(unsafe { sys::qv_stack_options_init(&mut opts, sys::QV_STACK_OPTIONS_VERSION) })?;
        let mut out = ptr::null_mut();
        check(unsafe { sys::qv_cache_stack(&mut out, local.raw(), remote.raw(), &opts) })?;
        Ok(Cache { ptr: NonNull::new(out).expect("quiver returned QV_OK and no stack") })
    }

    /// A new process-private memory cache: nothing is shared with another
    /// process, and it is gone when the last handle is.
    pub fn memory() -> Result<Cache> {
        let mut out = ptr::null_mut();
        check(unsafe { sys::qv_cache_open_memory(&mut out) })?;
        Ok(Cache { ptr: NonNull::new(out).expect("quiver returned QV_OK and no cache") })
    }

    /// The keys of the calls stored under `name` (an index lookup), or of every
    /// call when `name` is `None`: a snapshot taken now. [`Cache::load`] reads each.
    pub fn query(&self, name: Option<&str>) -> Result<Vec<Digest>> {
        let name = optional_cstring(name)?;
        let mut it = ptr::null_mut();
        check(unsafe { sys::qv_cache_query(&mut it, self.raw(), as_ptr_or_null(&name)) })?;
        struct Iter(*mut sys::qv_iter);
        impl Drop for Iter {
            fn drop(&mut self) {
                unsafe { sys::qv_iter_free(self.0) }
            }
        }
        let it = Iter(it);
        let mut keys = Vec::with_capacity(unsafe { sys::qv_iter_count(it.0) });
        loop {
            let mut d = sys::qv_digest::default();
            match unsafe { sys::qv_iter_next(it.0, &mut d) } {
                sys::QV_NOTFOUND => return Ok(keys),
                st => check(st)?,
            }
            keys.push(Digest(d));
        }
    }

    fn raw(&self) -> *mut sys::qv_cache {
        self.ptr.as_ptr()
    }

    /// The absolute directory of the cache (a remote tier: its URL).
    pub fn path(&self) -> PathBuf {
        // SAFETY: valid while the cache lives; copied at once.
        let p = unsafe { CStr::from_ptr(sys::qv_cache_path(self.raw())) };
        PathBuf::from(std::ffi::OsStr::from_bytes(p.to_bytes()))
    }

    /// Whether a call is stored (a stack asks its remote tier too).
    pub fn contains(&self, key: &Digest) -> Result<bool> {
        match unsafe { sys::qv_cache_contains(self.raw(), &key.0) } {
            sys::QV_NOTFOUND => Ok(false),
            st => check(st).map(|()| true),
        }
    }

    /// The stored result of a call, or `None` on a miss.
    pub fn get(&self, key: &Digest) -> Result<Option<Value>> {
        let mut out = ptr::null_mut();
        match unsafe { sys::qv_cache_get_value(self.raw(), &key.0, &mut out) } {
            sys::QV_NOTFOUND => Ok(None),
            st => check(st).map(|()| Some(unsafe { Value::from_raw(out) })),
        }
    }

    /// The whole call record: a map with "name", "version", "args", "kwargs",
    /// "result", "start_ns", "duration_ns", "lang" and "meta".
    pub fn load(&self, key: &Digest) -> Result<Value> {
        new_value(|out| unsafe { sys::qv_cache_load(self.raw(), &key.0, out) })
    }

    fn stat(&self, which: c_int) -> Result<u64> {
        let mut n = 0;
        check(unsafe { sys::qv_cache_stat(self.raw(), which, &mut n) })?;
        Ok(n)
    }
    /// Lookups through this handle that found a result.
    pub fn hits(&self) -> Result<u64> {
        self.stat(sys::QV_STAT_HITS)
    }
    /// Lookups through this handle that did not.
    pub fn misses(&self) -> Result<u64> {
        self.stat(sys::QV_STAT_MISSES)
    }
    /// Hits of this stack that its remote tier served.
    pub fn remote_hits(&self) -> Result<u64> {
        self.stat(sys::QV_STAT_REMOTE_HITS)
    }
    /// Calls stored in the cache (by anyone).
    pub fn entries(&self) -> Result<u64> {
        self.stat(sys::QV_STAT_ENTRIES)
    }

    /// Make this the calling thread's active cache until the guard drops.
    pub fn activate(&self) -> Result<Active<'_>> {
        check(unsafe { sys::qv_ctx_push(self.raw(), ptr::null()) })?;
        Ok(Active { _cache: PhantomData, _thread_bound: PhantomData })
    }
}

/// A pushed context; popping it must happen on the same thread, so it is not `Send`.
pub struct Active<'a> {
    _cache: PhantomData<&'a Cache>,
    _thread_bound: PhantomData<*const ()>,
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        // Cannot fail: this guard pushed on this very thread.
        unsafe { sys::qv_ctx_pop() };
    }
}

/// A memoized function (`qv_fn`). Shared by any number of threads.
pub struct Function {
    ptr: NonNull<sys::qv_fn>,
}

// SAFETY: quiver.h: "Shared by any number of threads."
unsafe impl Send for Function {}
unsafe impl Sync for Function {}

impl Drop for Function {
    fn drop(&mut self) {
        unsafe { sys::qv_fn_free(self.ptr.as_ptr()) }
    }
}

thread_local! {
    /// The error of the last host body that failed on this thread: quiver
    /// passes a body's status on, and its message would otherwise be lost.
    static BODY_ERROR: std::cell::RefCell<Option<Error>> = const { std::cell::RefCell::new(None) };
}

unsafe extern "C" fn host_body<F>(
    result: *mut *mut sys::qv_value,
    args: *const sys::qv_value,
    kwargs: *const sys::qv_value,
    userdata: *mut c_void,
) -> sys::qv_status
where
    F: Fn(ValueRef<'_>, ValueRef<'_>) -> Result<Value> + Send + Sync + 'static,
{
    let body = &*(userdata as *const F);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // A call made without kwargs passes NULL; the body always sees a map.
        let empty;
        let kwargs = match ValueRef::borrow(kwargs) {
            Some(k) => k,
            None => {
                empty = Value::map([])?;
                empty.view()
            }
        };
        let args = ValueRef::borrow(args).ok_or_else(|| Error::invalid("the body got no arguments"))?;
        body(args, kwargs)
    }));
    // A panic must not unwind into C: it fails the call instead.
    let error = match outcome {
        Ok(Ok(v)) => {
            *result = v.into_raw();
            return sys::QV_OK;
        }
        Ok(Err(e)) => e,
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Error::failed(format!("the body panicked: {why}"))
        }
    };
    let status = if error.status < 0 { error.status } else { sys::QV_EFAILED };
    BODY_ERROR.with(|e| *e.borrow_mut() = Some(error));
    status
}

unsafe extern "C" fn drop_body<F>(userdata: *mut c_void) {
    drop(Box::from_raw(userdata as *mut F));
}

impl Function {
    /// A memoized Rust closure over quiver values: `body(args, kwargs)` runs on
    /// a miss; an `Err` or a panic fails the call, which is then not stored.
    pub fn new<F>(name: &str, version: Option<&str>, body: F) -> Result<Function>
    where
        F: Fn(ValueRef<'_>, ValueRef<'_>) -> Result<Value> + Send + Sync + 'static,
    {
        let cname = cstring(name)?;
        let cversion = optional_cstring(version)?;
        let userdata = Box::into_raw(Box::new(body)) as *mut c_void;
        let mut out = ptr::null_mut();
        // SAFETY: quiver runs drop_body exactly once, also when this fails.
        check(unsafe {
            sys::qv_fn_new(
                &mut out,
                cname.as_ptr(),
                as_ptr_or_null(&cversion),
                host_body::<F>,
                userdata,
                Some(drop_body::<F>),
            )
        })?;
        Ok(Function { ptr: NonNull::new(out).expect("quiver returned QV_OK and no fn") })
    }

    /// A C function described by a signature string (`"f64(f64,i64)"`).
    ///
    /// # Safety
    /// `f` must really have the C signature `signature` describes.
    pub unsafe fn with_signature(
        name: &str,
        version: Option<&str>,
        f: unsafe extern "C" fn(),
        signature: &str,
    ) -> Result<Function> {
        let cname = cstring(name)?;
        let cversion = optional_cstring(version)?;
        let csig = cstring(signature)?;
        let mut out = ptr::null_mut();
        check(sys::qv_fn_new_c(&mut out, cname.as_ptr(), as_ptr_or_null(&cversion), f, csig.as_ptr()))?;
        Ok(Function { ptr: NonNull::new(out).expect("quiver returned QV_OK and no fn") })
    }

    fn raw(&self) -> *mut sys::qv_fn {
        self.ptr.as_ptr()
    }

    /// Call with positional `args` (a list): a hit from the active cache, or
    /// the body, whose result is stored.
    pub fn call(&self, args: &Value) -> Result<Value> {
        BODY_ERROR.with(|e| e.borrow_mut().take());
        new_value(|out| unsafe { sys::qv_fn_call(self.raw(), args.ptr.as_ptr(), out) })
            .map_err(|e| BODY_ERROR.with(|b| b.borrow_mut().take()).unwrap_or(e))
    }

    /// The call digest for these positional arguments.
    pub fn digest(&self, args: &Value) -> Result<Digest> {
        let mut d = sys::qv_digest::default();
        check(unsafe { sys::qv_fn_digest(&mut d, self.raw(), args.ptr.as_ptr(), ptr::null()) })?;
        Ok(Digest(d))
    }

    fn stat(&self, which: c_int) -> Result<u64> {
        let mut n = 0;
        check(unsafe { sys::qv_fn_stat(self.raw(), which, &mut n) })?;
        Ok(n)
    }
    /// Calls answered from a cache.
    pub fn hits(&self) -> Result<u64> {
        self.stat(sys::QV_FN_STAT_HITS)
    }
    /// Calls that ran the body.
    pub fn misses(&self) -> Result<u64> {
        self.stat(sys::QV_FN_STAT_MISSES)
    }
}

/// A C type of quiver's signature grammar.
///
/// # Safety
/// `NAME` must be the grammar's name for exactly this C type.
pub unsafe trait CType {
    /// The type's name in a signature string: "i64", "str", ...
    const NAME: &'static str;
}

/// A C return type: a `CType`, or `()` for void.
///
/// # Safety
/// As for `CType`.
pub unsafe trait CReturn {
    /// The type's name in a signature string, "void" for `()`.
    const NAME: &'static str;
}

macro_rules! c_types {
    ($($t:ty => $name:literal),* $(,)?) => {$(
        unsafe impl CType for $t { const NAME: &'static str = $name; }
        unsafe impl CReturn for $t { const NAME: &'static str = $name; }
    )*};
}

c_types! {
    i8 => "i8", i16 => "i16", i32 => "i32", i64 => "i64",
    u8 => "u8", u16 => "u16", u32 => "u32", u64 => "u64",
    f32 => "f32", f64 => "f64", bool => "bool",
    *const c_char => "str",
}

unsafe impl CReturn for () {
    const NAME: &'static str = "void";
}

/// An `extern "C" fn` type whose quiver signature follows from its Rust type.
///
/// # Safety
/// `signature()` must describe `Self` exactly.
pub unsafe trait CFunction: Copy {
    /// The signature string, "f64(f64,i64)".
    fn signature() -> String;
    /// The pointer as quiver takes it.
    fn erase(self) -> unsafe extern "C" fn();
    /// The typed pointer back from quiver's memoized one.
    ///
    /// # Safety
    /// `p` must be a function of type `Self`.
    unsafe fn from_pointer(p: *mut c_void) -> Self;
}

macro_rules! c_functions {
    ($(($($arg:ident),*)),* $(,)?) => {$(
        unsafe impl<R: CReturn, $($arg: CType),*> CFunction for extern "C" fn($($arg),*) -> R {
            fn signature() -> String {
                let args: &[&str] = &[$($arg::NAME),*];
                format!("{}({})", R::NAME, args.join(","))
            }
            fn erase(self) -> unsafe extern "C" fn() {
                // SAFETY: function pointers all have one size; quiver casts it back.
                unsafe { std::mem::transmute::<*const (), unsafe extern "C" fn()>(self as *const ()) }
            }
            unsafe fn from_pointer(p: *mut c_void) -> Self {
                std::mem::transmute_copy::<*mut c_void, Self>(&p)
            }
        }
    )*};
}

c_functions!((), (A), (A, B), (A, B, C), (A, B, C, D), (A, B, C, D, E), (A, B, C, D, E, G));

/// A native Rust `extern "C" fn` memoized through libffi: `pointer()` has the
/// very type of the original, so callers swap it in and change nothing else.
pub struct Native<F: CFunction> {
    func: Function,
    memoized: F,
}

impl<F: CFunction> Native<F> {
    /// Memoize `f` under `name` and `version` (`None`: no version).
    pub fn new(name: &str, version: Option<&str>, f: F) -> Result<Native<F>> {
        // SAFETY: the signature is derived from F itself.
        let func = unsafe { Function::with_signature(name, version, f.erase(), &F::signature())? };
        let p = unsafe { sys::qv_fn_pointer(func.raw()) };
        if p.is_null() {
            return Err(Error::last(sys::QV_EINVAL));
        }
        // SAFETY: quiver's closure has exactly F's signature.
        let memoized = unsafe { F::from_pointer(p) };
        Ok(Native { func, memoized })
    }

    /// The memoized function pointer. It memoizes into the calling thread's
    /// active cache (the default cache when none). Returned `str` results are
    /// owned by quiver until this thread's next call through any quiver pointer.
    ///
    /// # Safety
    /// The pointer must not be called after this `Native` is dropped.
    pub unsafe fn pointer(&self) -> F {
        self.memoized
    }
}

impl<F: CFunction> Deref for Native<F> {
    type Target = Function;
    fn deref(&self) -> &Function {
        &self.func
    }
}
