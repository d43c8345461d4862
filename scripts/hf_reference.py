#!/usr/bin/env python3
"""transformers' own forward pass of a checkpoint folder, as the yardstick of specreplay's.

Runs on the GPU host (torch + transformers, offline: HF_HUB_OFFLINE=1, local files only).
Loads DIR with AutoModelForCausalLM (Qwen3ForCausalLM for a Qwen3 config.json) and writes
or compares the logits comparison file, schema "specreplay-logits-v1", the same on both
sides (executor/src/model/comparison.rs):

    {
      "schema": "specreplay-logits-v1",
      "source": "transformers" | "specreplay-cpu-reference" | ...,
      "dtype": "bfloat16" | "float32" | "f32-over-bf16",
      "checkpoint_sha256": hex or null,
      "vocab_size": V,
      "prompts": [
        {"ids": [...],                      # the prompt, L token ids
         "prefill_logits_digest": hex,      # SHA-256 of the L x V prefill logits, f32 LE
         "prefill_logits_file": "X.f32",    # those values, row-major, beside the JSON
         "tokens": [...],                   # greedy continuation (argmax, lowest id on ties)
         "margins": [...],                  # top-1 minus top-2 logit at each generated position
         "top1_logits": [...]}              # optional: the top-1 logit there (near-tie scale)
      ]
    }

Modes:
  run      --model DIR --prompt-ids "1,2,3" [--prompt-ids ...] [--prompts-from OURS.json]
           --max-tokens N [--dtype bfloat16|float32] [--attn-implementation sdpa|eager]
           [--device auto|cuda|cpu] --out HF.json
  compare  --ours OURS.json (--theirs HF.json | --model DIR [--dtype ...] [--out HF.json])
           [--max-tokens N] [--max-rel-err 1e-2] [--near-tie-ulps 4]
  merge    --in A.json --in B.json ... --out C.json
           one comparison file from several of the same source (prompts in order)
  attach-tokens --ours EXECUTOR.json --trace GEN0.json [--trace ...] --out GPU.json
           the GPU executor's greedy tokens and margins (`gpu generate --trace`, one per
           prompt) joined to the executor's prefill rows, for compare

compare reports per prompt the relative error of the prefill logits, max|a-b| / max|b| over
all L x V values (b = transformers; judged against --max-rel-err) and the norm-wise
||a-b|| / ||b|| (reported), the rows whose argmax differs, and the first position
where the greedy continuations differ with transformers' top-1/top-2 margin there, in
absolute terms and in bf16 ulps of its top-1 logit. A divergence counts as a numerical near
tie when that margin is at most --near-tie-ulps ulps. Exit 0 when every prompt is within
--max-rel-err and identical or diverging only at a near tie, 1 otherwise, 2 on bad input.
"""

import argparse
import array
import hashlib
import json
import math
import os
import sys
import time

SCHEMA = "specreplay-logits-v1"


def log(msg):
    print(msg, flush=True)


def parse_ids(s):
    return [int(t) for t in s.replace(",", " ").split()]


def bf16_ulp(x):
    """Spacing of bfloat16 numbers at |x| (8 significant bits)."""
    x = abs(x)
    if x == 0 or not math.isfinite(x):
        return 2.0 ** -133
    return 2.0 ** (math.floor(math.log2(x)) - 7)


def load_json(path):
    with open(path) as f:
        doc = json.load(f)
    if doc.get("schema") != SCHEMA:
        raise SystemExit(f"hf_reference: {path}: schema is {doc.get('schema')!r}, expected {SCHEMA!r}")
    return doc


def f32_array(values=()):
    """A little-endian f32 array (array.array; no numpy needed)."""
    return array.array("f", values)


def to_le_bytes(a):
    if sys.byteorder != "little":
        a = array.array("f", a)
        a.byteswap()
    return a.tobytes()


