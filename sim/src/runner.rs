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
        debug_assert!(!reqs.is_empty() && out.total() > 0);
        let inputs = self.prepare_inputs(out, &reqs);
        let computed: Vec<usize> = (0..reqs.len()).map(|row| self.batch.num_computed[row]).collect();
        let cascade = cudagraph::cascade_prefix_len(&self.cfg, out.num_common_prefix_blocks, &computed, &inputs.sched);
        let max_query_len = *inputs.sched.iter().max().expect("non-empty batch");
        let d = cudagraph::dispatch(&self.cfg, inputs.total(), reqs.len(), max_query_len, cascade > 0);
        let attn = self.attn_metadata(&inputs, d, max_query_len);
        let (output_rows, sampled) = self.sample(&reqs, &inputs, model, names)?;
        self.bookkeeping(&reqs, &sampled, names)?;
        let drafts = self.propose(&reqs, &sampled, attn.max_seqlen_k as usize);
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
            num_reqs_padded: attn.seqused_k.len(),
            cascade_prefix_len: cascade,
            input_ids: self.input_ids_gpu[..d.num_tokens_padded].to_vec(),
            positions: self.positions_gpu[..d.num_tokens_padded].to_vec(),
            logits_indices: inputs.logits_indices,
            num_sampled_tokens: inputs.num_sampled.iter().map(|&n| n as u32).collect(),
            attn,
            output_rows,
            sampled,
            drafts,
            token_rows,
        })
    }

    /// `_prepare_inputs`: positions and input ids into the persistent buffers (only the
    /// scheduled slots), slot mapping, sequence lengths, partial-prefill discards, and the
    /// spec-decode logits layout.
    fn prepare_inputs(&mut self, out: &SchedulerOutput, reqs: &[usize]) -> Inputs {
        let bs = self.cfg.block_size as usize;
        let sched: Vec<usize> = reqs.iter().map(|&r| out.scheduled(r).expect("batch rows are scheduled")).collect();
        let mut inp = Inputs { cu: vec![0; reqs.len() + 1], ..Default::default() };
        let mut i = 0;
        for (row, &n) in sched.iter().enumerate() {
            inp.cu[row + 1] = inp.cu[row] + n;
            let computed = self.batch.num_computed[row];
            for pos in computed..computed + n {
                self.positions_gpu[i] = pos as i64;
                self.input_ids_gpu[i] = i64::from(self.batch.token_ids[row][pos]);
                let block = self.batch.block_table[row][pos / bs];
                inp.slot_mapping.push(block * bs as i64 + (pos % bs) as i64);
                i += 1;
            }
            inp.seq_lens.push(computed + n);
            inp.discard.push(computed + n < self.states[&reqs[row]].num_tokens());
        }
        inp.num_draft = reqs.iter().map(|r| out.spec_tokens.get(r).map_or(0, Vec::len)).collect();
        inp.use_spec = !out.spec_tokens.is_empty();
        inp.num_sampled = inp.num_draft.iter().map(|&d| if inp.use_spec { d + 1 } else { 1 }).collect();
        for row in 0..reqs.len() {
            let first = inp.cu[row + 1] - inp.num_sampled[row];
            inp.logits_indices.extend((first..inp.cu[row + 1]).map(|x| x as i64));
        }
        inp.sched = sched;
        inp
    }

    /// FlashAttention metadata; FULL graphs pad the request dimension (`cu_seqlens_q`
    /// repeats the total, `seqused_k` 0, block-table rows -1) and the slot mapping (-1).
    fn attn_metadata(&self, inp: &Inputs, d: cudagraph::Dispatch, max_query_len: usize) -> AttnMetadata {
        let num_reqs = inp.sched.len();
        let full = d.mode == GraphMode::Full;
        let (n_tok, n_req) = if full { (d.num_tokens_padded, d.num_reqs_padded) } else { (inp.total(), num_reqs) };
        let mut slot_mapping = inp.slot_mapping.clone();
        slot_mapping.resize(n_tok, -1);
        AttnMetadata {
            cu_seqlens_q: (0..=n_req).map(|r| inp.cu[r.min(num_reqs)] as i64).collect(),
            max_seqlen_q: max_query_len as u32,
            seqused_k: (0..n_req).map(|r| inp.seq_lens.get(r).map_or(0, |&s| s as i64)).collect(),
            max_seqlen_k: *inp.seq_lens.iter().max().expect("non-empty") as u32,
            block_table: (0..n_req)
                .map(|r| match self.batch.block_table.get(r).filter(|_| r < num_reqs) {
                    Some(row) => row.clone(),
                    None => vec![-1; self.cfg.blocks_per_row()],
                })
                .collect(),
            slot_mapping,
        }
    }

    /// Forward pass + sampling: the rejection sampler's rows (greedy, through the oracle)
    /// and the valid sampled tokens per request. Drafts are read back from the input
    /// buffer, as `_calc_spec_decode_metadata` does.
    fn sample(
        &self,
        reqs: &[usize],
        inp: &Inputs,
        model: &dyn TargetModel,
        names: &[String],
    ) -> Result<(Vec<Vec<i64>>, Sampled), SimError> {
        let width = if inp.use_spec { inp.num_draft.iter().copied().max().unwrap_or(0) + 1 } else { 1 };
        let mut rows = Vec::with_capacity(reqs.len());
        let mut sampled = BTreeMap::new();
        for (row, &r) in reqs.iter().enumerate() {
            if inp.discard[row] {
                rows.push(vec![-1; width]);
                sampled.insert(r, Vec::new());
                continue;
            }
            let (end, nd) = (inp.cu[row + 1], inp.num_draft[row]);
            let drafts: Vec<u32> = self.input_ids_gpu[end - nd..end].iter().map(|&t| t as u32).collect();
            let input = RowInput {
                req_id: &names[r],
                prompt_len: self.batch.num_prompt_tokens[row],
                context: &self.batch.token_ids[row][..inp.seq_lens[row]],
                verify_from: inp.seq_lens[row] - nd,
                drafts: &drafts,
            };
            let o = rejection::greedy_row(model, &input, width)?;
            sampled.insert(r, o.iter().filter(|&&t| t >= 0).map(|&t| t as u32).collect());
            rows.push(o);
        }
        Ok((rows, sampled))
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

/// Valid sampled tokens per request (placeholders and discarded samples removed).
type Sampled = BTreeMap<usize, Vec<u32>>;

/// One step's prepared inputs, per batch row.
#[derive(Debug, Default)]
struct Inputs {
    sched: Vec<usize>,
    cu: Vec<usize>,
    slot_mapping: Vec<i64>,
    seq_lens: Vec<usize>,
    discard: Vec<bool>,
    num_draft: Vec<usize>,
    num_sampled: Vec<usize>,
    use_spec: bool,
    logits_indices: Vec<i64>,
}

impl Inputs {
    fn total(&self) -> usize {
        self.cu.last().copied().unwrap_or(0)
    }
}
