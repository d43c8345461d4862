"""Record a specreplay scenario with nano-vllm's own engine code (commit 2f21442), on CPU.

Usage:
    .venv/bin/python driver.py SCENARIO.json -o TRACE.json

The nano-vllm source is read from `$NANOVLLM_SRC` (default: `upstream/` beside this file,
made by setup.sh); nothing of it is copied into this repository.

What runs for real (nano-vllm's files, imported from the checkout):
  * `nanovllm/config.py` `Config` (its start-up asserts: kvcache_block_size % 256 == 0,
    max_num_batched_tokens >= max_model_len), `nanovllm/sampling_params.py`.
  * `nanovllm/engine/sequence.py` `Sequence` (with its class attribute block_size = 256).
  * `nanovllm/engine/block_manager.py` `BlockManager` (xxhash + numpy, as upstream).
  * `nanovllm/engine/scheduler.py` `Scheduler`: `add`, `schedule`, `preempt`,
    `postprocess`, `is_finished`.
  * `nanovllm/engine/model_runner.py` `ModelRunner.prepare_prefill` /
    `prepare_decode` / `prepare_block_tables` and `nanovllm/utils/context.py`
    (`set_context` / `get_context`): the recorded `Context` is the one they build.

Stand-ins (GPU or model work), and nothing else:
  1. Imports: `torch` is a stub whose `tensor(...)` keeps the Python list (`.cuda()`
     returns it), so the model runner's list building runs unchanged; `torch.distributed`,
     `transformers.AutoConfig` (max_position_embeddings 2**31, i.e. no cap of
     max_model_len), `nanovllm.models.qwen3`, `nanovllm.layers.sampler`,
     `nanovllm.utils.loader` are empty stubs. The `nanovllm` package is registered
     without running its `__init__` (which would import the LLM front end).
  2. `ModelRunner` is created without `__init__` (no NCCL, CUDA, weights, KV tensors,
     warm-up or graph capture); only `block_size = config.kvcache_block_size` is set.
     `config.num_kvcache_blocks` is the scenario's `num_gpu_blocks` (upstream sizes it
     from GPU memory). The run is eager (`enforce_eager`): CUDA graphs would only pad
     decode inputs.
  3. The forward pass: the first attention layer's `store_kvcache` asserts
     `slot_mapping.numel() == N` (`layers/attention.py:38`): checked here on the built
     Context. The LM head (`layers/embed_head.py:59`) reads hidden row
     `cu_seqlens_q[1:] - 1` per sequence in prefill (torch indexing, -1 = last row; an
     empty batch raises) and row i in decode; the token of a row is the oracle's greedy
     token after that row's context (`oracle.py` of conformance/vllm, bit-exact with
     sim/src/oracle.rs). The sampler (random, temperature > 0 only) is replaced by it.
  4. Engine loop (`llm_engine.py step`): requests are added at their `arrival_step`
     (upstream adds all before the first step); a step with nothing waiting or running is
     recorded idle; `schedule` -> forward -> `postprocess`. The engine's one `eos` is the
     requests' common `eos_token_id` (-1 when none); a request without one gets
     `ignore_eos=True`. Preemptions are observed by wrapping `Scheduler.preempt`.

A state in which nano-vllm would fail an assertion or raise is reported as
`NanoCrash(step, where)`; `run.py` compares it with the simulator's NanoAssertion error.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.append(os.path.join(HERE, "..", "vllm"))  # oracle.py (shared with the vLLM harness)

from oracle import Oracle  # noqa: E402

COMMIT = "2f214426530e2841e7d24c73ee0dfa914d62df56"
RECORDED_BY = "nano-vllm 2f21442"


class NanoCrash(Exception):
    """nano-vllm would raise here (an assert or an indexing error)."""

    def __init__(self, step: int, where: str):
        super().__init__(f"step {step}: {where}")
        self.step = step
        self.where = where


# ---------------------------------------------------------------------------- stubs
class _Tensor(list):
    """What `torch.tensor(list, ...)` becomes: the list itself, `.cuda()` a no-op."""

    def cuda(self, non_blocking=False):
        return self


def _install_stubs(src: str):
    torch = types.ModuleType("torch")
    torch.Tensor = _Tensor
    torch.int64, torch.int32, torch.float32 = "int64", "int32", "float32"

    def tensor(data, dtype=None, pin_memory=False):
        return _Tensor(data)

    class _NoGrad:
        def __call__(self, f):
            return f

    torch.tensor = tensor
    torch.inference_mode = lambda: _NoGrad()
    dist = types.ModuleType("torch.distributed")
    torch.distributed = dist
    transformers = types.ModuleType("transformers")

    class AutoConfig:
        max_position_embeddings = 2**31

        @classmethod
        def from_pretrained(cls, path):
            return cls()

    transformers.AutoConfig = AutoConfig
    pkg = types.ModuleType("nanovllm")
    pkg.__path__ = [os.path.join(src, "nanovllm")]
    qwen3 = types.ModuleType("nanovllm.models.qwen3")
    qwen3.Qwen3ForCausalLM = object
    sampler = types.ModuleType("nanovllm.layers.sampler")
    sampler.Sampler = object
    loader = types.ModuleType("nanovllm.utils.loader")
    loader.load_model = lambda *a, **k: None
    sys.modules.update({
        "torch": torch, "torch.distributed": dist, "transformers": transformers,
        "nanovllm": pkg, "nanovllm.models.qwen3": qwen3, "nanovllm.layers.sampler": sampler,
        "nanovllm.utils.loader": loader,
    })


_NANO = {}


def nano():
    """nano-vllm's modules, imported once from $NANOVLLM_SRC."""
    if not _NANO:
        src = os.environ.get("NANOVLLM_SRC", os.path.join(HERE, "upstream"))
        if not os.path.isfile(os.path.join(src, "nanovllm", "engine", "block_manager.py")):
            raise SystemExit(f"nano-vllm source not found at {src}: run conformance/nano/setup.sh "
                             "or set NANOVLLM_SRC")
        _install_stubs(src)
        for m in ["config", "sampling_params", "engine.sequence", "engine.block_manager",
                  "engine.scheduler", "engine.model_runner", "utils.context"]:
            _NANO[m.split(".")[-1]] = importlib.import_module("nanovllm." + m)
        _NANO["model_dir"] = tempfile.mkdtemp(prefix="nanovllm-model-")  # Config asserts isdir
    return _NANO


