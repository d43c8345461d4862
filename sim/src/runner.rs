//! The CPU-side bookkeeping of vLLM 0.12.0's `GPUModelRunner`
//! (`vllm/v1/worker/gpu_model_runner.py`): `_update_states`, `_prepare_inputs`, graph
//! dispatch, FlashAttention metadata, sampling through the oracle, `_bookkeeping_sync`
//! and the n-gram drafter with its batch-wide gate.
//!
//! Everything here is CPU bookkeeping shared by every backend; the device work of a step
//! (persistent `input_ids`/`positions` buffers, forward pass, sampling) goes through
//! [`crate::device::Device`].

use std::collections::BTreeMap;

use crate::batch::{InputBatch, ReqState};
use crate::config::{Config, SpecMethod};
use crate::cudagraph::{self, GraphMode};
use crate::device::{self, Device, RowPlan, Sampled, StepPlan};
use crate::error::SimError;
use crate::proposer::Ngram;
use crate::rejection;
use crate::sampling::SamplingParams;
use crate::scheduler::SchedulerOutput;
use crate::trace::{AttnMetadata, RandomDraws};

/// What one `execute_model` + `sample_tokens` produced.
#[derive(Debug, Clone, Default)]
pub struct RunnerStep {
    pub batch: Vec<usize>,
    pub mode: Option<GraphMode>,
    pub num_tokens_padded: usize,
    pub num_reqs_padded: usize,
    pub cascade_prefix_len: usize,
    pub input_ids: Vec<i64>,
    pub positions: Vec<i64>,
    pub logits_indices: Vec<i64>,
    pub num_sampled_tokens: Vec<u32>,
    pub attn: AttnMetadata,
    pub output_rows: Vec<Vec<i64>>,
    /// Valid sampled tokens per request (placeholders and discarded samples removed).
    pub sampled: BTreeMap<usize, Vec<u32>>,
    /// Proposals per batch row, `None` when the drafter did not run.
    pub drafts: Option<Vec<(usize, Vec<u32>)>>,
    /// `token_ids_cpu` rows after bookkeeping, up to each row's high-water mark.
    pub token_rows: Vec<(usize, Vec<i64>)>,
    /// The generator keys and uniforms of every random-mode row (not discarded).
    pub random_draws: Vec<(usize, RandomDraws)>,
}

/// The runner's state across steps.
pub struct Runner {
    cfg: Config,
    pub batch: InputBatch,
    states: BTreeMap<usize, ReqState>,
    ngram: Option<Ngram>,
    /// Cascade prefix length of the step being executed.
    cascade: usize,
}

impl Runner {
    pub fn new(cfg: &Config) -> Self {
        let ngram = (cfg.method == SpecMethod::Ngram).then_some(Ngram {
            min_n: cfg.prompt_lookup_min as usize,
            max_n: cfg.prompt_lookup_max as usize,
            k: cfg.num_speculative_tokens as usize,
            max_model_len: cfg.max_model_len as usize,
        });
        Runner {
            batch: InputBatch::new(cfg.max_num_seqs as usize, cfg.max_model_len as usize, cfg.blocks_per_row()),
            cfg: cfg.clone(),
            states: BTreeMap::new(),
            ngram,
            cascade: 0,
        }
    }

    /// `_update_states`: applies the scheduler output to the persistent batch.
    pub fn update_states(&mut self, out: &SchedulerOutput, prompts: &dyn Fn(usize) -> Vec<u32>) {
        for &f in &out.finished_req_ids {
            self.states.remove(&f);
            self.batch.remove(f);
        }
        // Unscheduled cached requests (and resumed ones) leave the batch.
        for r in self.batch.members() {
            let keep = out.scheduled(r).is_some() && !out.resumed_reqs.contains(&r);
            if !keep {
                self.batch.remove(r);
            }
        }
        let mut to_add = Vec::new();
        for &r in &out.new_reqs {
            let st = ReqState {
                prompt: prompts(r),
                output: Vec::new(),
                block_ids: out.new_block_ids[&r].clone(),
                num_computed_tokens: out.num_computed[&r],
            };
            self.states.insert(r, st);
            to_add.push(r);
        }
        for &r in &out.cached_reqs {
            let st = self.states.get_mut(&r).expect("cached request has runner state");
            st.num_computed_tokens = out.num_computed[&r];
            let new_ids = out.new_block_ids.get(&r).cloned().unwrap_or_default();
            if out.resumed_reqs.contains(&r) {
                st.block_ids = new_ids.clone();
            } else {
                st.block_ids.extend_from_slice(&new_ids);
            }
            let Some(row) = self.batch.row_of(r) else {
                // Re-entering the batch: written with prompt + outputs only; its
                // scheduled drafts are not written (their slots keep stale values).
                to_add.push(r);
                continue;
            };
            self.batch.num_computed[row] = st.num_computed_tokens;
            self.batch.append_blocks(row, &new_ids);
            if let Some(spec) = out.spec_tokens.get(&r) {
                let start = self.batch.num_tokens_no_spec[row];
                self.batch.write_tokens(row, start, spec);
                self.batch.num_tokens[row] += spec.len();
            }
        }
        for r in to_add {
            let st = self.states[&r].clone();
            self.batch.add(r, &st);
        }
        self.batch.condense();
    }

