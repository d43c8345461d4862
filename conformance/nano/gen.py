"""Seeded random scenario generator for nano-vllm conformance runs.

`gen_scenario(seed)` returns a scenario dict (config, requests, oracle; every field
written out, so the recorded config and requests equal the simulator's serialization).
Pure Python, no nano-vllm import.

What it aims at (nano-vllm 2f21442's bookkeeping, see sim/src/nano.rs):
  * block size 256 (~80%) or 512 (~20%: sequences still cut 256-token pieces, so
    prompts stay <= 256 tokens there, except in a few scenarios that show the crash);
  * prompts built from a few shared 256-token *pieces* in different orders, plus tails:
    prefix hits, and stale-hash hits (a piece cached under one prefix and rewritten under
    another); lengths often exactly k * 256 (wholly cached prompts, the LM-head row of
    another sequence) or k * 256 + 1 (one token to compute after a hit);
  * max_tokens up to ~300, so decodes cross block boundaries (may_append's new block at
    len % bs == 1, its hashing at len % bs == 0);
  * KV pools from roomy down to "every request fits alone" (preemption), sometimes below
    (scheduler.py:56 assert);
  * many requests, staggered arrivals and idle gaps, one engine eos for some requests
    (nano-vllm has one eos), ignore_eos.
max_model_len is >= every prompt + max_tokens (nano-vllm has no length stop).
"""

from __future__ import annotations

import random

import os
import sys

sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "vllm"))  # oracle.py
from oracle import Oracle  # noqa: E402

SEQ_BS = 256


def nano_config(block_size, num_gpu_blocks, max_num_seqs, mnbt, max_model_len) -> dict:
    """The scenario `config` (every field of sim/src/config.rs, as the simulator writes it)."""
    return {
        "profile": "nano-vllm", "block_size": block_size, "num_gpu_blocks": num_gpu_blocks,
        "max_num_seqs": max_num_seqs, "max_num_batched_tokens": mnbt, "max_model_len": max_model_len,
        "method": "none", "num_speculative_tokens": 0, "prompt_lookup_min": 0, "prompt_lookup_max": 0,
        "cudagraph_capture_sizes": [], "cudagraph_mode": "NONE", "enable_chunked_prefill": True,
        "enable_prefix_caching": True, "num_attention_heads": 16, "num_kv_heads": 8, "num_sms": 132,
        "disable_cascade_attn": False,
    }


