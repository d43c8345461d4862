//! The device boundary: what the engine hands to whatever runs a step's device work (the
//! CPU model in this crate, the CUDA executor in `specreplay-executor`), and the checks
//! applied to what comes back before the scheduler sees it.
//!
//! Mirrors the split inside vLLM 0.12.0's `GPUModelRunner`
//! (`vllm/v1/worker/gpu_model_runner.py`): everything up to the persistent buffers is CPU
//! bookkeeping shared by every backend ([`crate::runner`]); a [`Device`] has three duties:
//!
//! 1. [`Device::stage`]: write the step's inputs into persistent buffers — only the
//!    scheduled slots, so the tails of `input_ids`/`positions` keep stale values, as
//!    `_prepare_inputs` copies only `num_scheduled_tokens` entries;
//! 2. [`Device::forward_sample`]: forward pass + sampling, returning the rejection
//!    sampler's `output_token_ids` rows (width `max_spec_len + 1`, `-1` padded;
//!    `vllm/v1/sample/rejection_sampler.py`);
//! 3. [`Device::read_back`]: what the device actually held (padded `input_ids`/`positions`,
//!    attention metadata, `logits_indices`), which the trace records.
//!
//! [`check_rows`] validates any device's rows against the plan (row count and width, a
//! valid prefix then only -1, accepted tokens equal to the drafts fed, discarded rows all
//! -1) and turns a violation into [`SimError::DeviceOutput`] naming step, request and field.

use std::collections::BTreeMap;

use crate::cudagraph::Dispatch;
use crate::error::SimError;
use crate::oracle::TargetModel;
use crate::rejection::{self, RowInput};
use crate::sampling::{self, SamplingParams};
use crate::trace::AttnMetadata;

/// One batch row of a step, in persistent-batch row order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowPlan {
    /// Scheduler index of the request (arrival order).
    pub req: usize,
    pub req_id: String,
    pub prompt_len: usize,
    /// Tokens whose KV is computed before this step.
    pub num_computed: usize,
    /// Tokens scheduled this step (drafts included).
    pub num_scheduled: usize,
    /// Draft slots among the scheduled tokens (the last `num_draft`).
    pub num_draft: usize,
    /// Logits rows of the request (`num_draft + 1` under speculation, else 1).
    pub num_sampled: usize,
    /// Partial prefill: the sample of this row is discarded (row all -1).
    pub discard: bool,
    /// The request's sampling parameters (`crate::sampling`): greedy rows are verified by
    /// argmax, random-mode rows by [`rejection::random_row`] keyed by `req` and positions.
    pub sampling: SamplingParams,
}

impl RowPlan {
    /// `num_computed + num_scheduled`: the row's context length this step.
    pub fn seq_len(&self) -> usize {
        self.num_computed + self.num_scheduled
    }

    /// Sequence position of the row's first sampled token: its first draft's, or (no
    /// drafts) the position of the token sampled after the context. The random-mode
    /// generator keys every draw of the row by this absolute position (plus the draft
    /// index), so draws never depend on batching, chunking or discarded samples.
    pub fn first_sample_position(&self) -> usize {
        self.seq_len() - self.num_draft
    }

    /// Whether this row is verified in random mode (sampled at temperature > 0).
    pub fn is_random(&self) -> bool {
        !self.discard && !self.sampling.is_greedy()
    }
}

/// Everything the device needs for one step with at least one scheduled token. The
/// `attn` and `logits_indices` members are the CPU bookkeeping's values, the reference a
/// device's own computation is recorded against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepPlan {
    /// 1-based engine step.
    pub step: u64,
    pub rows: Vec<RowPlan>,
    /// `query_start_loc`: prefix sums of `num_scheduled`, `rows.len() + 1` entries.
    pub cu_seqlens: Vec<usize>,
    pub dispatch: Dispatch,
    /// Rejection-sampler row width (`max_spec_len + 1`; 1 without speculation).
    pub width: usize,
    pub block_size: usize,
    pub attn: AttnMetadata,
    pub logits_indices: Vec<i64>,
}

impl StepPlan {
    /// Scheduled tokens this step (unpadded).
    pub fn num_tokens(&self) -> usize {
        self.cu_seqlens.last().copied().unwrap_or(0)
    }
}