    /// Plans the step (input preparation arithmetic, graph dispatch, attention metadata),
    /// hands it to the device (stage, forward + sampling, read back), checks the rows, then
    /// runs bookkeeping and the drafter. For a step with at least one scheduled token.
    pub fn execute(
        &mut self,
        step: u64,
        out: &SchedulerOutput,
        device: &mut dyn Device,
        names: &[String],
        sampling: &[SamplingParams],
    ) -> Result<RunnerStep, SimError> {
        let reqs = self.batch.req_ids();
        debug_assert!(!reqs.is_empty() && out.total() > 0);
        let plan = self.plan(step, out, &reqs, names, sampling);
        let contexts: Vec<&[u32]> =
            plan.rows.iter().enumerate().map(|(row, r)| &self.batch.token_ids[row][..r.seq_len()]).collect();
        device.stage(&plan, &contexts)?;
        let rows = device.forward_sample(&plan, &contexts)?;
        let view = device.read_back(&plan)?;
        let sampled = device::check_rows(&plan, &contexts, &rows)?;
        let random_draws = plan.rows.iter().filter(|r| r.is_random()).map(|r| (r.req, rejection::draws(r))).collect();
        let max_seq_len = plan.attn.max_seqlen_k as usize;
        self.bookkeeping(&reqs, &sampled, names)?;
        let drafts = self.propose(&reqs, &sampled, max_seq_len);
        let token_rows = reqs
            .iter()
            .enumerate()
            .map(|(row, &r)| {
                (r, self.batch.token_ids[row][..self.batch.high_water[row]].iter().map(|&t| i64::from(t)).collect())
            })
            .collect();
        Ok(RunnerStep {
            batch: reqs,
            mode: Some(plan.dispatch.mode),
            num_tokens_padded: plan.dispatch.num_tokens_padded,
            num_reqs_padded: view.attn.seqused_k.len(),
            cascade_prefix_len: self.cascade,
            num_sampled_tokens: plan.rows.iter().map(|r| r.num_sampled as u32).collect(),
            input_ids: view.input_ids,
            positions: view.positions,
            logits_indices: view.logits_indices,
            attn: view.attn,
            output_rows: rows,
            sampled,
            drafts,
            token_rows,
            random_draws,
        })
    }

    /// `_prepare_inputs` arithmetic (query start locations, sequence lengths, partial-prefill
    /// discards, the spec-decode logits layout), cascade attention, graph dispatch and the
    /// attention metadata: the [`StepPlan`] every device executes.
    fn plan(
        &mut self,
        step: u64,
        out: &SchedulerOutput,
        reqs: &[usize],
        names: &[String],
        sampling: &[SamplingParams],
    ) -> StepPlan {
        let sched: Vec<usize> = reqs.iter().map(|&r| out.scheduled(r).expect("batch rows are scheduled")).collect();
        let use_spec = !out.spec_tokens.is_empty();
        let rows: Vec<RowPlan> = reqs
            .iter()
            .enumerate()
            .map(|(row, &r)| {
                let computed = self.batch.num_computed[row];
                let num_draft = out.spec_tokens.get(&r).map_or(0, Vec::len);
                RowPlan {
                    req: r,
                    req_id: names[r].clone(),
                    prompt_len: self.batch.num_prompt_tokens[row],
                    num_computed: computed,
                    num_scheduled: sched[row],
                    num_draft,
                    num_sampled: if use_spec { num_draft + 1 } else { 1 },
                    discard: computed + sched[row] < self.states[&r].num_tokens(),
                    sampling: sampling[r],
                }
            })
            .collect();
        let mut cu = vec![0; rows.len() + 1];
        for (row, r) in rows.iter().enumerate() {
            cu[row + 1] = cu[row] + r.num_scheduled;
        }
        let logits_indices = rows
            .iter()
            .enumerate()
            .flat_map(|(row, r)| (cu[row + 1] - r.num_sampled..cu[row + 1]).map(|x| x as i64))
            .collect();
        let computed: Vec<usize> = rows.iter().map(|r| r.num_computed).collect();
        self.cascade = cudagraph::cascade_prefix_len(&self.cfg, out.num_common_prefix_blocks, &computed, &sched);
        let max_query_len = *sched.iter().max().expect("non-empty batch");
        let d = cudagraph::dispatch(&self.cfg, cu[rows.len()], rows.len(), max_query_len, self.cascade > 0);
        let attn = self.attn_metadata(&rows, &cu, d, max_query_len);
        let width = if use_spec { rows.iter().map(|r| r.num_draft).max().unwrap_or(0) + 1 } else { 1 };
        StepPlan {
            step,
            rows,
            cu_seqlens: cu,
            dispatch: d,
            width,
            block_size: self.cfg.block_size as usize,
            attn,
            logits_indices,
        }
    }

