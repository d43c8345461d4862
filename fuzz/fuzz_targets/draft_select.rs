//! Fuzz target `draft_select`: the body is `specreplay_sim::builders::cases::check_bytes`, which
//! `tests/builders.rs` also runs over `fuzz/seeds/draft_select/` and `fuzz/regressions/draft_select/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use specreplay_sim::builders::cases::{check_bytes, FuzzTarget};

fuzz_target!(|data: &[u8]| {
    if let Err(report) = check_bytes(FuzzTarget::DraftSelect, data) {
        panic!("variant disagrees with the reference\n{report}");
    }
});