/// What a device held for a step, as read back after the forward pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceView {
    /// `input_ids[:num_tokens_padded]`, stale tail included.
    pub input_ids: Vec<i64>,
    /// `positions[:num_tokens_padded]`, stale tail included.
    pub positions: Vec<i64>,
    pub attn: AttnMetadata,
    pub logits_indices: Vec<i64>,
}

/// The device side of a step. `contexts[row]` is the row's token-table row up to
/// `seq_len` (computed tokens, then this step's scheduled tokens — drafts and any stale
/// slots included, exactly what `token_ids_cpu` holds).
pub trait Device {
    /// Writes the scheduled slots of the persistent input buffers (tails stay stale).
    fn stage(&mut self, plan: &StepPlan, contexts: &[&[u32]]) -> Result<(), SimError>;
    /// Runs forward + sampling; one row per batch row, width `plan.width`, -1 padded.
    fn forward_sample(&mut self, plan: &StepPlan, contexts: &[&[u32]]) -> Result<Vec<Vec<i64>>, SimError>;
    /// Reads back what the device held this step.
    fn read_back(&mut self, plan: &StepPlan) -> Result<DeviceView, SimError>;
}

/// The CPU device: persistent buffers in host memory, the target model as an oracle.
pub struct CpuDevice {
    model: Box<dyn TargetModel + Send + Sync>,
    input_ids: Vec<i64>,
    positions: Vec<i64>,
}

impl CpuDevice {
    /// Persistent buffers of `buffer_len` tokens (vLLM sizes them
    /// `max(max_num_batched_tokens, max capture size)`), zero until first written.
    pub fn new(model: Box<dyn TargetModel + Send + Sync>, buffer_len: usize) -> Self {
        CpuDevice { model, input_ids: vec![0; buffer_len], positions: vec![0; buffer_len] }
    }
}

impl CpuDevice {
    /// The greedy token of the hidden row `plan.logits_indices[k]`: the input at that flat
    /// index belongs to some batch row; its context is that row's tokens up to and including
    /// that input.
    fn sample_hidden_row(&self, plan: &StepPlan, contexts: &[&[u32]], k: usize) -> Result<u32, SimError> {
        let bad = |m: String| SimError::Device(format!("step {}: {m}", plan.step));
        let li = *plan.logits_indices.get(k).ok_or_else(|| bad(format!("no logits index {k}")))?;
        let li = usize::try_from(li).map_err(|_| bad(format!("negative logits index {li}")))?;
        let owner = plan.cu_seqlens.windows(2).position(|w| (w[0]..w[1]).contains(&li));
        let owner = owner.ok_or_else(|| bad(format!("logits index {li} outside the {} inputs", plan.num_tokens())))?;
        let r = &plan.rows[owner];
        let pos = r.num_computed + li - plan.cu_seqlens[owner];
        self.model.next_token(&r.req_id, r.prompt_len, &contexts[owner][..=pos])
    }

    /// A random-mode row: the target distribution after the context up to each draft and
    /// after the whole context (`sampling::target_probs` on the oracle's log-probability
    /// row), then vLLM's random rejection rule ([`rejection::random_row`]) on the draws of
    /// `(seed, request, position, purpose)`, the first position being
    /// [`RowPlan::first_sample_position`].
    fn random_row(&self, plan: &StepPlan, context: &[u32], r: &RowPlan, drafts: &[u32]) -> Result<Vec<i64>, SimError> {
        let seed = r.sampling.seed.ok_or_else(|| {
            SimError::Device(format!("step {}: random-mode request {:?} has no seed", plan.step, r.req_id))
        })?;
        let first = r.first_sample_position();
        let mut targets = Vec::with_capacity(drafts.len() + 1);
        for j in 0..=drafts.len() {
            let logits = self.model.log_probs(&context[..first + j]).ok_or_else(|| {
                SimError::Device(format!(
                    "step {}: request {:?} samples at temperature {} but the oracle is greedy-only",
                    plan.step, r.req_id, r.sampling.temperature
                ))
            })?;
            targets.push(sampling::target_probs(&logits, &r.sampling));
        }
        let toks = rejection::random_row(&targets, drafts, seed, r.req as u32, first as u32);
        let mut out: Vec<i64> = toks.into_iter().map(i64::from).collect();
        out.resize(plan.width, -1);
        Ok(out)
    }
}