# ---------------------------------------------------------------------------- record
def _step_dict(step: int) -> dict:
    """A step with every field of sim/src/trace.rs `Step` at its empty value."""
    return {
        "step": step, "idle": False, "num_scheduled_tokens": {}, "total_num_scheduled_tokens": 0,
        "scheduled_spec_decode_tokens": {}, "num_computed_tokens": {}, "preempted_req_ids": [],
        "finished_req_ids": [], "block_ids": {}, "num_free_blocks": 0, "batch_req_ids": [],
        "cudagraph_mode": "", "num_padded_tokens": 0, "num_reqs_padded": 0, "cascade_prefix_len": 0,
        "input_ids": [], "positions": [], "logits_indices": [], "num_sampled_tokens": [],
        "attn": {"cu_seqlens_q": [], "max_seqlen_q": 0, "seqused_k": [], "max_seqlen_k": 0,
                 "block_table": [], "slot_mapping": []},
        "output_token_ids": [], "draft_token_ids": {}, "token_ids_cpu": {}, "context": None,
    }


def _lst(x):
    return None if x is None else [list(r) if isinstance(r, list) else r for r in x]


def record(scen: dict) -> dict:
    """Runs `scen` through nano-vllm's engine code; returns the trace dict."""
    m = nano()
    cfg_in = scen["config"]
    reqs = scen["requests"]
    eoses = {r["eos_token_id"] for r in reqs if r.get("eos_token_id") is not None}
    if len(eoses) > 1:
        raise ValueError(f"nano-vllm has one eos per engine; the requests name {sorted(eoses)}")
    for r in reqs:
        if r.get("stop_token_ids") or r.get("min_tokens", 0):
            raise ValueError("nano-vllm has no stop_token_ids / min_tokens")
    config = m["config"].Config(
        m["model_dir"], max_num_batched_tokens=cfg_in["max_num_batched_tokens"],
        max_num_seqs=cfg_in["max_num_seqs"], max_model_len=cfg_in["max_model_len"],
        enforce_eager=True, kvcache_block_size=cfg_in["block_size"])
    config.eos = eoses.pop() if eoses else -1
    config.num_kvcache_blocks = cfg_in["num_gpu_blocks"]
    sched = m["scheduler"].Scheduler(config)
    runner = m["model_runner"].ModelRunner.__new__(m["model_runner"].ModelRunner)
    runner.block_size = config.kvcache_block_size
    get_context, reset_context = m["context"].get_context, m["context"].reset_context
    oracle = Oracle(scen["oracle"])

    preempted = []
    orig_preempt = sched.preempt

    def preempt(seq):
        preempted.append(seq)
        orig_preempt(seq)

    sched.preempt = preempt

    Sequence, SamplingParams = m["sequence"].Sequence, m["sampling_params"].SamplingParams
    order = sorted(range(len(reqs)), key=lambda i: reqs[i].get("arrival_step", 1))
    seqs, name = {}, {}
    for i in order:
        r = reqs[i]
        sp = SamplingParams(temperature=1.0, max_tokens=r["max_tokens"],
                            ignore_eos=bool(r.get("ignore_eos", False)) or r.get("eos_token_id") is None)
        s = Sequence(list(r["prompt_token_ids"]), sp)
        seqs[i] = s
        name[id(s)] = r["req_id"]
    pending = list(order)
    steps = []
    step = 0
    while True:
        step += 1
        if step > 1_000_000:
            raise RuntimeError("run does not end")
        while pending and reqs[pending[0]].get("arrival_step", 1) == step:
            sched.add(seqs[pending.pop(0)])
        if sched.is_finished():
            if not pending:
                break
            steps.append({"step": step, "idle": True})
            continue
        preempted.clear()
        try:
            batch, is_prefill = sched.schedule()
        except AssertionError:
            raise NanoCrash(step, "scheduler.py:56 assert scheduled_seqs") from None
        rec = _step_dict(step)
        rec["preempted_req_ids"] = [name[id(s)] for s in preempted]
        input_ids, positions = runner.prepare_prefill(batch) if is_prefill else runner.prepare_decode(batch)
        ctx = get_context()
        n = len(input_ids)
        # Stand-in 3: the forward pass.
        if len(ctx.slot_mapping) != n:
            raise NanoCrash(step, "layers/attention.py:38 store_kvcache asserts slot_mapping.numel() == N")
        if is_prefill:
            if n == 0:
                raise NanoCrash(step, "layers/embed_head.py:59 ParallelLMHead indexes an empty prefill batch")
            row_owner = []
            for s in batch:
                row_owner += [(s, p + 1) for p in range(s.num_cached_tokens, len(s))]
            rows = [row_owner[(int(e) - 1) % n] for e in list(ctx.cu_seqlens_q)[1:]]
        else:
            rows = [(s, len(s)) for s in batch]
        token_ids = [oracle.token_after(name[id(o)], o.num_prompt_tokens, o.token_ids[:k]) for o, k in rows]
        rec["context"] = {
            "is_prefill": bool(ctx.is_prefill),
            "max_seqlen_q": int(ctx.max_seqlen_q), "max_seqlen_k": int(ctx.max_seqlen_k),
            "cu_seqlens_q": _lst(ctx.cu_seqlens_q), "cu_seqlens_k": _lst(ctx.cu_seqlens_k),
            "slot_mapping": list(ctx.slot_mapping),
            "context_lens": _lst(ctx.context_lens), "block_tables": _lst(ctx.block_tables),
        }
        reset_context()
        for s in batch:
            q = len(s) - s.num_cached_tokens if is_prefill else 1
            rec["num_scheduled_tokens"][name[id(s)]] = q
            rec["block_ids"][name[id(s)]] = list(s.block_table)
        rec["total_num_scheduled_tokens"] = n
        rec["num_padded_tokens"] = n
        rec["num_reqs_padded"] = len(batch)
        rec["batch_req_ids"] = [name[id(s)] for s in batch]
        rec["cudagraph_mode"] = "NONE"
        rec["input_ids"] = list(input_ids)
        rec["positions"] = list(positions)
        rec["output_token_ids"] = [[t] for t in token_ids]
        sched.postprocess(batch, token_ids)
        rec["finished_req_ids"] = [name[id(s)] for s in batch if s.is_finished]
        rec["num_free_blocks"] = len(sched.block_manager.free_block_ids)
        steps.append(rec)
    outputs = {reqs[i]["req_id"]: list(seqs[i].completion_token_ids) for i in range(len(reqs))}
    return {
        "format": "specreplay-trace", "version": 1, "recorded_by": RECORDED_BY,
        "notes": [f"recorded by conformance/nano/driver.py from nano-vllm {COMMIT}"],
        "config": scen["config"], "requests": scen["requests"], "oracle": scen["oracle"],
        "steps": steps, "outputs": dict(sorted(outputs.items())),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description="record a scenario with nano-vllm's own code")
    ap.add_argument("scenario")
    ap.add_argument("-o", "--out", required=True)
    a = ap.parse_args(argv)
    with open(a.scenario) as f:
        scen = json.load(f)
    try:
        t = record(scen)
    except NanoCrash as e:
        print(f"nano-vllm would crash: {e}", file=sys.stderr)
        return 2
    with open(a.out, "w") as f:
        json.dump(t, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
