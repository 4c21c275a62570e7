//! One cache, two languages: Rust stores a call that Python then gets as a hit,
//! and Python stores one that Rust gets as a hit, each keyed by its own
//! binding from its own values.
mod common;

use std::env;
use std::path::PathBuf;
use std::process::Command;

use common::TempDir;
use quiver::{memo, Cache, Val};

/// Python and its PYTHONPATH: QV_PYTHON (ctest sets it, with PYTHONPATH), else
/// the build tree's venv that `QUIVER_BUILD` (build/env.sh) names.
fn python() -> Option<(PathBuf, Option<String>)> {
    if let Some(py) = env::var_os("QV_PYTHON") {
        return Some((PathBuf::from(py), None));
    }
    let build = PathBuf::from(env::var_os("QUIVER_BUILD")?);
    let py = build.join("venv/bin/python");
    let source = env::var("QUIVER_SOURCE").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../..").into());
    let path = format!("{}:{source}/python", build.join("python").display());
    py.exists().then_some((py, Some(path)))
}

const SCRIPT: &str = r#"
import sys, quiver

@quiver.memo(name="xlang.rust_add")
def rust_add(x, y):
    raise AssertionError("Rust stored this call: Python must not run it")

@quiver.memo(name="xlang.scale", version="1")
def scale(x, n, label="x"):
    return {"label": label, "value": x * n, "parts": [x, n, None, b"\x00\xff"]}

with quiver.cache(quiver.Cache.open(sys.argv[1])):
    assert rust_add(2, 3) == 5
    scale(1.5, 4)
print(quiver.call_digest("xlang.scale", "1", [1.5, 4, "x"], {}))
"#;

#[test]
fn python_and_rust_read_each_others_calls() {
    let Some((py, pythonpath)) = python() else {
        println!("skipped: no Python (set QV_PYTHON, or QUIVER_BUILD to a build tree with a venv)");
        return;
    };
    let tmp = TempDir::new("python");
    let cache = Cache::open(tmp.path()).unwrap();
    {
        let _active = cache.activate().unwrap();
        let add = memo("xlang.rust_add", None, |(x, y): (i64, i64)| x + y).unwrap();
        assert_eq!(add.call((2, 3)).unwrap(), 5);
    }

    let mut cmd = Command::new(&py);
    cmd.arg("-c").arg(SCRIPT).arg(tmp.path());
    if let Some(path) = pythonpath {
        cmd.env("PYTHONPATH", path);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("running {}: {e}", py.display()));
    assert!(out.status.success(), "python failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let python_key = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    let _active = cache.activate().unwrap();
    let scale = memo("xlang.scale", Some("1"), |(_x, _n, _label): (f64, i64, String)| -> Val {
        panic!("Python stored this call: Rust must not run it")
    })
    .unwrap();
    let args = (1.5, 4, "x".to_owned());
    assert_eq!(scale.digest(args.clone()).unwrap().hex(), python_key);
    let got = scale.call(args).unwrap();
    let want = Val::Map(vec![
        (Val::Text("label".into()), Val::Text("x".into())),
        (Val::Text("parts".into()), Val::List(vec![Val::Float(1.5), Val::Int(4), Val::Null, Val::Bytes(vec![0, 255])])),
        (Val::Text("value".into()), Val::Float(6.0)),
    ]);
    assert_eq!(got, want);
    assert_eq!((scale.hits().unwrap(), scale.misses().unwrap()), (1, 0));

    let keys = cache.query(Some("xlang.scale")).unwrap();
    assert_eq!(keys.len(), 1);
    let record = cache.load(&keys[0]).unwrap();
    assert_eq!(record.view().find("lang").unwrap().as_text().unwrap(), "python");
    assert_eq!(cache.query(None).unwrap().len(), 2, "Rust's call and Python's");
}