def _cdiv(a, b):
    return -(-a // b)


def gen_scenario(seed: int) -> dict:
    rng = random.Random(seed)
    bs = 256 if rng.random() < 0.8 else 512
    # A small alphabet makes equal pieces under different prefixes likely.
    if rng.random() < 0.6:
        vocab = rng.randint(2, 6)
        oracle = {"kind": "synthetic", "tokens": {}, "seed": rng.getrandbits(64), "vocab_size": vocab,
                  "order": rng.randint(1, 4)}
        alphabet = list(range(vocab))
    else:
        oracle = {"kind": "continuation", "tokens": {}, "seed": 0, "vocab_size": 0, "order": 0}
        alphabet = rng.sample(range(1, 300), rng.randint(2, 6))
    pieces = [[rng.choice(alphabet) for _ in range(SEQ_BS)] for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.3:
        pieces.append([alphabet[0]] * SEQ_BS)
    # "stale" family: two pieces reused at different depths, short requests one after
    # another, a small pool: blocks are freed, refilled with the same piece under another
    # prefix, and hit again through their stale hash entry.
    stale = bs == 256 and rng.random() < 0.3
    if stale:
        pieces = pieces[:1] + [[rng.choice(alphabet) for _ in range(SEQ_BS)]]
    nreq = rng.randint(1, 12) if rng.random() < 0.85 else rng.randint(13, 24)
    long_512 = bs == 512 and rng.random() < 0.15  # prompts above 256 tokens: the crash
    max_new = rng.choice([8, 40, 300, 300, 600]) if bs == 256 else rng.choice([8, 40, 300, 600])
    eos = rng.choice(alphabet) if rng.random() < 0.35 else None
    requests = []
    arrival = 1
    for i in range(nreq):
        if bs == 512 and not long_512:
            npieces = 0
        elif stale:
            npieces = rng.choice([1, 1, 2, 2, 3])
        else:
            npieces = rng.choice([0, 1, 1, 2, 2, 3])
        prompt = []
        for _ in range(npieces):
            prompt += rng.choice(pieces)
        tail = rng.choice([0, 1, 1, rng.randint(1, 40), rng.randint(1, 40), rng.randint(1, 255), rng.randint(1, 255), rng.randint(1, 255)])
        if bs == 512 and not long_512:
            tail = rng.choice([1, rng.randint(1, 40), rng.randint(1, 256), 256])
        elif stale:
            tail = rng.choice([0, 1, 1, 1, rng.randint(1, 40), rng.randint(1, 40), rng.randint(1, 40), rng.randint(1, 40)])
        prompt += [rng.choice(alphabet) for _ in range(tail)]
        if not prompt:
            prompt = [rng.choice(alphabet)]
        if stale and i > 0:
            arrival += rng.choice([1, 2, 3, 5, 10])
        elif rng.random() < 0.5 and i > 0:
            arrival += rng.choice([0, 1, 1, 2, 5, 30])
        r = {"req_id": f"r{i}", "prompt_token_ids": prompt,
             "max_tokens": rng.randint(1, 12 if stale else max_new), "arrival_step": arrival,
             "eos_token_id": None, "stop_token_ids": [], "min_tokens": 0, "ignore_eos": False}
        if eos is not None and rng.random() < 0.7:
            r["eos_token_id"] = eos
            r["ignore_eos"] = rng.random() < 0.2
        requests.append(r)
        if oracle["kind"] == "continuation":
            pat = [rng.choice(alphabet) for _ in range(rng.randint(1, 5))]
            oracle["tokens"][r["req_id"]] = [pat[j % len(pat)] if rng.random() < 0.9 else rng.choice(alphabet)
                                             for j in range(r["max_tokens"])]
    if arrival > 1 and rng.random() < 0.3:
        requests[-1]["arrival_step"] += 6   # a gap with nothing to do
    longest = max(len(r["prompt_token_ids"]) + r["max_tokens"] for r in requests)
    max_model_len = longest + rng.choice([0, 1, 100, 2048])
    mnbt = max_model_len + rng.choice([0, 0, 256, 1024, 16384])
    max_num_seqs = rng.choice([1, 2, 3, 4, 8, 16, 512])
    # Blocks one request needs alone (256-token pieces at allocation, one more per
    # block_size tokens of decode), and the pool: roomy, tight (preemption) or short.
    alone = max(_cdiv(len(r["prompt_token_ids"]), SEQ_BS) + _cdiv(r["max_tokens"], bs) + 1 for r in requests)
    roomy = sum(_cdiv(len(r["prompt_token_ids"]) + r["max_tokens"], SEQ_BS) + 1 for r in requests)
    kind = rng.random()
    if kind < 0.3:
        num_gpu_blocks = roomy + rng.choice([0, 5, 100])
    elif stale:
        num_gpu_blocks = alone + rng.randint(0, 3)
    elif kind < 0.95:
        num_gpu_blocks = alone + rng.randint(0, max(1, roomy - alone) // rng.choice([2, 4, 8]))
    else:
        num_gpu_blocks = max(2, alone - rng.randint(1, 3))  # the simulator needs >= 2
    scen = {"config": nano_config(bs, num_gpu_blocks, max_num_seqs, mnbt, max_model_len),
            "requests": requests, "oracle": oracle}
    Oracle(oracle)
    return scen


if __name__ == "__main__":
    import json

    print(json.dumps(gen_scenario(int(sys.argv[1]) if len(sys.argv) > 1 else 0), indent=1))
