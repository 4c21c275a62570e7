//! The safe layer's surface: memory caches, stacks, queries, typed memos and
//! the errors they give.
mod common;

use common::TempDir;
use quiver::{memo, Cache, Val};

#[test]
fn a_memory_cache_memoizes_and_answers_queries() {
    let cache = Cache::memory().unwrap();
    assert_eq!(cache.path().to_str(), Some(":memory:"));
    let _active = cache.activate().unwrap();
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let r = runs.clone();
    let words = memo("api.words", Some("2"), move |(s, upper): (String, bool)| -> Vec<String> {
        r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        s.split(' ').map(|w| if upper { w.to_uppercase() } else { w.to_owned() }).collect()
    })
    .unwrap();
    for _ in 0..3 {
        assert_eq!(words.call(("a b".into(), true)).unwrap(), ["A", "B"]);
    }
    assert_eq!(words.call(("a b".into(), false)).unwrap(), ["a", "b"]);
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!((words.hits().unwrap(), words.misses().unwrap()), (2, 2));

    let keys = cache.query(Some("api.words")).unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&words.digest(("a b".into(), true)).unwrap()));
    assert!(cache.query(Some("api.nothing")).unwrap().is_empty());
    let record = cache.load(&keys[0]).unwrap().to_val().unwrap();
    let Val::Map(entries) = record else { panic!("a record is a map") };
    let field = |k: &str| entries.iter().find(|(key, _)| *key == Val::Text(k.into())).map(|(_, v)| v.clone());
    assert_eq!(field("name"), Some(Val::Text("api.words".into())));
    assert_eq!(field("version"), Some(Val::Text("2".into())));
}

#[test]
fn a_stack_reads_through_and_copies_into_its_local_tier() {
    let shared = TempDir::new("stack");
    let remote = Cache::open(shared.path()).unwrap();
    let square = memo("api.square", None, |(x,): (i64,)| x * x).unwrap();
    {
        let first = Cache::stack(&Cache::memory().unwrap(), &remote).unwrap();
        let _active = first.activate().unwrap();
        assert_eq!(square.call((12,)).unwrap(), 144);
    }
    let local = Cache::memory().unwrap();
    let second = Cache::stack(&local, &remote).unwrap();
    let key = square.digest((12,)).unwrap();
    assert!(!local.contains(&key).unwrap());
    let _active = second.activate().unwrap();
    assert_eq!(square.call((12,)).unwrap(), 144);
    assert_eq!(square.misses().unwrap(), 1, "the second machine got a hit");
    assert_eq!(second.remote_hits().unwrap(), 1);
    // The stack copies a remote hit into local on a thread of its own.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !local.contains(&key).unwrap() {
        assert!(std::time::Instant::now() < deadline, "no local copy of the remote hit");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn errors_carry_the_library_message() {
    let cache = Cache::memory().unwrap();
    let _active = cache.activate().unwrap();
    let half = memo("api.half", None, |(x,): (i64,)| -> f64 {
        assert!(x.rem_euclid(2) == 0, "{x} is odd");
        x as f64 / 2.0
    })
    .unwrap();
    assert_eq!(half.call((4,)).unwrap(), 2.0);
    let err = half.call((3,)).unwrap_err();
    assert!(err.message.contains("3 is odd"), "{err}");
    assert_eq!(cache.query(Some("api.half")).unwrap().len(), 1, "a failed call is not stored");

    let parse = quiver::try_memo("api.parse", None, |(s,): (String,)| s.parse::<u8>()).unwrap();
    assert_eq!(parse.call(("7".into(),)).unwrap(), 7);
    let err = parse.call(("300".into(),)).unwrap_err();
    assert_eq!(err.name, "QV_EFAILED");
    assert!(err.message.contains("too large"), "{err}");
    assert_eq!(cache.query(Some("api.parse")).unwrap().len(), 1);

    let err = Val::Int(1 << 70).to_value().unwrap_err();
    assert_eq!(err.name, "QV_EINVAL");
    assert!(Val::BigInt { negative: false, magnitude: vec![1, 0, 0, 0, 0, 0, 0, 0, 0] }.to_value().is_ok());
    let err = Val::Map(vec![(Val::Int(1), Val::Null), (Val::Int(1), Val::Null)]).to_value().unwrap_err();
    assert!(!err.message.is_empty(), "a duplicate key: {err}");
    let err = Val::decode(&[0x18, 0x01]).unwrap_err();
    assert_eq!(err.name, "QV_EDECODE");
    assert!(err.to_string().starts_with("QV_EDECODE: "), "{err}");
    let err = Cache::open("ftp://nowhere").err().expect("a URL that is not a cache");
    assert!(err.message.contains("ftp://"), "{err}");
}
