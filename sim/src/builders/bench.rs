//! CPU timings of the loop and vectorized forms (`benches/builders.rs` prints them).
//!
//! These time the Rust *model* of each form, so they measure algorithmic work (how many
//! elements each form touches: seed 000's "one topk of k = max(c) for every request"
//! vs "per-request topk"), not GPU kernel-launch overhead, which is what the seeds'
//! microsecond estimates are about.

use std::hint::black_box;
use std::time::{Duration, Instant};

use super::draft_select::{self, DraftVariant};
use super::nsa::{self, NsaBatch, NsaMode, NsaParams, NsaVariant};
use crate::splitmix::Rng;

/// Median nanoseconds per call of `f` (5 samples of ≥ `min_time / 5` each).
pub fn time_ns(min_time: Duration, mut f: impl FnMut()) -> f64 {
    let per = min_time / 5;
    let mut samples = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < per || n == 0 {
            f();
            n += 1;
        }
        samples.push(t.elapsed().as_nanos() as f64 / n as f64);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[2]
}

/// seed 000's high-variance counts: every fourth request wants 64 drafts, the rest 1
/// (`[1, 1, 1, 64]` repeated; bs = 1 gets `[64]`).
pub fn high_variance_counts(bs: usize) -> Vec<usize> {
    (0..bs).map(|i| if i % 4 == 3 || bs == 1 { 64 } else { 1 }).collect()
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    pub what: String,
    pub bs: usize,
    pub ns: Vec<(String, f64)>,
}

/// Runs the whole table; `min_time` per cell.
pub fn run(min_time: Duration) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut rng = Rng::new(7);
    let n_cand = 128;
    for &bs in &[1usize, 32, 256] {
        let scores: Vec<Vec<f32>> =
            (0..bs).map(|_| (0..n_cand).map(|_| (rng.next_u64() % 1000) as f32 / 1000.0).collect()).collect();
        for (label, counts) in [
            ("draft-select, counts [1,1,1,64]*, n_cand 128", high_variance_counts(bs)),
            ("draft-select, uniform counts 16, n_cand 128", vec![16; bs]),
        ] {
            let ns = DraftVariant::ALL
                .iter()
                .map(|&v| {
                    let t = time_ns(min_time, || {
                        black_box(draft_select::select(v, black_box(&scores), black_box(&counts)).ok());
                    });
                    (v.name().to_string(), t)
                })
                .collect();
            rows.push(Row { what: label.into(), bs, ns });
        }
        let p = NsaParams { num_draft_tokens: 4, nsa_index_topk: 2048, max_context_len: 4096 };
        let batch = NsaBatch {
            seq_lens: (0..bs).map(|_| 100 + (rng.next_u64() % 3000) as i32).collect(),
            accept_length: (0..bs).map(|_| 1 + (rng.next_u64() % 4) as i32).collect(),
            req_pool_indices: vec![0; bs],
        };
        let ns = NsaVariant::ALL
            .iter()
            .map(|&v| {
                let t = time_ns(min_time, || {
                    black_box(nsa::seqlens_expanded(v, NsaMode::TargetVerify, black_box(&batch), &p).ok());
                });
                (v.name().to_string(), t)
            })
            .collect();
        rows.push(Row { what: "nsa seqlens_expanded, target_verify, D 4".into(), bs, ns });
    }
    rows
}

/// The table as Markdown.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from("| builder / input | bs | variant: ns per call |\n|---|---|---|\n");
    for r in rows {
        let cells: Vec<String> = r.ns.iter().map(|(v, t)| format!("{v}: {t:.0}")).collect();
        s.push_str(&format!("| {} | {} | {} |\n", r.what, r.bs, cells.join(", ")));
    }
    s
}
