"""Record a specreplay scenario with vLLM 0.12.0's real CPU-side code.

Usage:
    .venv/bin/python driver.py SCENARIO.json -o TRACE.json

What runs for real (imported from the installed vllm==0.12.0 wheel, nothing copied):
  * VllmConfig post-init (capture-size filtering, `_set_cudagraph_sizes`), SpeculativeConfig.
  * `Scheduler` (vllm/v1/core/sched/scheduler.py) with its KVCacheManager / BlockPool,
    prefix-cache block hasher, `schedule()`, `update_from_output()`,
    `update_draft_token_ids()`, `has_requests()`, in EngineCore.step()/post_step() order.
  * `GPUModelRunner.__init__` on the CPU device, then `initialize_kv_cache` (attention
    backend selection -> FlashAttentionBackend, `_check_and_update_cudagraph_mode` which
    rounds capture sizes for spec decode and initialises the CudagraphDispatcher keys,
    FlashAttentionMetadataBuilder construction, input-batch re-init check).
  * Per step: `GPUModelRunner.execute_model` (=> `_update_states`, `_prepare_inputs`,
    `_compute_cascade_attn_prefix_lens` (=> FlashAttention's `use_cascade_attention`;
    its result, `[0][0]` or 0 when None / not computed, is the step's
    `cascade_prefix_len`), `_determine_batch_execution_and_padding` /
    `CudagraphDispatcher.dispatch`,
    `_build_attention_metadata` with the real FlashAttentionMetadataBuilder.build,
    `_preprocess`, `set_forward_context`, `_model_forward`) and `sample_tokens`
    (=> `_sample`, `_bookkeeping_sync`, `RejectionSampler.parse_output`, the real
    drafter gate `max_seq_len + k <= max_model_len`, `propose_draft_token_ids` ->
    `NgramProposer.propose` (numba)), `take_draft_token_ids`.

Stand-ins (everything that needs a GPU), and nothing else:
  1. Platform: vLLM sees no GPU here (UnspecifiedPlatform); `support_static_graph_mode`
     is forced to True so VllmConfig keeps cudagraph_mode / capture sizes as on CUDA.
  2. CUDA streams / events (`torch.cuda.Stream`, `torch.Event`) are no-op dummies;
     `_init_device_properties` sets num_sms = 132 (H100), then the runner's `num_sms`
     is set from the scenario's `num_sms` (default 132); pinned memory is off. `CpuGpuBuffer.gpu` is a
     second CPU tensor, so GPU-side staleness (input_ids/positions tails) is kept.
  3. The model: `runner.model` returns zero hidden states and dummy logits. ModelConfig
     reads a per-(heads) temp copy of model/config.json whose num_attention_heads /
     num_key_value_heads are the scenario's `num_attention_heads` / `num_kv_heads`
     (default 16 / 8, Qwen3-0.6B), so `runner.num_query_heads` is real; the attention
     layer registered for KV-cache setup is a minimal AttentionLayerBase whose
     FullAttentionSpec has num_kv_heads = the scenario's `num_kv_heads`, and that reports
     FlashAttentionBackend (FA2 support level on CPU: UNIFORM_BATCH; on an H100 FA3 gives
     ALWAYS, which resolves FULL_AND_PIECEWISE identically). No KV tensors are allocated
     (`initialize_kv_cache_tensors` is skipped).
  4. Sampling: `runner.sampler` / `runner.rejection_sampler` (Triton/torch kernels) are
     replaced by the greedy rule on the scenario's oracle: the target token at a sampled
     position is the oracle's token after (request tokens before num_computed_tokens) +
     (this step's input_ids of the row up to and including that position); drafts are
     compared as RejectionSampler does (taken from spec_decode_metadata.draft_token_ids,
     i.e. read back from input_ids); accept while equal, then the first mismatching target
     or the bonus token, padded with -1 to max_spec_len + 1. Discarded partial-prefill rows
     are all -1 and never query the oracle. Logits processors (e.g. min_tokens stop-token
     masking) are not modelled: the oracle is the post-processing argmax.
  5. Engine core: a single-process EngineCore loop (schedule -> execute_model ->
     sample_tokens -> update_from_output -> take_draft_token_ids ->
     update_draft_token_ids), requests built with Request.from_engine_core_request; no
     frontend (no tokenizer/detokenizer, no stop strings).
  6. Distributed: a world-size-1 gloo process group (needed by get_pp_group()).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import atexit
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from oracle import Oracle  # noqa: E402

MODEL_DIR = os.path.join(HERE, "model")
LAYER_NAME = "model.layers.0.self_attn.attn"

# Cascade-attention inputs of the trace contract (sim/src/config.rs) and their defaults.
CASCADE_DEFAULTS = {
    "num_attention_heads": 16,
    "num_kv_heads": 8,
    "num_sms": 132,
    "disable_cascade_attn": False,
}


def full_config(cfg: dict) -> dict:
    """The scenario config with the cascade fields' defaults filled in."""
    out = dict(cfg)
    for k, v in CASCADE_DEFAULTS.items():
        out.setdefault(k, v)
    return out


