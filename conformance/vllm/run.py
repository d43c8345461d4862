"""Compare vLLM 0.12.0 (driver.py) with the specreplay simulator on random scenarios.

Usage (from the repo root or anywhere):
    conformance/vllm/.venv/bin/python conformance/vllm/run.py --n 50 --seed 1
    conformance/vllm/.venv/bin/python conformance/vllm/run.py --n 50 --seed 1 --save-dir conformance/vllm/out/corpus
    conformance/vllm/.venv/bin/python conformance/vllm/run.py --scenario conformance/vllm/scenarios/seed004.json

For each scenario: record with vLLM, run `target/release/specreplay sim SCEN -o OUT`, then
compare (with `specreplay diff` when that subcommand exists, else field by field here).
Prints `identical: X/N` and, for the first mismatch, the scenario file, step, request,
field and both values. `--no-sim` only records (and checks that recording works).
Work is spread over `--jobs` processes (default 2).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor
import multiprocessing as mp

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
SIM = os.path.join(REPO, "target", "release", "specreplay")
sys.path.insert(0, HERE)

STEP_FIELDS = [
    "idle", "num_scheduled_tokens", "total_num_scheduled_tokens",
    "scheduled_spec_decode_tokens", "num_computed_tokens", "preempted_req_ids",
    "finished_req_ids", "block_ids", "num_free_blocks", "batch_req_ids",
    "cudagraph_mode", "num_padded_tokens", "num_reqs_padded", "cascade_prefix_len",
    "input_ids", "positions",
    "logits_indices", "num_sampled_tokens", "attn", "output_token_ids",
    "draft_token_ids", "token_ids_cpu", "context",
]


def _first_diff_in(a, b, path):
    """First differing sub-path of two JSON values (for a readable report)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return path + [k], a.get(k, "<missing>"), b.get(k, "<missing>")
            if a[k] != b[k]:
                return _first_diff_in(a[k], b[k], path + [k])
    return path, a, b


def expand_idle(steps):
    """One element per engine step: the trace writer stores a run of idle steps as one
    element `{"step": a, "idle": true, "through": b}` (sim/src/trace/json.rs write_idle);
    expanded here so both traces are compared step by step."""
    out = []
    for s in steps:
        if s.get("idle") and "through" in s:
            out.extend({"step": n, "idle": True} for n in range(s["step"], s["through"] + 1))
        else:
            out.append(s)
    return out


def compare_traces(vt: dict, st: dict):
    """None when equal, else a dict describing the first divergence."""
    if vt["config"] != st["config"]:
        path, x, y = _first_diff_in(vt["config"], st["config"], ["config"])
        return {"step": None, "field": ".".join(map(str, path)), "vllm": x, "sim": y}
    vs, ss = expand_idle(vt["steps"]), expand_idle(st["steps"])
    for i in range(max(len(vs), len(ss))):
        if i >= len(vs) or i >= len(ss):
            return {"step": i + 1, "field": "steps",
                    "vllm": f"{len(vs)} steps", "sim": f"{len(ss)} steps"}
        a, b = vs[i], ss[i]
        a_idle, b_idle = bool(a.get("idle")), bool(b.get("idle"))
        if a_idle or b_idle:
            if a_idle != b_idle:
                return {"step": a.get("step"), "field": "idle", "vllm": a_idle, "sim": b_idle}
            continue
        for f in STEP_FIELDS:
            av, bv = a.get(f), b.get(f)
            if av != bv:
                path, x, y = _first_diff_in(av, bv, [f])
                return {"step": a.get("step"), "field": ".".join(map(str, path)),
                        "vllm": x, "sim": y, "vllm_full": av, "sim_full": bv}
    if vt["outputs"] != st["outputs"]:
        path, x, y = _first_diff_in(vt["outputs"], st["outputs"], ["outputs"])
        return {"step": None, "field": ".".join(map(str, path)), "vllm": x, "sim": y}
    return None


_ENGINE_READY = False


def _record(scen):
    from driver import record

    return record(scen)


