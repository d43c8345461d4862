//! Fuzz target `engine`: any input decodes (`specreplay_sim::fuzzing::scenario_from_bytes`)
//! to a valid scenario that cannot stall; it must run to completion with every invariant
//! holding, equal the non-speculative outputs, and be byte-identical when run twice.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = specreplay_sim::fuzzing::check_scenario_bytes(data) {
        let sc = specreplay_sim::fuzzing::scenario_from_bytes(data);
        panic!("{e}\nscenario: {}", sc.map(|s| format!("{s:?}")).unwrap_or_default());
    }
});
