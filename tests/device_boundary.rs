//! The device boundary (`sim/src/device.rs`): every profile runs its device work through
//! `Device`, and whatever a device returns is checked before the scheduler sees it.

use specreplay_sim::device::{CpuDevice, Device, DeviceView, StepPlan};
use specreplay_sim::{engine, trace, Scenario, SimError};

mod common;

fn scenario(name: &str) -> Scenario {
    let text = std::fs::read_to_string(common::root().join("traces").join(name)).unwrap();
    trace::from_json(&text).unwrap().scenario()
}

type RowHook = Box<dyn FnMut(&StepPlan, &mut Vec<Vec<i64>>)>;
type ViewHook = Box<dyn FnMut(&StepPlan, &mut DeviceView)>;

/// Wraps the CPU device, counts calls, and lets a test tamper with rows or buffers.
struct Tamper {
    inner: CpuDevice,
    calls: [usize; 3],
    rows: RowHook,
    view: ViewHook,
}

impl Tamper {
    fn new(sc: &Scenario) -> Self {
        Tamper { inner: engine::cpu_device(sc), calls: [0; 3], rows: Box::new(|_, _| {}), view: Box::new(|_, _| {}) }
    }
}

impl Device for Tamper {
    fn stage(&mut self, plan: &StepPlan, contexts: &[&[u32]]) -> Result<(), SimError> {
        self.calls[0] += 1;
        self.inner.stage(plan, contexts)
    }
    fn forward_sample(&mut self, plan: &StepPlan, contexts: &[&[u32]]) -> Result<Vec<Vec<i64>>, SimError> {
        self.calls[1] += 1;
        let mut rows = self.inner.forward_sample(plan, contexts)?;
        (self.rows)(plan, &mut rows);
        Ok(rows)
    }
    fn read_back(&mut self, plan: &StepPlan) -> Result<DeviceView, SimError> {
        self.calls[2] += 1;
        let mut v = self.inner.read_back(plan)?;
        (self.view)(plan, &mut v);
        Ok(v)
    }
}

fn run_on(sc: &Scenario, dev: &mut Tamper) -> Result<specreplay_sim::Trace, SimError> {
    engine::run_on(sc, dev).map(|r| r.trace)
}

#[test]
fn both_profiles_run_through_the_device_and_match_the_default_run() {
    for name in ["vllm_ngram_13step.json", "nano_vllm_basic.json"] {
        let sc = scenario(name);
        let mut dev = Tamper::new(&sc);
        let via = run_on(&sc, &mut dev).unwrap();
        let busy = via.steps.iter().filter(|s| s.total_num_scheduled_tokens > 0).count();
        assert!(busy > 0);
        assert_eq!(dev.calls, [busy; 3], "{name}: one stage / forward_sample / read_back per busy step");
        assert_eq!(trace::to_json(&via), trace::to_json(&engine::run(&sc).unwrap().trace), "{name}");
    }
}

#[test]
fn a_device_that_corrupts_an_accepted_token_is_a_typed_error() {
    let sc = scenario("vllm_ngram_13step.json");
    let mut dev = Tamper::new(&sc);
    // Replace the first accepted draft of the first row with two valid tokens by a wrong token.
    dev.rows = Box::new(|_, rows| {
        for row in rows.iter_mut() {
            if row.len() > 1 && row[1] >= 0 {
                row[0] = (row[0] + 1) % 1000;
                return;
            }
        }
    });
    match run_on(&sc, &mut dev) {
        Err(SimError::DeviceOutput { step, req_id, field, message }) => {
            assert!(step >= 1);
            assert_eq!(req_id, "0");
            assert_eq!(field, "output_token_ids[0][0]");
            assert!(message.contains("draft fed"), "{message}");
        }
        other => panic!("expected DeviceOutput, got {:?}", other.map(|t| t.steps.len())),
    }
}

#[test]
fn a_device_that_returns_a_short_row_or_garbage_after_padding_is_rejected() {
    let sc = scenario("vllm_ngram_13step.json");
    let mut dev = Tamper::new(&sc);
    dev.rows = Box::new(|_, rows| rows[0].pop().map(drop).unwrap_or(()));
    assert!(matches!(run_on(&sc, &mut dev), Err(SimError::DeviceOutput { step: 1, .. })));
    let mut dev = Tamper::new(&sc);
    dev.rows = Box::new(|p, rows| {
        if p.width > 1 {
            let w = rows[0].len();
            rows[0][w - 1] = if rows[0][w - 1] == -1 { 5 } else { rows[0][w - 1] };
            rows[0][0] = -1;
        }
    });
    assert!(matches!(run_on(&sc, &mut dev), Err(SimError::DeviceOutput { .. })));
}

#[test]
fn a_device_that_writes_padded_slots_is_caught_by_the_diff() {
    // A device whose padded input slots are not stale (here: zeroed) records a trace the
    // simulator's stale-buffer model disagrees with.
    let sc = scenario("vllm_ngram_13step.json");
    let mut dev = Tamper::new(&sc);
    dev.view = Box::new(|p, v| {
        for t in &mut v.input_ids[p.num_tokens()..] {
            *t = 0;
        }
    });
    let tampered = run_on(&sc, &mut dev).unwrap();
    let rep = specreplay_sim::diff::compare(&engine::run(&sc).unwrap().trace, &tampered);
    let d = rep.first.expect("a padded slot that is not stale must diverge");
    assert!(d.field.starts_with("input_ids"), "{}", d.field);
}
