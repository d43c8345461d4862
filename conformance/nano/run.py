"""Compare nano-vllm 2f21442 (driver.py) with the specreplay simulator on random scenarios.

Usage (after setup.sh and `cargo build --release`):
    conformance/nano/.venv/bin/python conformance/nano/run.py --n 2000 --seed 1
    conformance/nano/.venv/bin/python conformance/nano/run.py --scenario FILE.json [--scenario ...]
    conformance/nano/.venv/bin/python conformance/nano/run.py --n 150 --seed 7 --save-dir DIR

For each scenario: record with nano-vllm's code, run `target/release/specreplay sim SCEN
-o OUT`, compare field by field (config, every step, outputs). A scenario in which
nano-vllm would crash counts as identical when the simulator stops with its
NanoAssertion at the same step naming the same upstream file:line. Prints
`identical: X/N`, the crash agreements among them, coverage marks summed over the
recordings, and the first mismatch. `--save-dir` keeps the nano-vllm traces (crash-free
ones) for a corpus. Work is spread over `--jobs` processes (default 2).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import traceback
from concurrent.futures import ProcessPoolExecutor
import multiprocessing as mp

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
SIM = os.path.join(REPO, "target", "release", "specreplay")
sys.path.insert(0, HERE)


def _vllm_run():
    """conformance/vllm/run.py (its field-by-field `compare_traces`), loaded by path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("vllm_run", os.path.join(HERE, "..", "vllm", "run.py"))
    mod = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    spec.loader.exec_module(mod)
    sys.path[:] = saved  # it puts conformance/vllm first (its driver.py needs vLLM)
    return mod


compare_traces = _vllm_run().compare_traces

WHERE = re.compile(r"([A-Za-z_/]+\.py):(\d+)")


def crash_key(text: str):
    """`file.py:line` (basename) of the first upstream location named in `text`."""
    m = WHERE.search(text)
    return f"{os.path.basename(m.group(1))}:{m.group(2)}" if m else None


def work(job):
    name, scen_path, out_dir, use_sim, save_dir = job
    from driver import NanoCrash, record

    res = {"name": name, "scenario": scen_path}
    with open(scen_path) as f:
        scen = json.load(f)
    crash = None
    try:
        nt = record(scen)
    except NanoCrash as e:
        crash = {"step": e.step, "key": crash_key(e.where), "where": e.where}
        res["crash"] = crash
    except Exception:
        res["error"] = "nano-vllm: " + traceback.format_exc(limit=6)
        return res
    if crash is None:
        npath = os.path.join(out_dir, f"{name}.nano.json")
        with open(npath, "w") as f:
            json.dump(nt, f)
        res["nano_trace"] = npath
        if save_dir:
            with open(os.path.join(save_dir, f"{name}.json"), "w") as f:
                json.dump(nt, f)
    if not use_sim:
        res["status"] = "recorded"
        return res
    spath = os.path.join(out_dir, f"{name}.sim.json")
    p = subprocess.run([SIM, "sim", scen_path, "-o", spath], capture_output=True, text=True)
    if crash is not None:
        m = re.search(r"step (\d+): nano-vllm", p.stderr)
        got = (int(m.group(1)), crash_key(p.stderr[m.end():])) if m and p.returncode == 2 else None
        if got == (crash["step"], crash["key"]):
            res["status"] = "identical"
        else:
            res["status"] = "diff"
            res["diff"] = {"step": crash["step"], "field": "crash", "vllm": crash["where"],
                           "sim": f"exit {p.returncode}: {p.stderr.strip()[:500]}"}
        return res
    if p.returncode != 0:
        res["status"] = "diff"
        res["diff"] = {"step": None, "field": "sim run", "vllm": "a trace", "sim": p.stderr.strip()[:2000]}
        return res
    with open(spath) as f:
        st = json.load(f)
    d = compare_traces(nt, st)
    res["status"] = "identical" if d is None else "diff"
    if d is not None:
        res["diff"] = d
    return res


def marks_of(paths):
    """How many recorded steps show each behaviour (a short Python version of
    sim/src/nano/coverage.rs, which tests/nano_corpus.rs applies to the corpus)."""
    c = {}

    def mark(k, hit):
        c[k] = c.get(k, 0) + int(bool(hit))

    for p in paths:
        with open(p) as f:
            t = json.load(f)
        bs = t["config"]["block_size"]
        mark("block_size_512", bs == 512)
        for s in t["steps"]:
            if s.get("idle"):
                mark("idle_step", True)
                continue
            ctx = s["context"]
            mark("preemption", s["preempted_req_ids"])
            if ctx["is_prefill"]:
                cq, ck = ctx["cu_seqlens_q"], ctx["cu_seqlens_k"]
                qs = [cq[j + 1] - cq[j] for j in range(len(cq) - 1)]
                ks = [ck[j + 1] - ck[j] for j in range(len(ck) - 1)]
                mark("prefix_hit", any(k > q for q, k in zip(qs, ks)))
                mark("fully_cached_prompt", any(q == 0 for q in qs))
                mark("one_token_after_hit", any(q == 1 and k > 1 for q, k in zip(qs, ks)))
            else:
                mark("decode_fills_block", any(n % bs == 0 for n in ctx["context_lens"]))
                mark("decode_new_block", any(n % bs == 1 for n in ctx["context_lens"]))
    return c


def main(argv=None):
    ap = argparse.ArgumentParser(description="nano-vllm 2f21442 vs specreplay conformance")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenario", action="append", default=[])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(HERE, "out", "run"))
    ap.add_argument("--save-dir", default=None, help="also write the nano-vllm traces here")
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
            scen = gen_scenario(a.seed * 1_000_003 + i)
            name = f"s{a.seed}_{i:04d}"
            p = os.path.join(a.out, f"{name}.scenario.json")
            with open(p, "w") as f:
                json.dump(scen, f, indent=1)
            jobs.append((name, p, a.out, use_sim, a.save_dir))

    results = []
    with ProcessPoolExecutor(max_workers=max(1, a.jobs), mp_context=mp.get_context("spawn")) as ex:
        for r in ex.map(work, jobs, chunksize=8):
            results.append(r)
            if r.get("status") != "identical":
                print(f"{r['name']}: {r.get('status') or 'ERROR'}", flush=True)

    n = len(results)
    ident = sum(1 for r in results if r.get("status") == "identical")
    crashes = [r for r in results if "crash" in r]
    errs = [r for r in results if "error" in r]
    if use_sim:
        print(f"identical: {ident}/{n}")
    print(f"recorded by nano-vllm: {n - len(errs) - len(crashes)}/{n}, nano-vllm would crash: {len(crashes)}/{n}")
    kinds = {}
    for r in crashes:
        kinds[r["crash"]["key"]] = kinds.get(r["crash"]["key"], 0) + 1
    for k, v in sorted(kinds.items()):
        print(f"  crash at {k}: {v}")
    c = marks_of([r["nano_trace"] for r in results if "nano_trace" in r])
    print("coverage (scenarios' steps with the mark): " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    for r in errs[:3]:
        print(f"\nERROR {r['scenario']}:\n{r['error']}")
    first = next((r for r in results if r.get("status") == "diff"), None)
    if first:
        d = first["diff"]
        print(f"\nfirst mismatch: {first['scenario']}")
        print(f"  step {d['step']} field {d['field']}")
        print(f"  nano-vllm: {json.dumps(d['vllm'])[:1500]}")
        print(f"  sim:       {json.dumps(d['sim'])[:1500]}")
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
    return 0 if (ident == n or not use_sim) and not errs else 1


if __name__ == "__main__":
    sys.exit(main())
