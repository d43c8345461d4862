"""Seeded random scenario generator for vLLM-v1 conformance runs.

`gen_scenario(seed)` returns a scenario dict (config, requests, oracle) that vLLM 0.12.0
accepts at start-up and that cannot livelock: every request fits the KV pool alone.
Pure Python, no vLLM import.
"""

from __future__ import annotations

import random

from oracle import Oracle


def _round_up(x, m):
    return (x + m - 1) // m * m


def gen_scenario(seed: int) -> dict:
    rng = random.Random(seed)
    method = "none" if rng.random() < 0.12 else "ngram"
    k = rng.randint(1, 5) if method == "ngram" else 0
    lmin = rng.randint(1, 6) if method == "ngram" else 0
    lmax = rng.randint(lmin, 6) if method == "ngram" else 0
    # FlashAttention needs a kernel block size that is a multiple of 16.
    block_size = rng.choice([16, 16, 16, 32])
    max_model_len = rng.choice([24, 32, 40, 48, 64, 80, 96, 128, 160])
    max_num_seqs = rng.randint(1, 8)
    chunked = rng.random() < 0.8
    if chunked:
        mnbt = rng.choice([4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 8192])
        mnbt = max(mnbt, max_num_seqs)
    else:
        mnbt = max_model_len + rng.choice([0, 0, 8, 64, 8192])
    prefix = rng.random() < 0.6
    mode = rng.choice(["FULL_AND_PIECEWISE"] * 3 + ["PIECEWISE", "NONE"])
    q = 1 + k
    cap_limit = min(mnbt, 64)
    if mode == "NONE":
        sizes = []
    elif mode == "FULL_AND_PIECEWISE":
        cands = [q * i for i in range(1, 1 + cap_limit // q)]
        if rng.random() < 0.25:
            # no FULL keys: all sizes above max_num_seqs * (1 + k)
            cands2 = [c for c in cands if c > max_num_seqs * q]
            if cands2:
                cands = cands2
        if not cands:
            cands = [q] if q <= mnbt else []
        if not cands:
            mode, sizes = "NONE", []
        else:
            n = rng.randint(1, min(4, len(cands)))
            sizes = sorted(rng.sample(cands, n))
    else:
        cands = list(range(1, cap_limit + 1))
        n = rng.randint(1, min(5, len(cands)))
        sizes = sorted(rng.sample(cands, n))

    blocks_per_req = -(-max_model_len // block_size)
    num_gpu_blocks = 1 + blocks_per_req + rng.choice([0, 0, 1, 2, 4, 8, 64])

    # Oracle.
    if rng.random() < 0.7:
        vocab = rng.randint(2, 8)
        oracle = {"kind": "synthetic", "seed": rng.getrandbits(64),
                  "vocab_size": vocab, "order": rng.randint(1, 4)}
        alphabet = list(range(vocab))
    else:
        vocab = None
        oracle = {"kind": "continuation", "tokens": {}}
        alphabet = rng.sample(range(1, 200), rng.randint(2, 6))

    nreq = rng.randint(1, 16) if rng.random() < 0.8 else rng.randint(1, 3)
    shared = [rng.choice(alphabet) for _ in range(rng.randint(1, max_model_len - 2))]
    requests = []
    arrival = 1
    for i in range(nreq):
        plen = rng.randint(1, max_model_len - 1)
        if rng.random() < 0.4:
            base = shared[: min(plen, len(shared))]
            prompt = base + [rng.choice(alphabet) for _ in range(plen - len(base))]
        else:
            pat = [rng.choice(alphabet) for _ in range(rng.randint(1, 4))]
            prompt = [pat[j % len(pat)] if rng.random() < 0.85 else rng.choice(alphabet)
                      for j in range(plen)]
        if rng.random() < 0.6:
            arrival += rng.choice([0, 0, 1, 2, 5])
        r = {"req_id": f"r{i}", "prompt_token_ids": prompt,
             "max_tokens": rng.randint(1, max_model_len + 8), "arrival_step": arrival}
        x = rng.random()
        if x < 0.15:
            r["eos_token_id"] = rng.choice(alphabet)
        elif x < 0.25:
            r["stop_token_ids"] = rng.sample(alphabet, 1)
        if rng.random() < 0.05:
            # min_tokens beyond max_model_len - prompt_len livelocks vLLM (FINDINGS.md)
            hi = min(4, r["max_tokens"], max_model_len - plen)
            if hi >= 1:
                r["min_tokens"] = rng.randint(1, hi)
        if "eos_token_id" in r and rng.random() < 0.2:
            r["ignore_eos"] = True
        requests.append(r)
        if oracle["kind"] == "continuation":
            pat = [rng.choice(alphabet) for _ in range(rng.randint(1, 5))]
            cont = [pat[j % len(pat)] if rng.random() < 0.9 else rng.choice(alphabet)
                    for j in range(max_model_len + 8)]
            oracle["tokens"][r["req_id"]] = cont
    if arrival > 1 and rng.random() < 0.3:
        # a gap with nothing to do
        requests[-1]["arrival_step"] += 6
    cfg = {
        "profile": "vllm-v1",
        "block_size": block_size,
        "num_gpu_blocks": num_gpu_blocks,
        "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": mnbt,
        "max_model_len": max_model_len,
        "method": method,
        "num_speculative_tokens": k,
        "prompt_lookup_min": lmin,
        "prompt_lookup_max": lmax,
        "cudagraph_capture_sizes": sizes,
        "cudagraph_mode": mode,
        "enable_chunked_prefill": chunked,
        "enable_prefix_caching": prefix,
    }
    Oracle(oracle)  # validates kind
    return {"config": cfg, "requests": requests, "oracle": oracle}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(gen_scenario(int(sys.argv[1]) if len(sys.argv) > 1 else 0), indent=1))
