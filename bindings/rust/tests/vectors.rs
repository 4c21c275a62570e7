//! The shared vectors through the safe layer: every value decodes into a
//! `Val`, re-encodes byte for byte and digests as recorded; every call keys
//! the same through `memo` as in every other language.
mod common;

use std::fs;
use std::path::Path;

use common::{unhex, vectors, TempDir};
use quiver::{call_digest, memo, Cache, Val};

fn values_roundtrip(dir: &Path, at_least: usize) {
    let tsv = fs::read_to_string(dir.join("values.tsv")).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut seen = 0;
    for line in tsv.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 3, "{line:?}");
        let bytes = unhex(f[0]);
        let v = Val::decode(&bytes).unwrap_or_else(|e| panic!("vector {:?} refused: {e}", f[2]));
        // Through the enum and back: a Rust value carries everything quiver stores.
        let tree = v.to_value().unwrap();
        assert_eq!(tree.encode().unwrap(), bytes, "vector {:?} re-encodes differently", f[2]);
        assert_eq!(tree.digest().unwrap().hex(), f[1], "vector {:?}", f[2]);
        // (compared encoded: NaN is not equal to itself)
        assert_eq!(tree.to_val().unwrap().encode().unwrap(), bytes, "vector {:?}", f[2]);
        seen += 1;
    }
    assert!(seen >= at_least, "only {seen} vectors in {}", dir.display());
}

#[test]
fn shared_values_roundtrip_through_val() {
    values_roundtrip(&vectors(), 60);
}

#[test]
fn project_values_roundtrip_through_val() {
    // The tags quiver gives meaning to for Python types (docs/FORMAT.md 3.3).
    values_roundtrip(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors"), 30);
}

#[test]
fn invalid_inputs_are_refused_with_a_message() {
    let tsv = fs::read_to_string(vectors().join("invalid.tsv")).unwrap();
    for line in tsv.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let err = Val::decode(&unhex(f[0])).expect_err(f[1]);
        assert!(!err.message.is_empty(), "{:?} refused without a message", f[1]);
    }
}

#[test]
fn memo_keys_every_call_as_the_other_languages_do() {
    let tsv = fs::read_to_string(vectors().join("calls.tsv")).unwrap();
    let tmp = TempDir::new("memo-vectors");
    let cache = Cache::open(tmp.path()).unwrap();
    let _active = cache.activate().unwrap();
    let (mut seen, mut positional) = (0, 0);
    for line in tsv.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 5, "{line:?}");
        let version = (f[1] != "\\N").then_some(f[1]);
        let args = Val::decode(&unhex(f[2])).unwrap();
        let kwargs = Val::decode(&unhex(f[3])).unwrap();
        let d = call_digest(f[0], version, &args.to_value().unwrap(), Some(&kwargs.to_value().unwrap())).unwrap();
        assert_eq!(d.hex(), f[4], "{line:?}");
        seen += 1;
        if kwargs != Val::Map(vec![]) {
            continue; // memo calls are positional, as Python's are once bound
        }
        let Val::List(items) = args else { panic!("args of {line:?} are not a list") };
        let echo = memo(f[0], version, |a: Vec<Val>| Val::List(a)).unwrap();
        assert_eq!(echo.digest(items.clone()).unwrap().hex(), f[4], "memo key of {line:?}");
        // Stored under that key, and a hit the second time.
        assert_eq!(echo.call(items.clone()).unwrap(), Val::List(items.clone()));
        assert!(cache.contains(&quiver::Digest::parse(f[4]).unwrap()).unwrap());
        assert_eq!(echo.call(items.clone()).unwrap(), Val::List(items));
        assert_eq!((echo.hits().unwrap(), echo.misses().unwrap()), (1, 1), "{line:?}");
        positional += 1;
    }
    assert!(seen >= 7 && positional >= 3, "{seen} vectors, {positional} positional");

    // Typed arguments key as the values they become.
    let add = memo("shared.add", None, |(x, y): (i64, i64)| x + y).unwrap();
    assert_eq!(add.digest((1, 2)).unwrap().hex(), "d2aec93101298c8daf75589ce9ce1f83");
    let feature = memo("demo.feature", Some("1"), |(_n, _s): (i64, String)| 0.0).unwrap();
    assert_eq!(feature.digest((7, "alpha".into())).unwrap().hex(), "55c8615235dec7e94da4339e6c8a4cef");
}