impl Device for CpuDevice {
    fn stage(&mut self, plan: &StepPlan, contexts: &[&[u32]]) -> Result<(), SimError> {
        for (row, r) in plan.rows.iter().enumerate() {
            let start = plan.cu_seqlens[row];
            for (j, pos) in (r.num_computed..r.seq_len()).enumerate() {
                self.positions[start + j] = pos as i64;
                self.input_ids[start + j] = i64::from(contexts[row][pos]);
            }
        }
        Ok(())
    }

    fn forward_sample(&mut self, plan: &StepPlan, contexts: &[&[u32]]) -> Result<Vec<Vec<i64>>, SimError> {
        let mut rows = Vec::with_capacity(plan.rows.len());
        let mut first_logit = 0;
        for (row, r) in plan.rows.iter().enumerate() {
            let logits = first_logit;
            first_logit += r.num_sampled;
            if r.discard {
                rows.push(vec![-1; plan.width]);
                continue;
            }
            if r.is_random() {
                let end = plan.cu_seqlens[row + 1];
                let drafts: Vec<u32> = self.input_ids[end - r.num_draft..end].iter().map(|&t| t as u32).collect();
                rows.push(self.random_row(plan, contexts[row], r, &drafts)?);
                continue;
            }
            if r.num_draft == 0 {
                // One sampled row: the hidden row `logits_indices` names (nano-vllm's LM head
                // may read another sequence's row; vLLM's is always the row's last token).
                let t = self.sample_hidden_row(plan, contexts, logits)?;
                let mut out = vec![-1; plan.width];
                out[0] = i64::from(t);
                rows.push(out);
                continue;
            }
            // Drafts are read back from the input buffer, as `_calc_spec_decode_metadata` does.
            let end = plan.cu_seqlens[row + 1];
            let drafts: Vec<u32> = self.input_ids[end - r.num_draft..end].iter().map(|&t| t as u32).collect();
            let input = RowInput {
                req_id: &r.req_id,
                prompt_len: r.prompt_len,
                context: contexts[row],
                verify_from: r.seq_len() - r.num_draft,
                drafts: &drafts,
            };
            rows.push(rejection::greedy_row(self.model.as_ref(), &input, plan.width)?);
        }
        Ok(rows)
    }

    fn read_back(&mut self, plan: &StepPlan) -> Result<DeviceView, SimError> {
        let n = plan.dispatch.num_tokens_padded;
        Ok(DeviceView {
            input_ids: self.input_ids[..n].to_vec(),
            positions: self.positions[..n].to_vec(),
            attn: plan.attn.clone(),
            logits_indices: plan.logits_indices.clone(),
        })
    }
}

/// Valid sampled tokens per request, from checked rows.
pub type Sampled = BTreeMap<usize, Vec<u32>>;

