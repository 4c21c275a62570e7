//! Rust links quiver's C ABI: native `extern "C" fn`s memoized through libffi
//! into a real LMDB cache, a second process that only gets hits, a value a C
//! program stored found by a digest computed here, and the shared vectors.
use std::cell::RefCell;
use std::env;
use std::ffi::{CStr, CString};
use std::fs;
use std::os::raw::c_char;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use quiver::{call_digest, Cache, Digest, Function, Native, Value};

mod common;
use common::TempDir;

fn args(items: Vec<Value>) -> Value {
    Value::list(items).unwrap()
}

// --- native functions, each counting how often its body really runs ---

static POW_RUNS: AtomicUsize = AtomicUsize::new(0);
extern "C" fn pow(x: f64, n: i64) -> f64 {
    POW_RUNS.fetch_add(1, Ordering::SeqCst);
    x.powi(n as i32)
}

static GREET_RUNS: AtomicUsize = AtomicUsize::new(0);
thread_local!(static GREETING: RefCell<CString> = RefCell::new(CString::default()));
/// Returns memory it keeps owning (until its next call on this thread), as
/// quiver's `str` results require.
extern "C" fn greet(name: *const c_char, times: u8) -> *const c_char {
    GREET_RUNS.fetch_add(1, Ordering::SeqCst);
    let name = unsafe { CStr::from_ptr(name) }.to_str().unwrap();
    let text = vec![format!("hello, {name}"); times as usize].join("; ");
    GREETING.with(|g| {
        *g.borrow_mut() = CString::new(text).unwrap();
        g.borrow().as_ptr()
    })
}

fn steps(mut n: u64) -> u32 {
    let mut steps = 0;
    while n > 1 {
        n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
        steps += 1;
    }
    steps
}

static COLLATZ_RUNS: AtomicUsize = AtomicUsize::new(0);
extern "C" fn collatz_steps(n: u64) -> u32 {
    COLLATZ_RUNS.fetch_add(1, Ordering::SeqCst);
    steps(n)
}

/// The second-process test's own function: tests run in parallel threads,
/// and every counter belongs to one test.
static SCALE_RUNS: AtomicUsize = AtomicUsize::new(0);
extern "C" fn scale(x: f64, n: i64) -> f64 {
    SCALE_RUNS.fetch_add(1, Ordering::SeqCst);
    x * n as f64
}

static SHARED_ADD_RUNS: AtomicUsize = AtomicUsize::new(0);
extern "C" fn shared_add(x: i64, y: i64) -> i64 {
    SHARED_ADD_RUNS.fetch_add(1, Ordering::SeqCst);
    x + y
}

static LINK_SHARED_RUNS: AtomicUsize = AtomicUsize::new(0);
extern "C" fn link_shared(_n: i64, _s: *const c_char) -> f64 {
    LINK_SHARED_RUNS.fetch_add(1, Ordering::SeqCst);
    -1.0 // never the stored 42.5: a run would show
}

type PowFn = extern "C" fn(f64, i64) -> f64;
const POW_CALLS: [(f64, i64); 6] = [(1.5, 3), (2.0, 10), (1.5, 3), (0.5, 2), (2.0, 10), (1.5, 3)];

#[test]
fn native_fn_through_its_pointer_runs_once_per_distinct_call() {
    let dir = TempDir::new("pointer");
    let cache = Cache::open(dir.path()).unwrap();
    let _active = cache.activate().unwrap();
    let memo = Native::new("link.rust.pow", Some("1"), pow as PowFn).unwrap();
    let f: PowFn = unsafe { memo.pointer() }; // swapped in for `pow`

    for (x, n) in POW_CALLS {
        assert_eq!(f(x, n), x.powi(n as i32));
    }
    assert_eq!(POW_RUNS.load(Ordering::SeqCst), 3, "three distinct calls");
    assert_eq!((memo.hits().unwrap(), memo.misses().unwrap()), (3, 3));
    assert_eq!(cache.entries().unwrap(), 3);
    assert_eq!((cache.hits().unwrap(), cache.misses().unwrap()), (3, 3), "the handle's own counts");

    // The tree path digests the same call the same way: a hit, no run.
    let a = args(vec![Value::float(1.5).unwrap(), Value::int(3).unwrap()]);
    assert_eq!(memo.call(&a).unwrap().view().as_float().unwrap(), 3.375);
    assert_eq!(POW_RUNS.load(Ordering::SeqCst), 3);
    let d = memo.digest(&a).unwrap();
    assert_eq!(d, call_digest("link.rust.pow", Some("1"), &a, None).unwrap());
    assert!(cache.contains(&d).unwrap());
    let record = cache.load(&d).unwrap();
    let record = record.view();
    assert_eq!(record.find("name").unwrap().as_text().unwrap(), "link.rust.pow");
    assert_eq!(record.find("result").unwrap().as_float().unwrap(), 3.375);
    assert_eq!(record.find("args").unwrap().get(1).unwrap().as_int().unwrap(), 3);
}

