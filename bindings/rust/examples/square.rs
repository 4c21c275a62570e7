//! The README's quick start in Rust: `quickstart.square` in the cache
//! directory the C, Python and Lua quick starts filled, so the calls they
//! made are hits here and only square(6) runs.
//!
//!     cargo run --example square -- ../../quickstart-cache
fn main() -> Result<(), quiver::Error> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "quickstart-cache".into());
    let cache = quiver::Cache::open(&dir)?;
    let _active = cache.activate()?; // memoized calls on this thread go to `cache`
    let square = quiver::memo("quickstart.square", Some("1"), |(n,): (i64,)| n * n)?;
    for n in 1..=6 {
        println!("square({n}) = {}", square.call((n,))?);
    }
    println!("{} hits, {} misses", square.hits()?, square.misses()?);
    Ok(())
}