/// Checks a device's sampler rows against the plan and returns the valid tokens per
/// request: exactly one row per batch row, each `plan.width` wide; a discarded row is all
/// -1; any other row has a valid prefix of 1 to `num_draft + 1` tokens (`0 <= t`) then only
/// -1, and every token of that prefix but the last equals the draft fed at that slot
/// (greedy and random rejection both accept a draft only by emitting it).
pub fn check_rows(plan: &StepPlan, contexts: &[&[u32]], rows: &[Vec<i64>]) -> Result<Sampled, SimError> {
    let err = |req_id: &str, field: String, message: String| SimError::DeviceOutput {
        step: plan.step,
        req_id: req_id.to_string(),
        field,
        message,
    };
    if rows.len() != plan.rows.len() {
        let who = plan.rows.first().map_or("", |r| r.req_id.as_str());
        return Err(err(
            who,
            "output_token_ids".into(),
            format!("{} rows returned for a batch of {}", rows.len(), plan.rows.len()),
        ));
    }
    let mut sampled = Sampled::new();
    for (i, (r, row)) in plan.rows.iter().zip(rows).enumerate() {
        let field = |j: usize| format!("output_token_ids[{i}][{j}]");
        if row.len() != plan.width {
            return Err(err(
                &r.req_id,
                format!("output_token_ids[{i}]"),
                format!("row of width {} (expected {})", row.len(), plan.width),
            ));
        }
        let valid = row.iter().take_while(|&&t| t >= 0).count();
        if let Some(j) = row[valid..].iter().position(|&t| t != -1) {
            return Err(err(
                &r.req_id,
                field(valid + j),
                format!("{} after the valid prefix (expected -1)", row[valid + j]),
            ));
        }
        if r.discard && valid > 0 {
            return Err(err(&r.req_id, field(0), "a discarded (partial prefill) row holds a token".into()));
        }
        if !r.discard && !(1..=r.num_draft + 1).contains(&valid) {
            return Err(err(
                &r.req_id,
                format!("output_token_ids[{i}]"),
                format!("{valid} valid tokens for {} draft(s) (expected 1 to {})", r.num_draft, r.num_draft + 1),
            ));
        }
        let fed = &contexts[i][r.seq_len() - r.num_draft..r.seq_len()];
        for j in 0..valid.saturating_sub(1) {
            if row[j] != i64::from(fed[j]) {
                return Err(err(
                    &r.req_id,
                    field(j),
                    format!(
                        "accepted token {} differs from the draft fed ({}) while later slots are valid",
                        row[j], fed[j]
                    ),
                ));
            }
        }
        sampled.insert(r.req, row[..valid].iter().map(|&t| t as u32).collect());
    }
    Ok(sampled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cudagraph::GraphMode;

    fn plan(rows: Vec<RowPlan>, width: usize) -> StepPlan {
        let mut cu = vec![0];
        for r in &rows {
            cu.push(cu.last().unwrap() + r.num_scheduled);
        }
        let n = *cu.last().unwrap();
        StepPlan {
            step: 7,
            rows,
            cu_seqlens: cu,
            dispatch: Dispatch { mode: GraphMode::None, num_tokens_padded: n, num_reqs_padded: 1 },
            width,
            block_size: 16,
            attn: AttnMetadata::default(),
            logits_indices: Vec::new(),
        }
    }

    fn row(req_id: &str, computed: usize, sched: usize, drafts: usize, discard: bool) -> RowPlan {
        RowPlan {
            req: 0,
            req_id: req_id.into(),
            prompt_len: 2,
            num_computed: computed,
            num_scheduled: sched,
            num_draft: drafts,
            num_sampled: drafts + 1,
            discard,
            sampling: SamplingParams::default(),
        }
    }

    #[test]
    fn valid_rows_pass_and_give_the_prefix() {
        let p = plan(vec![row("a", 3, 3, 2, false)], 3);
        let ctx: Vec<u32> = vec![1, 2, 3, 4, 5, 6];
        // Drafts fed are 5, 6: accepting 5 then emitting 9 is valid.
        let s = check_rows(&p, &[&ctx], &[vec![5, 9, -1]]).unwrap();
        assert_eq!(s[&0], vec![5, 9]);
        let s = check_rows(&p, &[&ctx], &[vec![5, 6, 8]]).unwrap();
        assert_eq!(s[&0], vec![5, 6, 8]);
    }

    #[test]
    fn every_violation_names_step_request_and_field() {
        let p = plan(vec![row("a", 3, 3, 2, false)], 3);
        let ctx: Vec<u32> = vec![1, 2, 3, 4, 5, 6];
        let cases: Vec<(Vec<Vec<i64>>, &str)> = vec![
            (vec![], "output_token_ids"),
            (vec![vec![5, 9]], "output_token_ids[0]"),
            (vec![vec![5, -1, 3]], "output_token_ids[0][2]"),
            (vec![vec![-1, -1, -1]], "output_token_ids[0]"),
            (vec![vec![7, 6, 8]], "output_token_ids[0][0]"),
            (vec![vec![5, 7, 8]], "output_token_ids[0][1]"),
        ];
        for (rows, want) in cases {
            match check_rows(&p, &[&ctx], &rows) {
                Err(SimError::DeviceOutput { step: 7, req_id, field, .. }) => {
                    assert_eq!(req_id, "a");
                    assert_eq!(field, want, "{rows:?}");
                }
                other => panic!("{rows:?}: expected a DeviceOutput error, got {other:?}"),
            }
        }
    }

    #[test]
    fn discarded_rows_must_be_all_padding() {
        let p = plan(vec![row("p", 0, 4, 0, true)], 1);
        let ctx: Vec<u32> = vec![1, 2, 3, 4];
        assert!(check_rows(&p, &[&ctx], &[vec![-1]]).unwrap()[&0].is_empty());
        assert!(matches!(check_rows(&p, &[&ctx], &[vec![3]]), Err(SimError::DeviceOutput { .. })));
    }
}