#[test]
fn str_results_are_copied_and_survive_the_body_buffer() {
    let dir = TempDir::new("str");
    let cache = Cache::open(dir.path()).unwrap();
    let _active = cache.activate().unwrap();
    type GreetFn = extern "C" fn(*const c_char, u8) -> *const c_char;
    let memo = Native::new("link.rust.greet", None, greet as GreetFn).unwrap();
    assert_eq!(<GreetFn as quiver::CFunction>::signature(), "str(str,u8)");
    let f: GreetFn = unsafe { memo.pointer() };
    let read = |p: *const c_char| unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned();

    assert_eq!(read(f(c"ada".as_ptr(), 2)), "hello, ada; hello, ada");
    assert_eq!(read(f(c"bob".as_ptr(), 1)), "hello, bob");
    // A hit returns the stored text, not whatever greet's buffer holds now.
    assert_eq!(read(f(c"ada".as_ptr(), 2)), "hello, ada; hello, ada");
    assert_eq!(GREET_RUNS.load(Ordering::SeqCst), 2);
}

#[test]
fn host_closure_through_fn_call() {
    let dir = TempDir::new("closure");
    let cache = Cache::open(dir.path()).unwrap();
    let _active = cache.activate().unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let repeat = Function::new("link.rust.repeat", Some("2"), move |args, kwargs| {
        counted.fetch_add(1, Ordering::SeqCst);
        assert!(kwargs.is_empty());
        let word = args.get(0).expect("a word").as_text()?;
        let times = args.get(1).expect("a count").as_int()?;
        if times < 0 {
            return Err(quiver::Error::failed(format!("cannot repeat {times} times")));
        }
        assert_ne!(word, "boom", "the body was asked to panic");
        Value::text(&word.repeat(times as usize))
    })
    .unwrap();

    let call = |word: &str, times: i64| {
        let a = args(vec![Value::text(word).unwrap(), Value::int(times).unwrap()]);
        repeat.call(&a).map(|v| v.view().as_text().unwrap().to_owned())
    };
    assert_eq!(call("ab", 3).unwrap(), "ababab");
    assert_eq!(call("ab", 3).unwrap(), "ababab");
    assert_eq!(call("z", 2).unwrap(), "zz");
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // A failing body reaches the caller and stores nothing: it runs again.
    let err = call("ab", -1).unwrap_err();
    assert_eq!((err.name.as_str(), err.message.as_str()), ("QV_EFAILED", "cannot repeat -1 times"));
    assert!(call("ab", -1).is_err());
    assert_eq!(runs.load(Ordering::SeqCst), 4);
    // So does a panic, which must not unwind through C.
    let err = call("boom", 1).unwrap_err();
    assert!(err.message.contains("the body was asked to panic"), "{err}");
    assert_eq!(runs.load(Ordering::SeqCst), 5);

    // Its type error comes back as quiver's own, with its message.
    let a = args(vec![Value::int(1).unwrap(), Value::int(2).unwrap()]);
    let err = repeat.call(&a).unwrap_err();
    assert_eq!(err.status, quiver::sys::QV_ETYPE, "{err}");
}

#[test]
fn one_pointer_from_many_threads() {
    let dir = TempDir::new("threads");
    let cache = Cache::open(dir.path()).unwrap();
    type StepsFn = extern "C" fn(u64) -> u32;
    let memo = Native::new("link.rust.collatz", Some("1"), collatz_steps as StepsFn).unwrap();
    let f: StepsFn = unsafe { memo.pointer() };
    let want: Vec<u32> = (1..=50u64).map(steps).collect();

    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let _active = cache.activate().unwrap(); // contexts are per thread
                for n in 1..=50u64 {
                    assert_eq!(f(n), want[n as usize - 1]);
                }
            });
        }
    });
    // Threads racing on one key may each run it; every key ran at least once.
    let runs = COLLATZ_RUNS.load(Ordering::SeqCst);
    assert!((50..=200).contains(&runs), "{runs} runs");
    assert_eq!(memo.hits().unwrap() + memo.misses().unwrap(), 200);
    assert_eq!(cache.entries().unwrap(), 50);

    let _active = cache.activate().unwrap();
    for n in 1..=50u64 {
        assert_eq!(f(n), want[n as usize - 1]);
    }
    assert_eq!(COLLATZ_RUNS.load(Ordering::SeqCst), runs, "all hits now");
}

