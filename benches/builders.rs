//! Loop vs vectorized forms of the seeds' builders on CPU (seed 000's draft selection with
//! high-variance counts [1, 1, 1, 64], and NSA `seqlens_expanded`), bs ∈ {1, 32, 256}.
//! Plain `fn main` (harness = false): `cargo bench --bench builders` prints a Markdown table.
//! Set `BUILDERS_BENCH_MS` to change the time per cell (default 500 ms).

use std::time::Duration;

use specreplay_sim::builders::bench;

fn main() {
    // `cargo bench` passes `--bench`; a libtest-style filter is ignored.
    let ms: u64 = std::env::var("BUILDERS_BENCH_MS").ok().and_then(|s| s.parse().ok()).unwrap_or(500);
    let rows = bench::run(Duration::from_millis(ms));
    print!("{}", bench::markdown(&rows));
}
