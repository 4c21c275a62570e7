//! Rust opens quiver's remote tier through the C ABI: a redis:// URL given to
//! qv_cache_open, two "machines" (two local directories stacked over one
//! private redis-server), a call computed on the first and found through
//! Redis by the second.
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use quiver::{Cache, Function, Value};

mod common;
use common::TempDir;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn ping(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut line = String::new();
    s.write_all(b"PING\r\n").is_ok() && BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("+PONG")
}

/// A private redis-server on a free loopback port, without persistence,
/// killed when dropped (also when the test panics).
struct Redis {
    child: Child,
    addr: String,
    _dir: TempDir,
}

impl Redis {
    fn start() -> Redis {
        for _ in 0..5 {
            let dir = TempDir::new("redis");
            let port = free_port();
            let mut child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .args(["--loglevel", "warning"])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server is needed (scripts/setup.sh installs it)");
            let addr = format!("127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken meanwhile: another one
                }
                if ping(&addr) {
                    return Redis { child, addr, _dir: dir };
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start");
    }

    fn url(&self, prefix: &str) -> String {
        format!("redis://{}/0?prefix={prefix}", self.addr)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_machines_share_one_redis() {
    let redis = Redis::start();
    let url = redis.url("rust-two-machines:");
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let cube = Function::new("link.rust.remote.cube", Some("1"), move |args, _kwargs| {
        counted.fetch_add(1, Ordering::SeqCst);
        let n = args.get(0).expect("an argument").as_int()?;
        Value::int(n * n * n)
    })
    .unwrap();
    let call = |cache: &Cache, n: i64| {
        let _active = cache.activate().unwrap();
        cube.call(&Value::list(vec![Value::int(n).unwrap()]).unwrap()).unwrap().view().as_int().unwrap()
    };

    let remote_a = Cache::open(&url).unwrap();
    assert!(remote_a.path().to_string_lossy().starts_with("redis://127.0.0.1:"), "{:?}", remote_a.path());
    let (dir_a, dir_b) = (TempDir::new("machine-a"), TempDir::new("machine-b"));
    let local_a = Cache::open(dir_a.path()).unwrap();
    let a = Cache::stack(&local_a, &remote_a).unwrap();
    assert_eq!(call(&a, 7), 343);
    assert_eq!(call(&a, 7), 343);
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    let key = cube.digest(&Value::list(vec![Value::int(7).unwrap()]).unwrap()).unwrap();
    let remote_b = Cache::open(&url).unwrap(); // machine B's own connection
    assert!(remote_b.contains(&key).unwrap(), "Redis lacks {key}");
    let local_b = Cache::open(dir_b.path()).unwrap();
    assert!(!local_b.contains(&key).unwrap(), "machine B has the call before asking");
    let b = Cache::stack(&local_b, &remote_b).unwrap();
    drop(remote_b); // the stack keeps its own reference
    assert_eq!(call(&b, 7), 343);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "machine B ran the call instead of reading it through Redis");
    assert_eq!(b.remote_hits().unwrap(), 1);
    // The stack copies a remote hit into local on a thread of its own.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !local_b.contains(&key).unwrap() {
        assert!(Instant::now() < deadline, "machine B kept no local copy of the remote hit");
        thread::sleep(Duration::from_millis(10));
    }
    let record = remote_a.load(&key).unwrap();
    assert_eq!(record.view().find("name").unwrap().as_text().unwrap(), "link.rust.remote.cube");
    assert_eq!(record.view().find("result").unwrap().as_int().unwrap(), 343);
}

#[test]
fn a_url_nobody_answers_is_an_error_not_a_directory() {
    let port = free_port();
    let err = match Cache::open(format!("redis://127.0.0.1:{port}/0?timeout_ms=200")) {
        Ok(_) => panic!("opening a Redis nobody runs succeeded"),
        Err(e) => e,
    };
    assert_eq!(err.status, quiver::sys::QV_EIO, "{err}");
    assert!(!Path::new("redis:").exists(), "a URL was taken as a directory");
}
