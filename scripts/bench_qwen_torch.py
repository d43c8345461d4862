#!/usr/bin/env python3
"""PyTorch baseline for `specreplay gpu bench-qwen`: one Qwen3 decode step written by hand
(the math of transformers' `Qwen3ForCausalLM`: RMSNorm, q/k norm, RoPE, GQA attention over
a static KV cache, SiLU MLP, tied LM head, argmax), bf16 random weights of Qwen3-0.6B's
shapes, compiled with torch.compile (inductor) and replayed inside a CUDA graph; prints
ms/step at batch 1 and 64 (CUDA events, median of 5 runs of N replays).

Usage (GPU host, PyTorch 2.x):  python3 scripts/bench_qwen_torch.py [--steps 200] [--json F]
"""
import argparse
import os
import json
import statistics

import torch
import torch.nn.functional as F

V, H, I, L, NH, NKV, HD = 151936, 1024, 3072, 28, 16, 8, 128
EPS, THETA = 1e-6, 1_000_000.0


def rms(x, w):
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS)
    return w * xf.to(x.dtype)


def rope(x, cos, sin):
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rot * sin


def make_weights(gen):
    def lin(o, i):
        return (torch.rand(o, i, generator=gen, device="cuda") * 2 - 1).mul_(0.02 * 3 ** 0.5).to(torch.bfloat16)

    def norm(n):
        return (1 + (torch.rand(n, generator=gen, device="cuda") * 2 - 1) * 0.1).to(torch.bfloat16)

    layers = []
    for _ in range(L):
        layers.append(dict(
            ln1=norm(H), wqkv=lin((NH + 2 * NKV) * HD, H), qn=norm(HD), kn=norm(HD), wo=lin(H, NH * HD),
            ln2=norm(H), wgu=lin(2 * I, H), wd=lin(H, I)))
    return dict(embed=lin(V, H), norm=norm(H), layers=layers)


def decode_step(W, kc, vc, ids, pos, cos_t, sin_t):
    """One decode token per sequence; kc/vc: [L, B, S, NKV, HD]; pos: [B] int64."""
    B = ids.shape[0]
    x = W["embed"][ids]
    cos = cos_t[pos][:, None, :]
    sin = sin_t[pos][:, None, :]
    S = kc.shape[2]
    mask = torch.arange(S, device=ids.device)[None, :] <= pos[:, None]  # [B, S]
    bidx = torch.arange(B, device=ids.device)
    residual = x
    h = None
    for li, lw in enumerate(W["layers"]):
        if h is not None:
            residual = residual + h
        xn = rms(residual, lw["ln1"])
        qkv = F.linear(xn, lw["wqkv"])
        q, k, v = qkv.split([NH * HD, NKV * HD, NKV * HD], dim=-1)
        q = rope(rms(q.view(B, NH, HD), lw["qn"]), cos, sin)
        k = rope(rms(k.view(B, NKV, HD), lw["kn"]), cos, sin)
        kc[li, bidx, pos] = k
        vc[li, bidx, pos] = v.view(B, NKV, HD)
        kk = kc[li].repeat_interleave(NH // NKV, dim=2)  # [B, S, NH, HD]
        vv = vc[li].repeat_interleave(NH // NKV, dim=2)
        att = torch.einsum("bhd,bshd->bhs", q.float(), kk.float()) * HD ** -0.5
        att = att.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)
        o = torch.einsum("bhs,bshd->bhd", att, vv.float()).to(torch.bfloat16).reshape(B, NH * HD)
        residual = residual + F.linear(o, lw["wo"])
        xn = rms(residual, lw["ln2"])
        g, u = F.linear(xn, lw["wgu"]).split([I, I], dim=-1)
        h = F.linear(F.silu(g) * u, lw["wd"])
    xf = rms(residual + h, W["norm"])
    logits = F.linear(xf, W["embed"])
    return logits.argmax(-1)


def bench(batch, steps, ctx, W, cos_t, sin_t, mode):
    kc = torch.zeros(L, batch, ctx, NKV, HD, dtype=torch.bfloat16, device="cuda")
    vc = torch.zeros_like(kc)
    ids = torch.randint(0, V, (batch,), device="cuda")
    pos = torch.full((batch,), ctx // 2, dtype=torch.int64, device="cuda")
    # A fresh static compile per batch size: a second shape would otherwise recompile
    # with dynamic shapes (slower to build, slower code).
    torch._dynamo.reset()
    step = torch.compile(decode_step, mode=mode, fullgraph=True, dynamic=False)
    for _ in range(3):
        step(W, kc, vc, ids, pos, cos_t, sin_t)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        step(W, kc, vc, ids, pos, cos_t, sin_t)
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        out = step(W, kc, vc, ids, pos, cos_t, sin_t)
    runs = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(steps):
            g.replay()
        b.record()
        torch.cuda.synchronize()
        runs.append(a.elapsed_time(b) / steps)
    del out
    return statistics.median(runs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--ctx", type=int, default=128, help="static KV length (decode at position ctx/2)")
    ap.add_argument("--batch", default="1,64")
    ap.add_argument("--json")
    ap.add_argument("--mode", default="default",
                    help="torch.compile mode (default | max-autotune-no-cudagraphs); the graph is ours")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = True
    gen = torch.Generator(device="cuda").manual_seed(1)
    W = make_weights(gen)
    inv = 1.0 / (THETA ** (torch.arange(0, HD, 2, dtype=torch.int64, device="cuda").float() / HD))
    ang = torch.arange(a.ctx, device="cuda").float()[:, None] * inv[None, :]
    emb = torch.cat((ang, ang), dim=-1)
    cos_t, sin_t = emb.cos().to(torch.bfloat16), emb.sin().to(torch.bfloat16)
    gb = sum(t.numel() for t in [W["embed"], W["norm"]] + [v for lw in W["layers"] for v in lw.values()]) * 2 / 1e9
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | {gb:.3f} GB bf16 weights | ctx {a.ctx}")
    res = []
    for b in [int(x) for x in a.batch.split(",")]:
        ms = bench(b, a.steps, a.ctx, W, cos_t, sin_t, a.mode)
        print(f"torch inductor ({a.mode}) + CUDA graph decode: batch {b:>3}: {ms:.3f} ms/step "
              f"({gb / (ms / 1e3):.0f} GB/s of weights)", flush=True)
        res.append({"batch": b, "ms_per_step": ms})
        if a.json:  # after every batch size: a run cut short keeps what it measured
            with open(a.json + ".tmp", "w") as f:
                json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "mode": a.mode,
                           "decode": res}, f)
                f.write("\n")
            os.replace(a.json + ".tmp", a.json)


if __name__ == "__main__":
    main()
