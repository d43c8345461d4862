"""Seeded random scenario generator for vLLM-v1 conformance runs.

`gen_scenario(seed)` returns a scenario dict (config, requests, oracle) that vLLM 0.12.0
accepts at start-up and that cannot livelock: every request fits the KV pool alone.
Pure Python, no vLLM import.

Families:
  * basic (~87%): short contexts (max_model_len <= 160), so cascade attention never
    applies; drawn from `random.Random(seed)` exactly as before the cascade fields
    existed, so earlier seeds give the same requests and settings.
  * cascade (~13%, `_gen_cascade`): 8-40 requests (130-140 in the rare "wide"
    sub-family) sharing a 256-450-token prompt prefix with prefix caching on,
    max_model_len 512-768, block size 16, staggered arrivals, small max_tokens.
Every scenario carries the four cascade-heuristic fields explicitly:
num_attention_heads / num_kv_heads in (2,1), (4,4), (16,8), (8,2); num_sms 132 or a small
value (4, 16) that moves FlashAttention's cost-model boundary; disable_cascade_attn
sometimes true. These come from a second generator seeded from `seed`, so they do not
shift the basic family's draws.
"""

from __future__ import annotations

import random

from oracle import Oracle



def vllm_config(block_size, num_gpu_blocks, max_num_seqs, mnbt, max_model_len, method, k, lmin, lmax,
                sizes, mode, chunked, prefix):
    """The scenario `config` object (field names of sim/src/config.rs)."""
    return {
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

def _round_up(x, m):
    return (x + m - 1) // m * m


HEADS = [(2, 1), (4, 4), (16, 8), (8, 2)]


def _cascade_fields(rng, heads=None, sms=None, p_disable=0.1) -> dict:
    hq, hkv = heads or rng.choice(HEADS)
    return {
        "num_attention_heads": hq,
        "num_kv_heads": hkv,
        "num_sms": sms if sms is not None else rng.choice([132, 132, 132, 16, 4]),
        "disable_cascade_attn": rng.random() < p_disable,
    }


def gen_scenario(seed: int) -> dict:
    rng2 = random.Random(seed * 2654435761 + 0xCA5CADE)
    if rng2.random() < 0.13:
        return _gen_cascade(rng2)
    scen = _gen_basic(seed)
    scen["config"].update(_cascade_fields(rng2))
    return scen


def _oracle(rng, alphabet_hi=200):
    """(oracle, alphabet, per-request continuation maker or None)."""
    if rng.random() < 0.5:
        vocab = rng.randint(2, 8)
        oracle = {"kind": "synthetic", "seed": rng.getrandbits(64),
                  "vocab_size": vocab, "order": rng.randint(1, 4)}
        return oracle, list(range(vocab))
    oracle = {"kind": "continuation", "tokens": {}}
    return oracle, rng.sample(range(1, alphabet_hi), rng.randint(2, 6))


def _gen_cascade(rng) -> dict:
    """Requests sharing a long prompt prefix, so that vLLM's cascade attention (and
    FlashAttention's use_cascade_attention cost model) comes into play.

    Sub-families: "spec" (ngram, mixed prefill/decode batches: no flash-decoding, so
    cascade whenever >= 8 rows and >= 256 common tokens), "decode" (method none, all-q=1
    decode batches: flash-decoding cost model, heads/SMs chosen near the boundary),
    "tight" (small KV pool: preemption, and allocation failures that leave empty
    req_to_blocks entries, which change the common-prefix count), "wide" (rare: method
    none, 130-140 requests arriving together with 2 query heads per KV head and 132 SMs, boundary n = 133).
    """
    sub = rng.choices(["spec", "decode", "tight", "wide"], [36, 36, 22, 6])[0]
    block_size = 16
    max_model_len = rng.choice([512, 528, 576, 640, 768])
    method = "ngram" if sub == "spec" or (sub == "tight" and rng.random() < 0.5) else "none"
    if sub == "spec" and rng.random() < 0.1:
        method = "none"
    k = rng.randint(1, 4) if method == "ngram" else 0
    lmin = rng.randint(1, 4) if method == "ngram" else 0
    lmax = rng.randint(lmin, 5) if method == "ngram" else 0
    q = 1 + k

    if sub == "wide":
        nreq = rng.randint(130, 140)
        heads, sms = (2, 1), 132
    else:
        nreq = rng.randint(8, 40)
        if sub == "decode":
            # boundary n: (16,8)/132 -> 17, (2,1)/16 -> 17, (8,2)/16 -> 9, (8,2)/132 -> 67,
            # (4,4): no flash-decoding (no GQA), always cascade
            heads, sms = rng.choice([((16, 8), 132), ((16, 8), 132), ((2, 1), 16),
                                     ((8, 2), 16), ((8, 2), 132), ((4, 4), 132),
                                     ((2, 1), 4)])
        else:
            heads, sms = None, None
    fields = _cascade_fields(rng, heads, sms, p_disable=0.08)
    prefix = rng.random() < 0.93

    prefix_len = rng.randint(256, 450)
    # wide: everyone decodes together (one prefill step, similar lengths), so the
    # all-q=1 batch passes through n = 133 as requests finish
    max_tokens_lo, max_tokens_hi = (8, 24) if sub != "wide" else (10, 14)
    oracle, alphabet = _oracle(rng)
    shared = [rng.choice(alphabet) for _ in range(prefix_len)]
    requests = []
    max_prompt = 0
    arrival = 1
    for i in range(nreq):
        mt = rng.randint(max_tokens_lo, max_tokens_hi)
        room = max_model_len - 1 - mt - prefix_len
        suf = rng.choice([0, rng.randint(0, 8), rng.randint(0, 40 if sub != "wide" else 8)])
        suf = max(0, min(suf, room))
        prompt = shared + [rng.choice(alphabet) for _ in range(suf)]
        if i == 1:
            arrival += rng.choice([0, 1, 1, 2, 3])   # later arrivals hit the cached prefix
        elif i > 1:
            if sub != "wide":
                arrival += rng.choice([0, 0, 0, 0, 1] if sub == "decode" else [0, 0, 1, 2])
        r = {"req_id": f"r{i}", "prompt_token_ids": prompt, "max_tokens": mt,
             "arrival_step": arrival}
        x = rng.random() if sub != "wide" else 1.0
        if x < 0.1:
            r["eos_token_id"] = rng.choice(alphabet)
        elif x < 0.15:
            r["stop_token_ids"] = rng.sample(alphabet, 1)
        if "eos_token_id" in r and rng.random() < 0.3:
            r["ignore_eos"] = True
        requests.append(r)
        max_prompt = max(max_prompt, len(prompt))
        if oracle["kind"] == "continuation":
            pat = [rng.choice(alphabet) for _ in range(rng.randint(1, 5))]
            cont = [pat[j % len(pat)] if rng.random() < 0.9 else rng.choice(alphabet)
                    for j in range(max_model_len + 8)]
            oracle["tokens"][r["req_id"]] = cont

    max_num_seqs = nreq if sub in ("decode", "wide") else rng.choice([8, 12, 16, nreq, nreq])
    max_num_seqs = max(8, max_num_seqs)
    chunked = rng.random() < 0.85
    if chunked:
        mnbt = rng.choice([64, 128, 256, 512, 2048, 8192])
        if sub == "decode":
            mnbt = rng.choice([2048, 8192])
        elif sub == "wide":
            mnbt = 8192
        mnbt = max(mnbt, max_num_seqs * q)
    else:
        mnbt = max(max_model_len, max_num_seqs * q) + rng.choice([0, 64, 8192])

    blocks_per_req = -(-max_model_len // block_size)
    shared_blocks = prefix_len // block_size
    if sub == "tight":
        # The largest request always fits alone (prompt + max_tokens + k lookahead, plus
        # one block of slack); beyond that only a few blocks per extra request, so
        # running requests get preempted and waiting ones fail to allocate (which leaves
        # an empty req_to_blocks entry that zeroes the common-prefix count).
        need = -(-(max_prompt + max_tokens_hi + k) // block_size) + 1
        num_gpu_blocks = 1 + need + rng.randint(0, 2 * nreq)
    else:
        per_req = -(-(max_model_len - shared_blocks * block_size) // block_size)
        num_gpu_blocks = 1 + blocks_per_req + per_req * nreq + rng.choice([0, 8, 64])
        if not prefix:
            num_gpu_blocks = 1 + blocks_per_req * max(1, nreq // 2)

    mode = rng.choice(["FULL_AND_PIECEWISE"] * 4 + ["PIECEWISE", "NONE"])
    cap_limit = min(mnbt, 512)
    if mode == "NONE":
        sizes = []
    elif mode == "FULL_AND_PIECEWISE":
        cands = [q * i for i in range(1, 1 + cap_limit // q)]
        small = rng.sample(cands, min(len(cands), rng.randint(0, 3)))
        # A size that covers a decode batch of (nearly) max_num_seqs rows and has a FULL
        # key (FULL keys exist only up to q * max_num_seqs, cudagraph_dispatcher.py), so
        # FULL would apply to decode batches if cascade attention did not forbid it.
        m = rng.randint(max(1, max_num_seqs - 4), max_num_seqs)
        top = [q * m] if q * m <= cap_limit else []
        if rng.random() < 0.2:
            top += [c for c in cands if c > q * max_num_seqs][:1]
        sizes = sorted(set(small + top)) or [q]
    else:
        cands = list(range(1, cap_limit + 1))
        sizes = sorted(rng.sample(cands, rng.randint(1, 4)) + [min(cap_limit, max_num_seqs * q)])
        sizes = sorted(set(sizes))

    cfg = vllm_config(block_size, num_gpu_blocks, max_num_seqs, mnbt, max_model_len, method, k, lmin, lmax,
                      sizes, mode, chunked, prefix)
    cfg.update(fields)
    Oracle(oracle)
    return {"config": cfg, "requests": requests, "oracle": oracle}


def _gen_basic(seed: int) -> dict:
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
    cfg = vllm_config(block_size, num_gpu_blocks, max_num_seqs, mnbt, max_model_len, method, k, lmin, lmax,
                      sizes, mode, chunked, prefix)
    Oracle(oracle)  # validates kind
    return {"config": cfg, "requests": requests, "oracle": oracle}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(gen_scenario(int(sys.argv[1]) if len(sys.argv) > 1 else 0), indent=1))
