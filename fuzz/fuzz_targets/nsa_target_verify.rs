//! Fuzz target `nsa_target_verify`: the body is `specreplay_sim::builders::cases::check_bytes`, which
//! `tests/builders.rs` also runs over `fuzz/seeds/nsa_target_verify/` and `fuzz/regressions/nsa_target_verify/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use specreplay_sim::builders::cases::{check_bytes, FuzzTarget};

fuzz_target!(|data: &[u8]| {
    if let Err(report) = check_bytes(FuzzTarget::NsaTargetVerify, data) {
        panic!("variant disagrees with the reference\n{report}");
    }
});
