//! The CPU-side bookkeeping of vLLM 0.12.0's `GPUModelRunner`
//! (`vllm/v1/worker/gpu_model_runner.py`): `_update_states`, `_prepare_inputs`, graph
//! dispatch, FlashAttention metadata, sampling through the oracle, `_bookkeeping_sync`
//! and the n-gram drafter with its batch-wide gate.
//!
//! The persistent `input_ids`/`positions` buffers are written only for scheduled tokens,
//! so a padded forward pass reads stale tails (zeros until first written).

use std::collections::BTreeMap;

use crate::batch::{InputBatch, ReqState};
use crate::config::{Config, SpecMethod};
use crate::cudagraph::{self, GraphMode};
use crate::error::SimError;
use crate::oracle::TargetModel;
use crate::proposer::Ngram;
use crate::rejection::{self, RowInput};
use crate::scheduler::SchedulerOutput;
use crate::trace::AttnMetadata;

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
}

/// The runner's state across steps.
pub struct Runner {
    cfg: Config,
    pub batch: InputBatch,
    states: BTreeMap<usize, ReqState>,
    input_ids_gpu: Vec<i64>,
    positions_gpu: Vec<i64>,
    ngram: Option<Ngram>,
}

impl Runner {
    pub fn new(cfg: &Config) -> Self {
        let buf = cfg.max_num_batched_tokens.max(cfg.max_capture_size()) as usize;
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
            input_ids_gpu: vec![0; buf],
            positions_gpu: vec![0; buf],
            ngram,
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

    /// Runs the forward pass (oracle), sampling, bookkeeping and drafting for a step
    /// with at least one scheduled token.
    pub fn execute(
        &mut self,
        out: &SchedulerOutput,
        model: &dyn TargetModel,
        names: &[String],
    ) -> Result<RunnerStep, SimError> {
        let reqs = self.batch.req_ids();
        let num_reqs = reqs.len();
        debug_assert!(num_reqs > 0 && out.total() > 0);
        let bs = self.cfg.block_size as usize;
        let sched: Vec<usize> = reqs.iter().map(|&r| out.scheduled(r).expect("batch rows are scheduled")).collect();
        let total: usize = sched.iter().sum();
        // _prepare_inputs
        let mut cu = vec![0usize; num_reqs + 1];
        let mut slot_mapping = Vec::with_capacity(total);
        let mut seq_lens = vec![0usize; num_reqs];
        let mut discard = vec![false; num_reqs];
        let mut i = 0;
        for (row, &n) in sched.iter().enumerate() {
            cu[row + 1] = cu[row] + n;
            let computed = self.batch.num_computed[row];
            for a in 0..n {
                let pos = computed + a;
                self.positions_gpu[i] = pos as i64;
                self.input_ids_gpu[i] = i64::from(self.batch.token_ids[row][pos]);
                let block = self.batch.block_table[row][pos / bs];
                slot_mapping.push(block * bs as i64 + (pos % bs) as i64);
                i += 1;
            }
            seq_lens[row] = computed + n;
            discard[row] = seq_lens[row] < self.states[&reqs[row]].num_tokens();
        }
        let num_draft: Vec<usize> = reqs.iter().map(|r| out.spec_tokens.get(r).map_or(0, Vec::len)).collect();
        let use_spec = !out.spec_tokens.is_empty();
        let num_sampled: Vec<usize> = num_draft.iter().map(|&d| if use_spec { d + 1 } else { 1 }).collect();
        let mut logits_indices = Vec::new();
        for row in 0..num_reqs {
            for j in 0..num_sampled[row] {
                logits_indices.push((cu[row + 1] - num_sampled[row] + j) as i64);
            }
        }
        let max_query_len = *sched.iter().max().expect("non-empty batch");
        let computed: Vec<usize> = (0..num_reqs).map(|row| self.batch.num_computed[row]).collect();
        let cascade = cudagraph::cascade_prefix_len(&self.cfg, out.num_common_prefix_blocks, &computed, &sched);
        let d = cudagraph::dispatch(&self.cfg, total, num_reqs, max_query_len, cascade > 0);
        let full = d.mode == GraphMode::Full;
        let (n_tok, n_req) = if full { (d.num_tokens_padded, d.num_reqs_padded) } else { (total, num_reqs) };
        // FlashAttention metadata (FULL pads the request dimension).
        let mut attn =
            AttnMetadata {
                cu_seqlens_q: (0..=n_req).map(|r| cu[r.min(num_reqs)] as i64).collect(),
                max_seqlen_q: max_query_len as u32,
                seqused_k: (0..n_req).map(|r| seq_lens.get(r).map_or(0, |&s| s as i64)).collect(),
                max_seqlen_k: *seq_lens.iter().max().expect("non-empty") as u32,
                block_table: (0..n_req)
                    .map(|r| {
                        if r < num_reqs {
                            self.batch.block_table[r].clone()
                        } else {
                            vec![-1; self.cfg.blocks_per_row()]
                        }
                    })
                    .collect(),
                slot_mapping,
            };
        attn.slot_mapping.resize(n_tok, -1);
        // Forward pass + sampling (greedy, through the oracle).
        let max_spec_len = num_draft.iter().copied().max().unwrap_or(0);
        let width = if use_spec { max_spec_len + 1 } else { 1 };
        let mut output_rows = Vec::with_capacity(num_reqs);
        let mut sampled = BTreeMap::new();
        for row in 0..num_reqs {
            let r = reqs[row];
            if discard[row] {
                output_rows.push(vec![-1; width]);
                sampled.insert(r, Vec::new());
                continue;
            }
            let context = &self.batch.token_ids[row][..seq_lens[row]];
            let nd = num_draft[row];
            let drafts: Vec<u32> =
                self.input_ids_gpu[cu[row + 1] - nd..cu[row + 1]].iter().map(|&t| t as u32).collect();
            let input = RowInput {
                req_id: &names[r],
                prompt_len: self.batch.num_prompt_tokens[row],
                context,
                verify_from: seq_lens[row] - nd,
                drafts: &drafts,
            };
            let o = rejection::greedy_row(model, &input, width)?;
            sampled.insert(r, o.iter().filter(|&&t| t >= 0).map(|&t| t as u32).collect());
            output_rows.push(o);
        }
        // _bookkeeping_sync: the whole sampled list reaches the token row.
        for (row, &r) in reqs.iter().enumerate() {
            let toks = &sampled[&r];
            if toks.is_empty() {
                continue;
            }
            let start = self.batch.num_tokens_no_spec[row];
            let end = start + toks.len();
            debug_assert!(end <= self.cfg.max_model_len as usize, "sampled tokens exceed max_model_len");
            self.batch.write_tokens(row, start, toks);
            self.batch.num_tokens_no_spec[row] = end;
            self.batch.num_tokens[row] = end;
            self.states.get_mut(&r).expect("state").output.extend_from_slice(toks);
        }
        // Drafting: batch-wide gate on the longest sequence of the step.
        let max_seq_len = attn.max_seqlen_k as usize;
        let drafts = self
            .ngram
            .filter(|_| max_seq_len + self.cfg.num_speculative_tokens as usize <= self.cfg.max_model_len as usize)
            .map(|ng| {
                reqs.iter()
                    .enumerate()
                    .map(|(row, &r)| {
                        let n = self.batch.num_tokens_no_spec[row];
                        let eligible = !sampled[&r].is_empty() && n < self.cfg.max_model_len as usize;
                        (r, if eligible { ng.propose(&self.batch.token_ids[row][..n]) } else { Vec::new() })
                    })
                    .collect()
            });
        let token_rows = reqs
            .iter()
            .enumerate()
            .map(|(row, &r)| {
                (r, self.batch.token_ids[row][..self.batch.high_water[row]].iter().map(|&t| i64::from(t)).collect())
            })
            .collect();
        Ok(RunnerStep {
            batch: reqs,
            mode: Some(d.mode),
            num_tokens_padded: d.num_tokens_padded,
            num_reqs_padded: n_req,
            cascade_prefix_len: cascade,
            input_ids: self.input_ids_gpu[..d.num_tokens_padded].to_vec(),
            positions: self.positions_gpu[..d.num_tokens_padded].to_vec(),
            logits_indices,
            num_sampled_tokens: num_sampled.iter().map(|&n| n as u32).collect(),
            attn,
            output_rows,
            sampled,
            drafts,
            token_rows,
        })
    }
}
