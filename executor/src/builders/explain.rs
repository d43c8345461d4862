//! `specreplay explain BUILDER --variant V --device cuda`: the simulator's counterexample
//! search and greedy minimization (`specreplay_sim::builders::search`, the same generator,
//! shrink steps and report), with every candidate evaluated on the device: the variant's
//! kernel replayed in a CUDA graph on the padded batch, whole buffers read back, compared
//! with the simulator's reference. The rendering of the input and the notes (including the
//! CPU model's eager path) are the CPU subject's.

use std::cell::RefCell;

use specreplay_sim::builders::cases::{self, DraftCase, NsaCase};
use specreplay_sim::builders::draft_select::DraftVariant;
use specreplay_sim::builders::nsa::{NsaMode, NsaVariant};
use specreplay_sim::builders::search::{self, DraftSubject, Explanation, NsaSubject, SparseSubject, Subject};
use specreplay_sim::builders::sparse::{SparseInput, SparseVariant};
use specreplay_sim::builders::{builder_info, Mismatch, BUILDERS};
use specreplay_sim::splitmix::Rng;

use super::{draft, nsa, sparse};
use crate::device::Device;
use crate::error::{ExecError, Result};

/// Where the device's results are compared (the `path` of a reported mismatch).
pub const PATH: &str = "cuda-graph replay on the device";

type DeviceCheck<'a, C> = Box<dyn FnMut(&C) -> Result<std::result::Result<(), Mismatch>> + 'a>;

/// A CPU subject whose `check` runs on the device. A device failure stops nothing mid-way
/// (the trait cannot fail); it is kept and returned after the search.
pub struct DeviceSubject<'a, S: Subject> {
    inner: S,
    check: RefCell<DeviceCheck<'a, S::Case>>,
    error: RefCell<Option<ExecError>>,
}

impl<S: Subject> Subject for DeviceSubject<'_, S> {
    type Case = S::Case;
    fn generate(&self, rng: &mut Rng) -> S::Case {
        self.inner.generate(rng)
    }
    fn shrink(&self, case: &S::Case) -> Vec<S::Case> {
        self.inner.shrink(case)
    }
    fn check(&self, case: &S::Case) -> std::result::Result<(), Mismatch> {
        if self.error.borrow().is_some() {
            return Ok(());
        }
        match (self.check.borrow_mut())(case) {
            Ok(r) => r,
            Err(e) => {
                *self.error.borrow_mut() = Some(e);
                Ok(())
            }
        }
    }
    fn render(&self, case: &S::Case) -> String {
        self.inner.render(case)
    }
    fn notes(&self, case: &S::Case) -> String {
        self.inner.notes(case).replace("eager path (no CUDA graph)", "eager path (no CUDA graph; CPU model)")
    }
}

fn finish<S: Subject>(
    s: DeviceSubject<'_, S>,
    dev: &Device,
    builder: &str,
    variant: &str,
    budget: u64,
    seed: u64,
) -> Result<Explanation> {
    let mut e = search::run_subject(&s, builder, variant, budget, seed);
    if let Some(err) = s.error.into_inner() {
        return Err(err);
    }
    let cpu = format!("--cases {budget} --seed {seed}");
    e.report = e.report.replace(&cpu, &format!("{cpu} --device cuda"));
    e.report = e.report.replacen(
        "\nresult ",
        &format!("\ndevice     {} (every candidate replayed in a CUDA graph on the device)\nresult ", dev.info.name),
        1,
    );
    Ok(e)
}

