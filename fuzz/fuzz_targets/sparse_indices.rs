//! Fuzz target `sparse_indices`: the body is `specreplay_sim::builders::cases::check_bytes`, which
//! `tests/builders.rs` also runs over `fuzz/seeds/sparse_indices/` and `fuzz/regressions/sparse_indices/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use specreplay_sim::builders::cases::{check_bytes, FuzzTarget};

fuzz_target!(|data: &[u8]| {
    if let Err(report) = check_bytes(FuzzTarget::SparseIndices, data) {
        panic!("variant disagrees with the reference\n{report}");
    }
});
