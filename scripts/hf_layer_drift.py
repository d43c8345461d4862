#!/usr/bin/env python3
"""How two bf16 forms of one Qwen3 checkpoint drift apart, layer by layer (a diagnostic for
issue 14 item 3; CPU is enough).

    python3 scripts/hf_layer_drift.py --model DIR [--prompt-ids 1,2,3] [--round-p] [--resync]

Runs transformers' Qwen3ForCausalLM in bf16 (SDPA attention) and, beside it, the executor's
rounding points written out in torch (`executor/src/model/kernels_ref.rs`: f32 sums of bf16
values, rounded to bf16 where transformers rounds; attention softmax in f32 with P kept in
f32, or rounded to bf16 before P.V with --round-p, as FlashAttention-style SDPA kernels do).
Prints, per layer, the fraction of the layer's output elements whose bf16 bits differ and
the norm-wise relative difference, then the prefill logits' max|a-b| / max|b|.
--resync feeds every layer transformers' own input, so each line shows one layer's own
difference; without it the difference compounds from layer to layer.
"""
import argparse

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-ids", default="151000,7,90000,123,5000,42,131071,1")
    ap.add_argument("--round-p", action="store_true")
    ap.add_argument("--resync", action="store_true")
    a = ap.parse_args()
    ids = [int(t) for t in a.prompt_ids.split(",")]
    m = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16, attn_implementation="sdpa").eval()
    cfg = m.config
    outs = {}
    for i, layer in enumerate(m.model.layers):
        layer.register_forward_hook(lambda mod, inp, out, i=i: outs.__setitem__(i, (out[0] if isinstance(out, tuple) else out)[0].float()))
    with torch.no_grad():
        hf_logits = m(torch.tensor([ids])).logits[0].float()
    W = {k: v.float() for k, v in m.state_dict().items()}

    def bf(t):
        return t.to(torch.bfloat16).float()

    def rms(x, w):
        return bf(w * bf(x * torch.rsqrt((x * x).mean(-1, keepdim=True) + cfg.rms_norm_eps)))

    n, H, KV, D = len(ids), cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    theta = cfg.rope_parameters["rope_theta"] if getattr(cfg, "rope_parameters", None) else cfg.rope_theta
    inv = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
    ang = torch.arange(n).float()[:, None] * inv[None, :]
    ang = torch.cat((ang, ang), -1)
    cos, sin = bf(ang.cos())[:, None], bf(ang.sin())[:, None]

    def rope(x):
        rot = torch.cat((-x[..., D // 2:], x[..., :D // 2]), -1)
        return bf(bf(x * cos) + bf(rot * sin))

    x = bf(W["model.embed_tokens.weight"][ids])
    mask = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        h = rms(x, W[p + "input_layernorm.weight"])
        q = rope(rms(bf(h @ W[p + "self_attn.q_proj.weight"].T).view(n, H, D), W[p + "self_attn.q_norm.weight"]))
        k = rope(rms(bf(h @ W[p + "self_attn.k_proj.weight"].T).view(n, KV, D), W[p + "self_attn.k_norm.weight"]))
        v = bf(h @ W[p + "self_attn.v_proj.weight"].T).view(n, KV, D)
        k, v = k.repeat_interleave(H // KV, 1), v.repeat_interleave(H // KV, 1)
        s = (torch.einsum("qhd,khd->hqk", q, k) * D ** -0.5).masked_fill(mask, float("-inf"))
        e = torch.exp(s - s.max(-1, keepdim=True).values)
        pv = bf(e) if a.round_p else e
        att = bf(torch.einsum("hqk,khd->qhd", pv, v) / e.sum(-1).transpose(0, 1)[..., None])
        x = bf(x + bf(att.reshape(n, H * D) @ W[p + "self_attn.o_proj.weight"].T))
        h2 = rms(x, W[p + "post_attention_layernorm.weight"])
        g, u = bf(h2 @ W[p + "mlp.gate_proj.weight"].T), bf(h2 @ W[p + "mlp.up_proj.weight"].T)
        x = bf(x + bf(bf(bf(g / (1 + torch.exp(-g))) * u) @ W[p + "mlp.down_proj.weight"].T))
        ref = outs[i]
        flips = (x.to(torch.bfloat16).view(torch.int16) != ref.to(torch.bfloat16).view(torch.int16)).float().mean()
        print(f"layer {i:2}: {100 * flips.item():6.2f}% of output elements differ, "
              f"norm-wise {((x - ref).norm() / ref.norm()).item():.2e}")
        if a.resync:
            x = ref
    logits = bf(rms(x, W["model.norm.weight"]) @ W["model.embed_tokens.weight"].T)
    print(f"prefill logits: max|a-b|/max|b| {((logits - hf_logits).abs().max() / hf_logits.abs().max()).item():.3e}, "
          f"norm-wise {((logits - hf_logits).norm() / hf_logits.norm()).item():.3e} "
          f"(round-p {a.round_p}, resync {a.resync})")


if __name__ == "__main__":
    main()