_MODEL_DIRS: dict[tuple[int, int], str] = {}
_MODEL_ROOT: list[str] = []


def model_dir(num_heads: int, num_kv_heads: int) -> str:
    """A temp copy of model/config.json with the given query / KV head counts
    (one per head pair and process; removed at exit)."""
    key = (int(num_heads), int(num_kv_heads))
    d = _MODEL_DIRS.get(key)
    if d is not None:
        return d
    if not _MODEL_ROOT:
        root = tempfile.mkdtemp(prefix="specreplay-model-")
        _MODEL_ROOT.append(root)
        atexit.register(shutil.rmtree, root, True)
    d = os.path.join(_MODEL_ROOT[0], f"h{key[0]}_kv{key[1]}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(MODEL_DIR, "config.json")) as f:
        mc = json.load(f)
    mc["num_attention_heads"] = key[0]
    mc["num_key_value_heads"] = key[1]
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(mc, f, indent=2)
    _MODEL_DIRS[key] = d
    return d


# ---------------------------------------------------------------- stand-ins (GPU only)
class _DummyStream:
    def __init__(self, *a, **k):
        pass

    def wait_stream(self, *a, **k):
        pass

    def synchronize(self):
        pass


class _DummyEvent:
    def __init__(self, *a, **k):
        pass

    def record(self, *a, **k):
        pass

    def synchronize(self):
        pass

    def wait(self, *a, **k):
        pass


_PATCHED = False


def _patch_platform():
    global _PATCHED
    if _PATCHED:
        return
    _PATCHED = True
    from vllm.platforms import current_platform

    type(current_platform).support_static_graph_mode = classmethod(lambda cls: True)
    torch.cuda.Stream = _DummyStream  # type: ignore[assignment]
    torch.Event = _DummyEvent  # type: ignore[assignment]
    import vllm.v1.worker.gpu_model_runner as gmr

    gmr.is_pin_memory_available = lambda: False

    def _props(self):
        self.device_properties = None
        self.num_sms = 132  # an H100 SXM; only read by the cascade-attention heuristic

    gmr.GPUModelRunner._init_device_properties = _props


_DIST_READY = False


def _init_dist():
    global _DIST_READY
    if _DIST_READY:
        return
    from vllm.distributed.parallel_state import (
        ensure_model_parallel_initialized,
        init_distributed_environment,
    )

    fd, path = tempfile.mkstemp(prefix="specreplay-dist-")
    os.close(fd)
    os.unlink(path)
    init_distributed_environment(
        world_size=1,
        rank=0,
        distributed_init_method=f"file://{path}",
        local_rank=0,
        backend="gloo",
    )
    ensure_model_parallel_initialized(1, 1)
    _DIST_READY = True


class _StubModel(torch.nn.Module):
    """Stand-in for the transformer: zero hidden states, dummy logits."""

    def forward(self, input_ids=None, positions=None, intermediate_tensors=None,
                inputs_embeds=None, **kw):
        n = input_ids.shape[0] if input_ids is not None else inputs_embeds.shape[0]
        return torch.zeros((n, 4), dtype=torch.float32)

    def compute_logits(self, hidden_states):
        return torch.zeros((hidden_states.shape[0], 1), dtype=torch.float32)


def _make_attn_layer_cls():
    from vllm.attention.layer import AttentionLayerBase
    from vllm.v1.attention.backends.flash_attn import FlashAttentionBackend

    class _FakeAttnLayer(AttentionLayerBase):
        def __init__(self, spec):
            self.spec = spec
            self.kv_cache = [torch.empty(0)]

        def get_attn_backend(self):
            return FlashAttentionBackend

        def get_kv_cache_spec(self, vllm_config):
            return self.spec

    return _FakeAttnLayer


# ---------------------------------------------------------------- oracle samplers
class _TrackedArray(np.ndarray):
    """ndarray view that marks every index written through `arr[key] = value`
    (observation only: memory is shared with InputBatch.token_ids_cpu_tensor)."""

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        w = getattr(self, "_written", None)
        if w is not None:
            w[key] = True


class OracleSamplers:
    """Greedy sampling on the oracle (stand-in for Sampler / RejectionSampler)."""

    def __init__(self, runner, oracle: Oracle):
        self.runner = runner
        self.oracle = oracle
        self.last_output: list[list[int]] | None = None

    def _row_ctx(self, r):
        rn = self.runner
        ib = rn.input_batch
        req_id = ib.req_ids[r]
        st = rn.requests[req_id]
        prompt = list(st.prompt_token_ids)
        before = (prompt + list(st.output_token_ids))[: int(ib.num_computed_tokens_cpu[r])]
        s = int(rn.query_start_loc.np[r])
        e = int(rn.query_start_loc.np[r + 1])
        span = [int(x) for x in rn.input_ids.cpu[s:e].tolist()]
        return req_id, len(prompt), before, span

    def plain(self, logits=None, sampling_metadata=None, **kw):
        from vllm.v1.outputs import SamplerOutput

        rn = self.runner
        n = rn.input_batch.num_reqs
        out = []
        for r in range(n):
            if rn.discard_request_mask.np[r]:
                out.append([-1])
                continue
            req_id, plen, before, span = self._row_ctx(r)
            out.append([self.oracle.token_after(req_id, plen, before + span)])
        self.last_output = out
        return SamplerOutput(
            sampled_token_ids=torch.tensor(out, dtype=torch.int32), logprobs_tensors=None
        )

    def rejection(self, metadata, draft_probs, logits, sampling_metadata):
        from vllm.v1.outputs import SamplerOutput

        rn = self.runner
        n = rn.input_batch.num_reqs
        width = metadata.max_spec_len + 1
        drafts_flat = [int(x) for x in metadata.draft_token_ids.tolist()]
        out = []
        off = 0
        for r in range(n):
            nd = int(metadata.num_draft_tokens[r])
            d = drafts_flat[off: off + nd]
            off += nd
            row = [-1] * width
            if rn.discard_request_mask.np[r]:
                out.append(row)
                continue
            req_id, plen, before, span = self._row_ctx(r)
            L = len(span)
            all_ok = True
            for j in range(nd):
                t = self.oracle.token_after(req_id, plen, before + span[: L - nd + j])
                row[j] = t
                if t != d[j]:
                    all_ok = False
                    break
            if all_ok:
                row[nd] = self.oracle.token_after(req_id, plen, before + span)
            out.append(row)
        self.last_output = out
        return SamplerOutput(
            sampled_token_ids=torch.tensor(out, dtype=torch.int32), logprobs_tensors=None
        )


# ---------------------------------------------------------------- engine construction
def build_vllm_config(cfg: dict):
    from vllm.config import (
        CacheConfig,
        CompilationConfig,
        DeviceConfig,
        ModelConfig,
        SchedulerConfig,
        SpeculativeConfig,
        VllmConfig,
    )

    cfg = full_config(cfg)
    mc = ModelConfig(
        model=model_dir(cfg["num_attention_heads"], cfg["num_kv_heads"]),
        skip_tokenizer_init=True,
        max_model_len=cfg["max_model_len"],
        dtype="bfloat16",
        seed=0,
        disable_cascade_attn=bool(cfg["disable_cascade_attn"]),
    )
    sc = SchedulerConfig(
        max_num_seqs=cfg["max_num_seqs"],
        max_num_batched_tokens=cfg["max_num_batched_tokens"],
        max_model_len=cfg["max_model_len"],
        enable_chunked_prefill=cfg.get("enable_chunked_prefill", True),
        is_encoder_decoder=False,
    )
    cc = CacheConfig(
        block_size=cfg["block_size"],
        enable_prefix_caching=cfg.get("enable_prefix_caching", True),
    )
    spec = None
    if cfg.get("method", "ngram") == "ngram":
        spec = SpeculativeConfig(
            method="ngram",
            num_speculative_tokens=cfg["num_speculative_tokens"],
            prompt_lookup_min=cfg["prompt_lookup_min"],
            prompt_lookup_max=cfg["prompt_lookup_max"],
        )
    mode = cfg.get("cudagraph_mode", "FULL_AND_PIECEWISE")
    sizes = list(cfg["cudagraph_capture_sizes"])
    if mode == "NONE" or not sizes:
        comp = CompilationConfig(cudagraph_mode="NONE")
    else:
        comp = CompilationConfig(cudagraph_mode=mode, cudagraph_capture_sizes=sizes)
    vc = VllmConfig(
        model_config=mc,
        cache_config=cc,
        scheduler_config=sc,
        device_config=DeviceConfig(device="cpu"),
        speculative_config=spec,
        compilation_config=comp,
    )
    vc.cache_config.num_gpu_blocks = cfg["num_gpu_blocks"]
    vc.cache_config.num_cpu_blocks = 0
    return vc


class Engine:
    def __init__(self, scen: dict):
        _patch_platform()
        from vllm.config import set_current_vllm_config
        from vllm.v1.core.sched.scheduler import Scheduler
        from vllm.v1.kv_cache_interface import (
            FullAttentionSpec,
            KVCacheConfig,
            KVCacheGroupSpec,
        )
        from vllm.v1.structured_output import StructuredOutputManager
        from vllm.v1.worker.gpu_model_runner import GPUModelRunner

        self.scen = scen
        cfg = full_config(scen["config"])
        self.cfg = cfg
        self.oracle = Oracle(scen["oracle"])
        self.vc = vc = build_vllm_config(cfg)
        bs = cfg["block_size"]
        spec = FullAttentionSpec(
            block_size=bs, num_kv_heads=cfg["num_kv_heads"], head_size=128,
            dtype=torch.bfloat16,
        )
        self.kv_cache_config = KVCacheConfig(
            num_blocks=cfg["num_gpu_blocks"],
            kv_cache_tensors=[],
            kv_cache_groups=[KVCacheGroupSpec([LAYER_NAME], spec)],
        )
        with set_current_vllm_config(vc):
            _init_dist()
            fake_layer = _make_attn_layer_cls()(spec)
            vc.compilation_config.static_forward_context[LAYER_NAME] = fake_layer
            runner = GPUModelRunner(vc, torch.device("cpu"))
            # the SM count read by FlashAttention's use_cascade_attention cost model
            runner.num_sms = int(cfg["num_sms"])
            runner.model = _StubModel()
            runner.initialize_kv_cache_tensors = lambda *a, **k: {}
            runner.initialize_kv_cache(self.kv_cache_config)
        self.runner = runner
        self.samplers = OracleSamplers(runner, self.oracle)
        runner.sampler = self.samplers.plain
        runner.rejection_sampler = self.samplers.rejection
        # Make "highest written position" observable in token_ids_cpu without changing
        # its contents (vLLM zero-initialises it, and never-written zeros can be read
        # back as draft input_ids): a view that records every written index.
        ib = runner.input_batch
        tracked = ib.token_ids_cpu.view(_TrackedArray)
        tracked._written = np.zeros(tracked.shape, dtype=bool)
        ib.token_ids_cpu = tracked

        self.effective_sizes = list(vc.compilation_config.cudagraph_capture_sizes or [])
        self.effective_mode = str(vc.compilation_config.cudagraph_mode.name)

        self.structured_output_manager = StructuredOutputManager(vc)
        self.scheduler = Scheduler(
            vllm_config=vc,
            kv_cache_config=self.kv_cache_config,
            structured_output_manager=self.structured_output_manager,
            include_finished_set=False,
            log_stats=False,
            block_size=bs,
        )
        self.use_spec_decode = vc.speculative_config is not None
        self.block_hasher = None
        if vc.cache_config.enable_prefix_caching:
            from vllm.utils.hashing import get_hash_fn_by_name
            from vllm.v1.core.kv_cache_utils import (
                get_request_block_hasher,
                init_none_hash,
            )

            fn = get_hash_fn_by_name(vc.cache_config.prefix_caching_hash_algo)
            init_none_hash(fn)
            self.block_hasher = get_request_block_hasher(bs, fn)
        self._install_probes()

    # -- observation hooks (wrap real methods; they still run) --
    def _install_probes(self):
        rn = self.runner
        probe = self.probe = {}

        orig_det = rn._determine_batch_execution_and_padding

        def det(*a, **k):
            res = orig_det(*a, **k)
            probe["cg"] = res
            probe["num_reqs"] = k.get("num_reqs")
            return res

        rn._determine_batch_execution_and_padding = det

        orig_prep = rn._prepare_inputs

        def prep(so, nst):
            res = orig_prep(so, nst)
            probe["logits_indices"] = [int(x) for x in res[0].tolist()]
            probe["spec_meta"] = res[1]
            probe["num_reqs_prep"] = rn.input_batch.num_reqs
            return res

        rn._prepare_inputs = prep

        orig_casc = rn._compute_cascade_attn_prefix_lens

        def casc(*a, **k):
            res = orig_casc(*a, **k)
            probe["cascade_attn_prefix_lens"] = res
            return res

        rn._compute_cascade_attn_prefix_lens = casc

        for group in rn.attn_groups[0]:
            builder = group.get_metadata_builder()
            orig_build = builder.build

            def build(common_prefix_len, common_attn_metadata, *a, _ob=orig_build, **k):
                md = _ob(common_prefix_len, common_attn_metadata, *a, **k)
                probe["attn"] = {
                    "cu_seqlens_q": [int(x) for x in md.query_start_loc.tolist()],
                    "max_seqlen_q": int(md.max_query_len),
                    "seqused_k": [int(x) for x in md.seq_lens.tolist()],
                    "max_seqlen_k": int(md.max_seq_len),
                    "block_table": [[int(x) for x in row] for row in md.block_table.tolist()],
                    "slot_mapping": [int(x) for x in md.slot_mapping.tolist()],
                }
                probe["common_prefix_len"] = common_prefix_len
                return md

            builder.build = build

        sch = self.scheduler
        orig_pre = sch._preempt_request

        def pre(request, ts):
            probe.setdefault("preempted", []).append(request.request_id)
            return orig_pre(request, ts)

        sch._preempt_request = pre

    def make_request(self, r: dict, idx: int):
        from vllm.sampling_params import SamplingParams
        from vllm.v1.engine import EngineCoreRequest
        from vllm.v1.request import Request

        sp = SamplingParams(
            temperature=0.0,
            max_tokens=r["max_tokens"],
            stop_token_ids=list(r.get("stop_token_ids", [])),
            min_tokens=r.get("min_tokens", 0),
            ignore_eos=r.get("ignore_eos", False),
        )
        ecr = EngineCoreRequest(
            request_id=r["req_id"],
            prompt_token_ids=list(r["prompt_token_ids"]),
            mm_features=None,
            sampling_params=sp,
            pooling_params=None,
            eos_token_id=r.get("eos_token_id"),
            arrival_time=float(idx),
            lora_request=None,
            cache_salt=None,
            data_parallel_rank=None,
        )
        return Request.from_engine_core_request(ecr, self.block_hasher)

    # -- the run --
    def run(self) -> dict:
        sch = self.scheduler
        rn = self.runner
        reqs = list(self.scen["requests"])
        pending = sorted(range(len(reqs)), key=lambda i: (reqs[i].get("arrival_step", 1), i))
        steps = []
        outputs: dict[str, list[int]] = {}
        step = 0
        added = 0
        stuck = 0
        while True:
            step += 1
            while pending and reqs[pending[0]].get("arrival_step", 1) <= step:
                i = pending.pop(0)
                sch.add_request(self.make_request(reqs[i], added))
                added += 1
            busy = len(sch.waiting) + len(sch.running) > 0
            if not busy and not pending:
                break
            if step > self.max_steps:
                raise RuntimeError("run does not end")
            self.probe.clear()
            rec = self._engine_step(step, busy)
            steps.append(rec)
            stuck = stuck + 1 if busy and not rec.get("total_num_scheduled_tokens") else 0
            if stuck >= 50:
                raise RuntimeError(
                    f"vLLM livelock: nothing scheduled for 50 steps (up to step {step}) "
                    "with requests waiting or running"
                )
        for r in reqs:
            outputs[r["req_id"]] = self.final_outputs.get(r["req_id"], [])
        return {"steps": steps, "outputs": outputs}

    final_outputs: dict = {}
    max_steps = 20000

    def _engine_step(self, step: int, busy: bool) -> dict:
        sch = self.scheduler
        rn = self.runner
        probe = self.probe
        if not sch.has_requests():
            return {"step": step, "idle": True}
        so = sch.schedule()
        block_ids = {}
        for rid in so.num_scheduled_tokens:
            block_ids[rid] = [int(b) for b in sch.kv_cache_manager.get_block_ids(rid)[0]]
        num_computed = {}
        for nr in so.scheduled_new_reqs:
            num_computed[nr.req_id] = int(nr.num_computed_tokens)
        cr = so.scheduled_cached_reqs
        for i, rid in enumerate(cr.req_ids):
            num_computed[rid] = int(cr.num_computed_tokens[i])

        self.samplers.last_output = None
        mo = rn.execute_model(so)
        if mo is None:
            mo = rn.sample_tokens(None)
        drafts_ran = rn._draft_token_ids is not None
        drafts = {}
        if drafts_ran:
            for rid, d in zip(rn.input_batch.req_ids, rn._draft_token_ids):
                drafts[rid] = [int(x) for x in d]
        batch_req_ids = list(rn.input_batch.req_ids)
        tok_rows = {}
        for i, rid in enumerate(batch_req_ids):
            row = np.asarray(rn.input_batch.token_ids_cpu)[i]
            nz = np.nonzero(rn.input_batch.token_ids_cpu._written[i])[0]
            end = int(nz[-1]) + 1 if len(nz) else 0
            tok_rows[rid] = [int(x) for x in row[:end]]

        eco = sch.update_from_output(so, mo)
        finished = []
        for _client, outs in eco.items():
            for o in outs.outputs:
                self.final_outputs.setdefault(o.request_id, []).extend(
                    int(x) for x in o.new_token_ids
                )
                if o.finish_reason is not None:
                    finished.append(o.request_id)
        # post_step
        if self.use_spec_decode and so.total_num_scheduled_tokens > 0:
            dt = rn.take_draft_token_ids()
            if dt is not None:
                sch.update_draft_token_ids(dt)
        num_free = int(sch.kv_cache_manager.block_pool.get_num_free_blocks())

        if not busy:
            return {"step": step, "idle": True}

        rec = {
            "step": step,
            "idle": False,
            "num_scheduled_tokens": {k: int(v) for k, v in so.num_scheduled_tokens.items()},
            "total_num_scheduled_tokens": int(so.total_num_scheduled_tokens),
            "scheduled_spec_decode_tokens": {
                k: [int(x) for x in v] for k, v in so.scheduled_spec_decode_tokens.items()
            },
            "num_computed_tokens": num_computed,
            "preempted_req_ids": list(probe.get("preempted", [])),
            "finished_req_ids": finished,
            "block_ids": block_ids,
            "num_free_blocks": num_free,
            "batch_req_ids": batch_req_ids,
            "cudagraph_mode": "NONE",
            "num_padded_tokens": 0,
            "num_reqs_padded": 0,
            "cascade_prefix_len": 0,
            "input_ids": [],
            "positions": [],
            "logits_indices": [],
            "num_sampled_tokens": [],
            "attn": {
                "cu_seqlens_q": [], "max_seqlen_q": 0, "seqused_k": [],
                "max_seqlen_k": 0, "block_table": [], "slot_mapping": [],
            },
            "output_token_ids": [],
            "draft_token_ids": drafts,
            "token_ids_cpu": tok_rows,
            "context": None,
        }
        if so.total_num_scheduled_tokens > 0:
            mode, desc = probe["cg"][0], probe["cg"][1]
            num_reqs = probe["num_reqs_prep"]
            npad = int(desc.num_tokens)
            rec["cudagraph_mode"] = mode.name
            rec["num_padded_tokens"] = npad
            rec["num_reqs_padded"] = int(desc.num_reqs if desc.num_reqs is not None else num_reqs)
            rec["input_ids"] = [int(x) for x in rn.input_ids.gpu[:npad].tolist()]
            rec["positions"] = [int(x) for x in rn.positions.gpu[:npad].tolist()]
            rec["logits_indices"] = probe["logits_indices"]
            sm = probe["spec_meta"]
            if sm is None:
                rec["num_sampled_tokens"] = [1] * num_reqs
            else:
                rec["num_sampled_tokens"] = [int(x) + 1 for x in sm.num_draft_tokens]
            rec["attn"] = probe["attn"]
            # cascade_attn_prefix_lens[0][0] as execute_model computed it (None: not used,
            # or never computed because cascade attention is disabled)
            cal = probe.get("cascade_attn_prefix_lens")
            cpl = int(cal[0][0]) if cal else 0
            if cpl != int(probe.get("common_prefix_len") or 0):
                raise RuntimeError(
                    f"step {step}: cascade_attn_prefix_lens {cal} but the metadata "
                    f"builder got common_prefix_len {probe.get('common_prefix_len')}"
                )
            rec["cascade_prefix_len"] = cpl
            rec["output_token_ids"] = self.samplers.last_output or []
        return rec


def record(scen: dict) -> dict:
    eng = Engine(scen)
    eng.final_outputs = {}
    res = eng.run()
    cfg = full_config(scen["config"])
    notes = []
    if eng.effective_sizes != list(cfg["cudagraph_capture_sizes"]) and cfg.get(
        "cudagraph_mode", "FULL_AND_PIECEWISE"
    ) != "NONE":
        notes.append(
            f"vLLM's effective capture sizes {eng.effective_sizes} differ from the "
            f"scenario's {cfg['cudagraph_capture_sizes']}"
        )
    if eng.effective_mode != cfg.get("cudagraph_mode", "FULL_AND_PIECEWISE"):
        notes.append(f"vLLM resolved cudagraph_mode to {eng.effective_mode}")
    steps = res["steps"]
    for s in steps:
        for n in s.pop("_notes", []):
            notes.append(f"step {s['step']}: {n}")
    return {
        "format": "specreplay-trace",
        "version": 1,
        "recorded_by": "vllm 0.12.0",
        "notes": notes,
        "config": full_config(scen["config"]),
        "requests": scen["requests"],
        "oracle": scen["oracle"],
        "steps": steps,
        "outputs": res["outputs"],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("scenario")
    ap.add_argument("-o", "--out", required=True)
    a = ap.parse_args(argv)
    with open(a.scenario) as f:
        scen = json.load(f)
    trace = record(scen)
    with open(a.out, "w") as f:
        json.dump(trace, f)
        f.write("\n")


if __name__ == "__main__":
    main()