/// Parent: fills a cache, then runs this very test again in a new process
/// (QV_LINK_CHILD set), which must answer every call from the cache.
#[test]
fn second_process_gets_hits() {
    if env::var_os("QV_LINK_CHILD").is_some() {
        // The child: no context pushed, so QUIVER_CACHE names the cache.
        let memo = Native::new("link.rust.scale", Some("1"), scale as PowFn).unwrap();
        let f: PowFn = unsafe { memo.pointer() };
        for (x, n) in POW_CALLS {
            assert_eq!(f(x, n), x * n as f64);
        }
        let runs = SCALE_RUNS.load(Ordering::SeqCst);
        println!("child: hits={} misses={} runs={runs}", memo.hits().unwrap(), memo.misses().unwrap());
        assert_eq!(runs, 0);
        return;
    }

    let dir = TempDir::new("process");
    {
        let cache = Cache::open(dir.path()).unwrap();
        let _active = cache.activate().unwrap();
        let memo = Native::new("link.rust.scale", Some("1"), scale as PowFn).unwrap();
        let f: PowFn = unsafe { memo.pointer() };
        for (x, n) in POW_CALLS {
            f(x, n);
        }
        assert_eq!((memo.misses().unwrap(), SCALE_RUNS.load(Ordering::SeqCst)), (3, 3));
    }
    let out = Command::new(env::current_exe().unwrap())
        .args(["--exact", "second_process_gets_hits", "--nocapture", "--test-threads", "1"])
        .env("QV_LINK_CHILD", "1")
        .env("QUIVER_CACHE", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("child: hits=6 misses=0 runs=0"), "child said:\n{stdout}");
}

/// The cache the C fixture stored into: QV_SHARED_CACHE (ctest), else one
/// this test fills by running the build tree's store_shared (QUIVER_BUILD).
fn shared_cache_dir(tmp: &TempDir) -> Option<PathBuf> {
    if let Some(dir) = env::var_os("QV_SHARED_CACHE") {
        return Some(PathBuf::from(dir));
    }
    let program = PathBuf::from(env::var_os("QUIVER_BUILD")?).join("tests/link/store_shared");
    let status = Command::new(&program).arg(tmp.path()).status().ok()?;
    assert!(status.success(), "{} failed", program.display());
    Some(tmp.path().to_owned())
}