/// Runs the device-backed search. Unknown builders / variants are [`ExecError::Input`]
/// with the CPU explain's wording.
pub fn explain(dev: &Device, builder: &str, variant: &str, budget: u64, seed: u64) -> Result<Explanation> {
    let names = |b: &str| -> String {
        builder_info(b).map_or(String::new(), |i| i.variants.iter().map(|v| v.0).collect::<Vec<_>>().join(", "))
    };
    let bad_variant = || {
        ExecError::Input(format!(
            "unknown variant `{variant}` for builder `{builder}` (variants: {}); see `specreplay explain --list`",
            names(builder)
        ))
    };
    match builder {
        "nsa-target-verify" | "nsa-draft-extend" => {
            let mode = if builder == "nsa-target-verify" { NsaMode::TargetVerify } else { NsaMode::DraftExtend };
            let v = NsaVariant::from_name(variant).ok_or_else(bad_variant)?;
            let cap = nsa::Capacity {
                cases: 1,
                reqs: nsa::MAX_BS,
                rows: nsa::MAX_BS * 16,
                page: nsa::MAX_BS * 16 * cases::MAX_CONTEXT_LEN,
            };
            let mut nd = nsa::NsaDevice::new(dev, cap)?;
            let check: DeviceCheck<'_, NsaCase> = Box::new(move |c: &NsaCase| {
                let act = nsa::device_outcome(dev, &mut nd, c, v)?;
                Ok(cases::check_nsa_replay_actual(c, v, &act, PATH))
            });
            let s = DeviceSubject {
                inner: NsaSubject { mode, variant: v },
                check: RefCell::new(check),
                error: RefCell::new(None),
            };
            finish(s, dev, builder, variant, budget, seed)
        }
        "draft-select" => {
            let v = DraftVariant::from_name(variant).ok_or_else(bad_variant)?;
            let cap = draft::Capacity { cases: 1, rows: 1024, scores: 1 << 16, out: 1 << 16 };
            let mut dd = draft::DraftDevice::new(dev, cap)?;
            let check: DeviceCheck<'_, DraftCase> = Box::new(move |c: &DraftCase| {
                let act = draft::device_outcome(dev, &mut dd, c, v)?;
                Ok(cases::check_draft_actual(c, v, &act, PATH))
            });
            let s = DeviceSubject {
                inner: DraftSubject { variant: v },
                check: RefCell::new(check),
                error: RefCell::new(None),
            };
            finish(s, dev, builder, variant, budget, seed)
        }
        "sparse-indices" => {
            let v = SparseVariant::from_name(variant).ok_or_else(bad_variant)?;
            let cap = sparse::Capacity { cases: 1, heavy: 1 << 12, list: 1 << 12, lens: 64, weights: 1 << 14 };
            let mut sd = sparse::SparseDevice::new(dev, cap)?;
            let check: DeviceCheck<'_, SparseInput> = Box::new(move |x: &SparseInput| {
                let act = sparse::device_outcome(dev, &mut sd, x, v)?;
                Ok(cases::check_sparse_actual(x, v, &act, PATH))
            });
            let s = DeviceSubject {
                inner: SparseSubject { variant: v },
                check: RefCell::new(check),
                error: RefCell::new(None),
            };
            finish(s, dev, builder, variant, budget, seed)
        }
        _ => Err(ExecError::Input(format!(
            "unknown builder `{builder}` (builders: {}); see `specreplay explain --list`",
            BUILDERS.iter().map(|b| b.name).collect::<Vec<_>>().join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use specreplay_sim::builders::Outcome;

    /// The device subject with the CPU twin standing in for the device finds and minimizes
    /// exactly what the CPU explain finds (the wrapper changes nothing but the check).
    #[test]
    fn a_twin_backed_subject_minimizes_to_the_cpu_counterexample() {
        let v = NsaVariant::UniformQo;
        let check: DeviceCheck<'_, NsaCase> = Box::new(move |c: &NsaCase| {
            let act = match nsa::raises(c) {
                Some(_) => cases::replay_outcome(c, NsaVariant::Reference),
                None => {
                    let mut p = nsa::Packed::default();
                    p.push(c, true).map_err(ExecError::InvalidInput)?;
                    p.run_twin(true, &nsa::req_to_token(), nsa::R2T_STRIDE);
                    Outcome::Values(p.unpack(0))
                }
            };
            Ok(cases::check_nsa_replay_actual(c, v, &act, PATH))
        });
        let s = DeviceSubject {
            inner: NsaSubject { mode: NsaMode::DraftExtend, variant: v },
            check: RefCell::new(check),
            error: RefCell::new(None),
        };
        let dev_like = search::run_subject(&s, "nsa-draft-extend", "uniform-qo", 100_000, 1);
        let cpu = search::explain("nsa-draft-extend", "uniform-qo", 100_000, 1).unwrap();
        assert!(dev_like.found && cpu.found);
        let input =
            |r: &str| r.split("minimized input").nth(1).unwrap().split("first divergence").next().unwrap().to_string();
        assert_eq!(input(&dev_like.report), input(&cpu.report));
        for want in [
            "seq_lens            [1]",
            "accept_length       [1]",
            "D                   2",
            "field      nsa_seqlens_expanded",
            "expected   1",
            "actual     0",
            PATH,
        ] {
            assert!(dev_like.report.contains(want), "{want}: {}", dev_like.report);
        }
    }
}