def read_rows(json_path, prompt, vocab):
    """The prompt's L x V prefill logits as one flat f32 array."""
    path = os.path.join(os.path.dirname(os.path.abspath(json_path)), prompt["prefill_logits_file"])
    a = f32_array()
    with open(path, "rb") as f:
        a.frombytes(f.read())
    if sys.byteorder != "little":
        a.byteswap()
    if len(a) != len(prompt["ids"]) * vocab:
        raise SystemExit(f"hf_reference: {path}: {len(a)} values, expected {len(prompt['ids'])} x {vocab}")
    return a


def argmax(a, lo, hi):
    best = lo
    for j in range(lo, hi):
        if a[j] > a[best]:
            best = j
    return best - lo


def run_hf(model_dir, prompts, max_tokens, dtype_name, out_path, attn="sdpa", device="auto"):
    """Runs transformers on each prompt; writes out_path (+ .f32 files); returns the doc.

    attn: transformers' attention implementation ("sdpa", its default, or "eager"); device:
    "cuda", "cpu" or "auto" (cuda when available). Both exist for the yardsticks: the same
    library against itself with another attention or on another device."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[dtype_name]
    t0 = time.time()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, local_files_only=True,
                                                 attn_implementation=attn)
    dev = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(dev).eval()
    log(f"loaded {type(model).__name__} from {model_dir} as {dtype_name} in {time.time() - t0:.1f} s "
        f"(torch {torch.__version__}, device {torch.cuda.get_device_name(0) if dev == 'cuda' else 'cpu'}, "
        f"attention {attn})")
    vocab = model.config.vocab_size
    # (transformers refuses a GenerationConfig of 0 new tokens: prefill-only runs need none.)
    gen_cfg = None if max_tokens <= 0 else GenerationConfig(
        max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False, num_beams=1,
        eos_token_id=None, pad_token_id=0)
    stem = os.path.splitext(os.path.basename(out_path))[0]
    out_dir = os.path.dirname(os.path.abspath(out_path))
    records = []
    for i, ids in enumerate(prompts):
        t0 = time.time()
        x = torch.tensor([ids], device=dev)
        with torch.no_grad():
            rows = f32_array(model(x).logits[0].float().flatten().cpu().tolist())
            tokens, margins, top1 = [], [], []
            if max_tokens > 0:
                out = model.generate(x, generation_config=gen_cfg, output_logits=True,
                                     return_dict_in_generate=True)
                tokens = out.sequences[0, len(ids):].tolist()
                for k, step in enumerate(out.logits):
                    v, j = torch.topk(step[0].float(), 2)
                    margins.append(float(v[0] - v[1]))
                    top1.append(float(v[0]))
                    if int(j[0]) != tokens[k] and float(v[0] - v[1]) > 0:
                        raise SystemExit(f"hf_reference: prompt {i} position {k}: generate chose {tokens[k]}, "
                                         f"its logits' argmax is {int(j[0])}")
        name = f"{stem}.p{i}.f32"
        raw = to_le_bytes(rows)
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(raw)
        records.append({
            "ids": ids,
            "prefill_logits_digest": hashlib.sha256(raw).hexdigest(),
            "prefill_logits_file": name,
            "tokens": tokens,
            "margins": margins,
            "top1_logits": top1,
        })
        small = min(margins) if margins else float("nan")
        log(f"prompt {i}: {len(ids)} tokens, {len(tokens)} generated in {time.time() - t0:.1f} s, "
            f"smallest margin {small:.3e}")
    source = "transformers" if attn == "sdpa" and device == "auto" else f"transformers ({attn}, {dev})"
    doc = {"schema": SCHEMA, "source": source, "dtype": dtype_name, "checkpoint_sha256": None,
           "vocab_size": vocab, "prompts": records}
    with open(out_path, "w") as f:
        json.dump(doc, f)
        f.write("\n")
    log(f"wrote {out_path}")
    return doc


def compare(ours_path, ours, theirs_path, theirs, max_rel_err, near_tie_ulps):
    if ours["vocab_size"] != theirs["vocab_size"]:
        raise SystemExit(f"hf_reference: vocab {ours['vocab_size']} vs {theirs['vocab_size']}")
    vocab = ours["vocab_size"]
    if len(ours["prompts"]) != len(theirs["prompts"]):
        raise SystemExit("hf_reference: different numbers of prompts")
    ok = True
    summary = []
    log(f"ours: {ours['source']} ({ours['dtype']}), theirs: {theirs['source']} ({theirs['dtype']})")
    for i, (a, b) in enumerate(zip(ours["prompts"], theirs["prompts"])):
        if a["ids"] != b["ids"]:
            raise SystemExit(f"hf_reference: prompt {i}: different prompt ids")
        ra, rb = read_rows(ours_path, a, vocab), read_rows(theirs_path, b, vocab)
        diff = max(abs(x - y) for x, y in zip(ra, rb))
        rel = diff / max(max(abs(y) for y in rb), 1e-30)
        # Also the norm-wise relative error ||a - b|| / ||b|| (reported, not judged).
        rel_l2 = math.sqrt(sum((x - y) ** 2 for x, y in zip(ra, rb)) / max(sum(y * y for y in rb), 1e-30))
        rows = len(a["ids"])
        argmax_rows = sum(argmax(ra, r * vocab, (r + 1) * vocab) != argmax(rb, r * vocab, (r + 1) * vocab)
                          for r in range(rows))
        n = min(len(a["tokens"]), len(b["tokens"]))
        first = next((k for k in range(n) if a["tokens"][k] != b["tokens"][k]), None)
        line = (f"prompt {i}: {len(a['ids'])} tokens; prefill logits rel err {rel:.3e} "
                f"(max {max_rel_err:g}: {'ok' if rel <= max_rel_err else 'FAIL'}; norm-wise {rel_l2:.3e}); "
                f"rows with another argmax {argmax_rows}/{len(a['ids'])}; ")
        verdict = "identical"
        if first is None:
            line += f"greedy continuations identical for {n} tokens"
        else:
            m = b["margins"][first]
            top = (b.get("top1_logits") or [None] * n)[first]
            ulps = m / bf16_ulp(top) if top is not None else float("nan")
            near = top is not None and ulps <= near_tie_ulps
            verdict = "near-tie" if near else "diverged"
            line += (f"first divergence at generated token {first} (ours {a['tokens'][first]}, "
                     f"theirs {b['tokens'][first]}): their top-1/top-2 margin {m:.3e} = {ulps:.2f} bf16 ulps "
                     f"of their top-1 logit {top}, our margin {a['margins'][first]:.3e} -> "
                     + ("numerical near-tie" if near else f"NOT a near tie (> {near_tie_ulps} ulps)"))
        log(line)
        ok = ok and rel <= max_rel_err and verdict != "diverged"
        summary.append({"prompt": i, "rel_err": rel, "rel_err_l2": rel_l2, "argmax_rows_differing": argmax_rows,
                        "first_divergence": first, "verdict": verdict})
    log(("PASS" if ok else "FAIL") + f": {json.dumps(summary)}")
    return ok


def merge(paths, out_path):
    """One comparison file from several of one source (prompts concatenated in order; each
    prompt's logits file path made relative to out_path's folder)."""
    docs = [load_json(p) for p in paths]
    out = dict(docs[0])
    out["prompts"] = []
    out_dir = os.path.dirname(os.path.abspath(out_path))
    for path, d in zip(paths, docs):
        if (d["source"], d["dtype"], d["vocab_size"]) != (out["source"], out["dtype"], out["vocab_size"]):
            raise SystemExit(f"hf_reference: {path}: another source, dtype or vocabulary than {paths[0]}")
        base = os.path.dirname(os.path.abspath(path))
        for p in d["prompts"]:
            p = dict(p)
            p["prefill_logits_file"] = os.path.relpath(os.path.join(base, p["prefill_logits_file"]), out_dir)
            out["prompts"].append(p)
    with open(out_path, "w") as f:
        json.dump(out, f)
        f.write("\n")
    log(f"wrote {out_path}: {len(out['prompts'])} prompts from {len(paths)} files")


def attach_tokens(ours_path, traces, out_path):
    """The GPU executor's greedy continuations (one `gpu generate --prompt-ids P --trace T`
    per prompt, in prompt order) put into a comparison file whose prefill rows are the
    executor's (`gpu reference --forward executor`, the CUDA forward's bitwise CPU twin):
    tokens from the trace's outputs, margins from its logits row at each sampled position
    (the row whose `position` is the token's sequence position)."""
    doc = load_json(ours_path)
    if len(traces) != len(doc["prompts"]):
        raise SystemExit(f"hf_reference: {len(traces)} traces for {len(doc['prompts'])} prompts")
    base = os.path.dirname(os.path.abspath(ours_path))
    for p, t in zip(doc["prompts"], traces):
        with open(t) as f:
            tr = json.load(f)
        (req, spec), = [(r["req_id"], r) for r in tr["requests"]]
        if spec["prompt_token_ids"] != p["ids"]:
            raise SystemExit(f"hf_reference: {t}: another prompt than {ours_path}'s")
        rows = {}
        for st in tr["steps"]:
            for r in st.get("logits", []):
                if r["req_id"] == req:
                    rows.setdefault(r["position"], r)
        tokens = tr["outputs"][req]
        L = len(p["ids"])
        p["tokens"] = tokens
        p["margins"] = [float(rows[L + k]["margin"]) for k in range(len(tokens))]
        p["prefill_logits_file"] = os.path.relpath(os.path.join(base, p["prefill_logits_file"]),
                                                   os.path.dirname(os.path.abspath(out_path)))
    doc["source"] = "specreplay-cuda (prefill: its bitwise CPU twin)"
    with open(out_path, "w") as f:
        json.dump(doc, f)
        f.write("\n")
    log(f"wrote {out_path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("run")
    r.add_argument("--model", required=True)
    r.add_argument("--prompt-ids", action="append", default=[])
    r.add_argument("--prompts-from")
    r.add_argument("--max-tokens", type=int, default=256)
    r.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    r.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager"])
    r.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    r.add_argument("--out", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--ours", required=True)
    c.add_argument("--theirs")
    c.add_argument("--model")
    c.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    c.add_argument("--out")
    c.add_argument("--max-tokens", type=int)
    c.add_argument("--max-rel-err", type=float, default=1e-2)
    c.add_argument("--near-tie-ulps", type=float, default=4.0)
    g = sub.add_parser("merge")
    g.add_argument("--in", dest="inputs", action="append", required=True)
    g.add_argument("--out", required=True)
    t = sub.add_parser("attach-tokens")
    t.add_argument("--ours", required=True)
    t.add_argument("--trace", action="append", default=[])
    t.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.mode == "merge":
        merge(a.inputs, a.out)
        return 0
    if a.mode == "attach-tokens":
        attach_tokens(a.ours, a.trace, a.out)
        return 0
    if a.mode == "run":
        prompts = [parse_ids(p) for p in a.prompt_ids]
        if a.prompts_from:
            prompts += [p["ids"] for p in load_json(a.prompts_from)["prompts"]]
        if not prompts:
            ap.error("give --prompt-ids or --prompts-from")
        run_hf(a.model, prompts, a.max_tokens, a.dtype, a.out, a.attn_implementation, a.device)
        return 0
    ours = load_json(a.ours)
    if a.theirs:
        theirs_path, theirs = a.theirs, load_json(a.theirs)
    elif a.model:
        n = a.max_tokens if a.max_tokens is not None else max(len(p["tokens"]) for p in ours["prompts"])
        theirs_path = a.out or os.path.splitext(a.ours)[0] + f".hf-{a.dtype}.json"
        theirs = run_hf(a.model, [p["ids"] for p in ours["prompts"]], n, a.dtype, theirs_path)
    else:
        ap.error("compare needs --theirs or --model")
    return 0 if compare(a.ours, ours, theirs_path, theirs, a.max_rel_err, a.near_tie_ulps) else 1


if __name__ == "__main__":
    sys.exit(main())
