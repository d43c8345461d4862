//! Fuzz target `trace_parser`: arbitrary bytes must give a clean `Err`, never a panic;
//! whatever parses must round-trip through canonical JSON unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    specreplay_sim::fuzzing::check_trace_bytes(data);
});