    /// FlashAttention metadata; FULL graphs pad the request dimension (`cu_seqlens_q`
    /// repeats the total, `seqused_k` 0, block-table rows -1) and the slot mapping (-1).
    fn attn_metadata(
        &self,
        rows: &[RowPlan],
        cu: &[usize],
        d: cudagraph::Dispatch,
        max_query_len: usize,
    ) -> AttnMetadata {
        let bs = self.cfg.block_size as usize;
        let num_reqs = rows.len();
        let full = d.mode == GraphMode::Full;
        let (n_tok, n_req) = if full { (d.num_tokens_padded, d.num_reqs_padded) } else { (cu[num_reqs], num_reqs) };
        let mut slot_mapping: Vec<i64> = rows
            .iter()
            .enumerate()
            .flat_map(|(row, r)| {
                let table = &self.batch.block_table[row];
                (r.num_computed..r.seq_len()).map(move |pos| table[pos / bs] * bs as i64 + (pos % bs) as i64)
            })
            .collect();
        slot_mapping.resize(n_tok, -1);
        AttnMetadata {
            cu_seqlens_q: (0..=n_req).map(|r| cu[r.min(num_reqs)] as i64).collect(),
            max_seqlen_q: max_query_len as u32,
            seqused_k: (0..n_req).map(|r| rows.get(r).map_or(0, |x| x.seq_len() as i64)).collect(),
            max_seqlen_k: rows.iter().map(RowPlan::seq_len).max().expect("non-empty") as u32,
            block_table: (0..n_req)
                .map(|r| match self.batch.block_table.get(r).filter(|_| r < num_reqs) {
                    Some(row) => row.clone(),
                    None => vec![-1; self.cfg.blocks_per_row()],
                })
                .collect(),
            slot_mapping,
        }
    }

    /// `_bookkeeping_sync`: the whole sampled list reaches the token row (before the
    /// scheduler trims tokens after a stop).
    fn bookkeeping(&mut self, reqs: &[usize], sampled: &Sampled, names: &[String]) -> Result<(), SimError> {
        for (row, &r) in reqs.iter().enumerate() {
            let toks = &sampled[&r];
            if toks.is_empty() {
                continue;
            }
            let start = self.batch.num_tokens_no_spec[row];
            let end = start + toks.len();
            if end > self.cfg.max_model_len as usize {
                // gpu_model_runner.py asserts end_idx <= max_model_len. Reached when a
                // request kept unfinished by min_tokens at max_model_len is preempted and
                // recomputed in full (the waiting branch has no length clamp).
                return Err(SimError::VllmAssertion {
                    step: 0,
                    message: format!(
                        "request {:?}: sampled token ids exceed the max model length ({end} > {}) in _bookkeeping_sync",
                        names[r], self.cfg.max_model_len
                    ),
                });
            }
            self.batch.write_tokens(row, start, toks);
            self.batch.num_tokens_no_spec[row] = end;
            self.batch.num_tokens[row] = end;
            self.states.get_mut(&r).expect("state").output.extend_from_slice(toks);
        }
        Ok(())
    }

    /// The drafter: the batch-wide gate `max_seq_len + k <= max_model_len`, then one
    /// proposal per row (empty for rows that sampled nothing or are full).
    fn propose(&self, reqs: &[usize], sampled: &Sampled, max_seq_len: usize) -> Option<Vec<(usize, Vec<u32>)>> {
        let mml = self.cfg.max_model_len as usize;
        let ng = self.ngram.filter(|_| max_seq_len.saturating_add(self.cfg.num_speculative_tokens as usize) <= mml)?;
        let proposals = reqs
            .iter()
            .enumerate()
            .map(|(row, &r)| {
                let n = self.batch.num_tokens_no_spec[row];
                let eligible = !sampled[&r].is_empty() && n < mml;
                (r, if eligible { ng.propose(&self.batch.token_ids[row][..n]) } else { Vec::new() })
            })
            .collect();
        Some(proposals)
    }
}