#[test]
fn reads_what_a_c_program_stored() {
    let tmp = TempDir::new("c-stored");
    let Some(dir) = shared_cache_dir(&tmp) else {
        println!("skipped: neither QV_SHARED_CACHE nor QUIVER_BUILD/tests/link/store_shared (see README.md)");
        return;
    };
    let cache = Cache::open_read_only(dir).unwrap();
    let a = args(vec![Value::int(7).unwrap(), Value::text("alpha").unwrap()]);
    let key = call_digest("link.shared", Some("1"), &a, None).unwrap();
    assert!(cache.contains(&key).unwrap(), "no {key} in {}", cache.path().display());
    assert_eq!(cache.get(&key).unwrap().unwrap().view().as_float().unwrap(), 42.5);
    let record = cache.load(&key).unwrap();
    assert_eq!(record.view().find("lang").unwrap().as_text().unwrap(), "c");
    assert_eq!(record.view().find("version").unwrap().as_text().unwrap(), "1");

    // The same call made through a Rust function pointer is a hit: its body never runs.
    let _active = cache.activate().unwrap();
    type SharedFn = extern "C" fn(i64, *const c_char) -> f64;
    let memo = Native::new("link.shared", Some("1"), link_shared as SharedFn).unwrap();
    let f: SharedFn = unsafe { memo.pointer() };
    assert_eq!(f(7, c"alpha".as_ptr()), 42.5);
    assert_eq!(LINK_SHARED_RUNS.load(Ordering::SeqCst), 0);
    assert_eq!(memo.hits().unwrap(), 1);
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex {s:?}");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn digests_match_the_shared_vectors() {
    let dir = env::var_os("QV_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors"));
    let tsv = fs::read_to_string(dir.join("calls.tsv")).unwrap();
    let mut seen = 0;
    for line in tsv.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 5, "{line:?}");
        let version = (f[1] != "\\N").then_some(f[1]);
        let a = Value::decode(&unhex(f[2])).unwrap();
        let kw = Value::decode(&unhex(f[3])).unwrap();
        assert_eq!(a.encode().unwrap(), unhex(f[2]), "re-encoding {line:?}");
        let d = call_digest(f[0], version, &a, Some(&kw)).unwrap();
        assert_eq!(d.hex(), f[4], "{line:?}");
        assert_eq!(Digest::parse(f[4]).unwrap(), d);
        seen += 1;
    }
    assert!(seen >= 7, "only {seen} vectors");

    // The same digests from Rust values rather than decoded bytes.
    let one_two = || args(vec![Value::int(1).unwrap(), Value::int(2).unwrap()]);
    let feature = args(vec![Value::int(7).unwrap(), Value::text("alpha").unwrap()]);
    let m_f = args(vec![
        Value::text("x").unwrap(),
        Value::float(1.5).unwrap(),
        Value::null().unwrap(),
        Value::bool(true).unwrap(),
    ]);
    let m_f_kw =
        Value::map([(Value::text("k").unwrap(), args(vec![Value::int(1).unwrap(), Value::int(2).unwrap()]))]).unwrap();
    let bytes = args(vec![Value::bytes(&[0x00, 0xff]).unwrap()]);
    let ab = Value::map([
        (Value::text("b").unwrap(), Value::int(2).unwrap()),
        (Value::text("a").unwrap(), Value::int(1).unwrap()),
    ])
    .unwrap();
    let hex = |name, version, a: &Value, kw: Option<&Value>| call_digest(name, version, a, kw).unwrap().hex();
    assert_eq!(hex("shared.add", None, &one_two(), None), "d2aec93101298c8daf75589ce9ce1f83");
    assert_eq!(hex("shared.add", Some("1"), &one_two(), None), "dff12a2d48c1bcdf495cb3ea7e70ba6f");
    assert_eq!(hex("demo.feature", Some("1"), &feature, None), "55c8615235dec7e94da4339e6c8a4cef");
    assert_eq!(hex("m.f", None, &m_f, Some(&m_f_kw)), "143f1cd0317219175c4123f8b9eaa647");
    assert_eq!(hex("模块.函数", Some("v2"), &bytes, Some(&ab)), "8c6beb2eba085d8e05ad95246e6bc849");

    // A Rust function memoized through its pointer stores under the digest
    // every other language computes for shared.add(1, 2).
    let tmp = TempDir::new("vectors");
    let cache = Cache::open(tmp.path()).unwrap();
    let _active = cache.activate().unwrap();
    type AddFn = extern "C" fn(i64, i64) -> i64;
    let memo = Native::new("shared.add", None, shared_add as AddFn).unwrap();
    let f: AddFn = unsafe { memo.pointer() };
    assert_eq!(f(1, 2), 3);
    let key = Digest::parse("d2aec93101298c8daf75589ce9ce1f83").unwrap();
    assert!(cache.contains(&key).unwrap());
    assert!(cache.load(&key).unwrap().view().find("version").unwrap().is_null());
    assert_eq!(SHARED_ADD_RUNS.load(Ordering::SeqCst), 1);

    let absent = Digest::parse("dff12a2d48c1bcdf495cb3ea7e70ba6f").unwrap(); // version "1"
    assert!(!cache.contains(&absent).unwrap());
    assert!(cache.get(&absent).unwrap().is_none());
    let err = cache.load(&absent).unwrap_err();
    assert_eq!((err.status, err.message.as_str()), (quiver::sys::QV_NOTFOUND, "no such entry"));
}

#[test]
fn bad_input_gives_clear_errors() {
    let err = unsafe {
        Function::with_signature(
            "link.rust.bad",
            None,
            std::mem::transmute::<PowFn, unsafe extern "C" fn()>(pow as PowFn),
            "f64(f64,,i64)",
        )
    }
    .err()
    .expect("a bad signature is refused");
    assert_eq!(err.name, "QV_EINVAL");
    assert!(err.message.contains("position"), "{err}");

    let tmp = TempDir::new("bad");
    let file = tmp.path().join("not-a-directory");
    fs::write(&file, b"plain file").unwrap();
    let err = Cache::open(&file).err().expect("a plain file is no cache");
    assert!(err.message.contains("not-a-directory"), "{err}");
    assert!(!quiver::version().is_empty());

    assert_eq!(Value::int(1).unwrap().view().as_text().unwrap_err().status, quiver::sys::QV_ETYPE);

    let memo = Native::new("link.rust.pow", Some("1"), pow as PowFn).unwrap();
    let err = memo.call(&args(vec![Value::text("1.5").unwrap(), Value::int(3).unwrap()])).unwrap_err();
    assert_eq!(err.status, quiver::sys::QV_ETYPE);
    assert!(err.message.contains("argument 1 must be"), "{err}");
    let err = memo.call(&args(vec![Value::float(1.5).unwrap()])).unwrap_err();
    assert!(err.message.contains("takes 2 arguments"), "{err}");
    assert!(Digest::parse("not hex").is_err());
    assert!(Value::decode(&[0x18, 0x01]).is_err(), "a non-shortest integer is refused");
    assert!(Cache::open("with\0nul").is_err());
}