def work(job):
    """Record one scenario; optionally simulate and compare. Runs in a worker process."""
    name, scen_path, out_dir, use_sim, save_dir = job
    res = {"name": name, "scenario": scen_path}
    with open(scen_path) as f:
        scen = json.load(f)
    try:
        vt = _record(scen)
    except Exception:
        res["error"] = "vllm: " + traceback.format_exc(limit=6)
        return res
    vpath = os.path.join(out_dir, f"{name}.vllm.json")
    with open(vpath, "w") as f:
        json.dump(vt, f)
    res["vllm_trace"] = vpath
    res["cascade_steps"] = sum(1 for s in vt["steps"] if s.get("cascade_prefix_len", 0) > 0)
    if save_dir:
        with open(os.path.join(save_dir, f"{name}.json"), "w") as f:
            json.dump(vt, f)
    if not use_sim:
        res["status"] = "recorded"
        return res
    spath = os.path.join(out_dir, f"{name}.sim.json")
    p = subprocess.run([SIM, "sim", scen_path, "-o", spath], capture_output=True, text=True)
    if p.returncode != 0:
        res["error"] = f"sim exit {p.returncode}: {p.stderr.strip()[:2000]}"
        return res
    res["sim_trace"] = spath
    with open(spath) as f:
        st = json.load(f)
    d = compare_traces(vt, st)
    if d is None:
        res["status"] = "identical"
    else:
        res["status"] = "diff"
        res["diff"] = d
        # `specreplay diff`, when it exists, for its own first-divergence report
        p = subprocess.run([SIM, "diff", vpath, spath], capture_output=True, text=True)
        if p.returncode in (0, 1) and (p.stdout or p.stderr):
            res["sim_diff_report"] = (p.stdout + p.stderr).strip()[:3000]
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description="vLLM 0.12.0 vs specreplay conformance")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenario", action="append", default=[],
                    help="a scenario file to run (repeatable); replaces --n/--seed")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(HERE, "out", "run"))
    ap.add_argument("--save-dir", default=None, help="also write vLLM traces here")
    ap.add_argument("--no-sim", action="store_true")
    a = ap.parse_args(argv)

    from gen import gen_scenario

    os.makedirs(a.out, exist_ok=True)
    if a.save_dir:
        os.makedirs(a.save_dir, exist_ok=True)
    use_sim = not a.no_sim and os.path.exists(SIM)
    if not a.no_sim and not use_sim:
        print(f"note: {SIM} not found; recording only (build with cargo build --release)")
    jobs = []
    if a.scenario:
        for p in a.scenario:
            name = os.path.splitext(os.path.basename(p))[0]
            jobs.append((name, os.path.abspath(p), a.out, use_sim, a.save_dir))
    else:
        for i in range(a.n):
            s = a.seed * 1_000_003 + i
            scen = gen_scenario(s)
            name = f"s{a.seed}_{i:04d}"
            p = os.path.join(a.out, f"{name}.scenario.json")
            with open(p, "w") as f:
                json.dump(scen, f, indent=1)
            jobs.append((name, p, a.out, use_sim, a.save_dir))

    ctx = mp.get_context("spawn")
    results = []
    with ProcessPoolExecutor(max_workers=max(1, a.jobs), mp_context=ctx) as ex:
        for r in ex.map(work, jobs):
            results.append(r)
            tag = r.get("status") or "ERROR"
            print(f"{r['name']}: {tag}", flush=True)

    n = len(results)
    ident = sum(1 for r in results if r.get("status") == "identical")
    rec = sum(1 for r in results if "vllm_trace" in r)
    errs = [r for r in results if "error" in r]
    if use_sim:
        print(f"identical: {ident}/{n}")
    print(f"recorded by vLLM: {rec}/{n}")
    casc = [r for r in results if r.get("cascade_steps", 0) > 0]
    print(f"scenarios with cascade steps (cascade_prefix_len > 0): {len(casc)}/{rec} "
          f"({sum(r['cascade_steps'] for r in casc)} steps)")
    kinds = {}
    for r in errs:
        e = r["error"]
        key = e.split("panicked at ")[-1].split("\n")[0:2] if "panicked" in e else [e.strip().split("\n")[-1]]
        kinds.setdefault(" | ".join(key)[:200], []).append(r["scenario"])
    for k, v in kinds.items():
        print(f"\nERROR x{len(v)} (first: {v[0]}):\n  {k}")
    first = next((r for r in results if r.get("status") == "diff"), None)
    if first:
        d = first["diff"]
        print(f"\nfirst mismatch: {first['scenario']}")
        print(f"  vLLM trace: {first['vllm_trace']}\n  sim trace:  {first['sim_trace']}")
        print(f"  step {d['step']} field {d['field']}")
        print(f"  vllm: {json.dumps(d['vllm'])}")
        print(f"  sim:  {json.dumps(d['sim'])}")
        if "sim_diff_report" in first:
            print("  specreplay diff says:\n    " + first["sim_diff_report"].replace("\n", "\n    "))
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    return 0 if (ident == n or not use_sim) and not errs else 1


if __name__ == "__main__":
    sys.exit(main())
