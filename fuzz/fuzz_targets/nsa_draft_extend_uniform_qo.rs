//! Fuzz target `nsa_draft_extend_uniform_qo`: seed 002's reverted vectorization vs the
//! reference. EXPECTED TO CRASH within seconds: it is the demonstration that the fuzzer
//! finds the seed-002 failure. The body is `specreplay_sim::builders::cases::check_bytes`, which
//! `tests/builders.rs` also runs over `fuzz/seeds/nsa_draft_extend_uniform_qo/` and `fuzz/regressions/nsa_draft_extend_uniform_qo/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use specreplay_sim::builders::cases::{check_bytes, FuzzTarget};

fuzz_target!(|data: &[u8]| {
    if let Err(report) = check_bytes(FuzzTarget::NsaDraftExtendUniformQo, data) {
        panic!("variant disagrees with the reference\n{report}");
    }
});
