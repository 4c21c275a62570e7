//! A memoized Rust function in a cache directory: run it twice, and the
//! second run only gets hits (so does Python's `@quiver.memo(name="example.fib")`).
//!
//!     cargo run --example memo -- /tmp/quiver-example
use std::time::Instant;

fn fib(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

fn main() -> Result<(), quiver::Error> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "quiver-example-cache".into());
    let cache = quiver::Cache::open(&dir)?;
    let _active = cache.activate()?; // memoized calls on this thread go to `cache`
    let slow_fib = quiver::memo("example.fib", Some("1"), |(n,): (u64,)| fib(n))?;

    for n in [30, 32, 30] {
        let t = Instant::now();
        let value = slow_fib.call((n,))?;
        println!("fib({n}) = {value} in {:?}", t.elapsed());
    }
    println!("{} hits, {} misses; {} calls in {}", slow_fib.hits()?, slow_fib.misses()?, cache.entries()?, dir);
    Ok(())
}
