#!/usr/bin/env python3
"""The seeds' metadata builders in their torch forms, on the GPU, per CUDA-graph replay.

The baselines of `specreplay gpu builders` (executor/src/builders/timing.rs), same sizes,
run in the same session on the same GPU (scripts/gpu-check.sh stage `torch-builders`):

* floor: a graph of one tiny kernel (`x.zero_()` on one element).
* NSA target_verify (seed 001), D 4, bs 1 / 32 / 256, seq_lens 100-3099, topk 2048:
  `loop` = SGLang's list comprehension of per-request `torch.arange` + `torch.cat`
  (nsa_backend.py init_forward_metadata_replay_cuda_graph, target_verify), run eagerly as
  upstream does (it needs the host list); `quick-win` = seed 001's vectorization
  (`repeat_interleave(kv - D + 1, D) + arange(D).expand(bs, D)`), captured in a graph.
  Both followed by SGLang's copies into the metadata buffers (`cache_seqlens`,
  `cu_seqlens_k[1:]`, `nsa_seqlens_expanded`, `nsa_cache_seqlens = clamp(max=topk)`,
  `nsa_cu_seqlens_k[1:]`), no page table.
* NSA draft_extend (seed 002), accept_length 1-4: `loop` eagerly; `ragged` = the vectorization
  for per-request lengths (`repeat_interleave(kv - qo + 1, qo, output_size=n) + arange(n) -
  repeat_interleave(cu_qo[:-1], qo, output_size=n)`, n from the host mirror), in a graph.
* Sparse (seed 003, sparse-attention-hub PQCache iter-9 torch ops) at (b 1, h 32, sk 8192) and
  (b 4, h 32, sk 32768), sink 128, heavy 2048, window 512, init_offset 128: arange fills,
  `weight_list.zero_()`, `weight_list[b_idx, h_idx, sparse_list] = 1.0`, in a graph.
* Draft selection (seed 000) at bs 1 / 32 / 256, 128 candidates, counts [1, 1, 1, 64] repeated
  (bs 1: [64]): `loop` = per-request `torch.topk(scores[i], c_i)` (captured, and eagerly);
  `vectorized` = one `topk(scores, max c)`, cumsum, two `repeat_interleave`s, a gather and a
  `split` (captured).

Each graph is replayed --replays times, CUDA events around every replay, the replays queued
in batches of 100 behind `torch.cuda._sleep` so the events see device time only (as the Rust
side's `executor/src/builders/timing.rs`); the median per replay is reported. Eager forms are
timed back to back (events around one call, the host's launch cost included: they are
host-bound). Every torch form is
checked against the per-request reference first (values equal), so a wrong baseline is not
timed. Prints a table, writes --json. Needs PyTorch with CUDA.
"""

import argparse
import json
import platform
import statistics
import sys
import traceback


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--replays", type=int, default=2000)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    try:
        import torch
    except ImportError as e:
        print(f"torch-builders: error: PyTorch is not importable: {e}", file=sys.stderr)
        return 3

    if not torch.cuda.is_available():
        print("torch-builders: error: no CUDA device visible to torch", file=sys.stderr)
        return 3
    dev = torch.device("cuda")
    torch.manual_seed(0)
    rows = []
    failures = []

    def timed(fn, replays, queued):
        """Median µs per call, CUDA events around each. queued: calls go in batches of 100
        behind torch.cuda._sleep (about 10 ms), so the events see device time only (graph
        replays; the Rust side's timing::time does the same); otherwise back to back, the
        host's own cost included (the eager per-request loops, which are host-bound)."""
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
        us = []
        left = replays
        while left > 0:
            n = min(left, 100) if queued else left
            left -= n
            start = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
            end = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
            torch.cuda.synchronize()
            if queued:
                torch.cuda._sleep(20_000_000)
            for i in range(n):
                start[i].record()
                fn()
                end[i].record()
            torch.cuda.synchronize()
            us.extend(s.elapsed_time(e) * 1000.0 for s, e in zip(start, end))
        return statistics.median(us)

    def graph_of(fn):
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
        torch.cuda.synchronize()
        return g

    def record(name, form, size, mode, fn):
        try:
            if mode == "graph":
                g = graph_of(fn)
                us = timed(g.replay, args.replays, True)
            else:
                us = timed(fn, max(args.replays // 10, 50), False)
            rows.append({"builder": name, "form": form, "size": size, "mode": mode, "median_us": us})
            print(f"{name:<22} {form:<12} {size:<20} {mode:<6} {us:>10.2f}", flush=True)
        except Exception as e:  # keep going: one broken form must not hide the others
            failures.append(f"{name} {form} {size}: {e!r}")
            print(f"{name:<22} {form:<12} {size:<20} {mode:<6}     FAILED: {e!r}", flush=True)
            traceback.print_exc()

    print(f"torch {torch.__version__} CUDA {torch.version.cuda} on {torch.cuda.get_device_name(0)}")
    print(f"{'builder':<22} {'form':<12} {'size':<20} {'mode':<6} {'median_us':>10}")

    one = torch.zeros(1, device=dev)
    record("floor", "one-kernel", "-", "graph", lambda: one.zero_())

    D, TOPK = 4, 2048
    gen = torch.Generator().manual_seed(1)
    for bs in (1, 32, 256):
        seq_cpu = torch.randint(100, 3100, (bs,), generator=gen, dtype=torch.int32)
        acc_cpu = torch.randint(1, 5, (bs,), generator=gen, dtype=torch.int32)
        seq = seq_cpu.to(dev)
        acc = acc_cpu.to(dev)
        acc_l = acc.to(torch.int64)  # repeat counts as staged (int64), outside the graph
        seq_list, acc_list = seq_cpu.tolist(), acc_cpu.tolist()
        rows_cap = bs * D
        # The metadata buffers of one captured graph (verify-shaped, as SGLang captures).
        cache_seqlens = torch.zeros(bs, dtype=torch.int32, device=dev)
        cu_seqlens_k = torch.zeros(bs + 1, dtype=torch.int32, device=dev)
        expanded_buf = torch.zeros(rows_cap, dtype=torch.int32, device=dev)
        nsa_cache_buf = torch.zeros(rows_cap, dtype=torch.int32, device=dev)
        nsa_cu_buf = torch.zeros(rows_cap + 1, dtype=torch.int32, device=dev)

        def finish(cache, expanded, n):
            cache_seqlens.copy_(cache)
            cu_seqlens_k[1:].copy_(torch.cumsum(cache, dim=0, dtype=torch.int32))
            expanded_buf[:n].copy_(expanded)
            nsa = expanded.clamp(max=TOPK)
            nsa_cache_buf[:n].copy_(nsa)
            nsa_cu_buf[1 : 1 + n].copy_(torch.cumsum(nsa, dim=0, dtype=torch.int32))

        # target_verify
        def tv_loop():
            kv_list = [D + s for s in seq_list]
            e = torch.cat([torch.arange(kv - D + 1, kv + 1, dtype=torch.int32, device=dev) for kv in kv_list])
            finish((seq + D).to(torch.int32), e, rows_cap)
            return e

        base = torch.arange(D, dtype=torch.int32, device=dev)

        def tv_quick():
            kv = (seq + D).to(torch.int32)
            start = kv - D + 1
            e = torch.repeat_interleave(start, D) + base.unsqueeze(0).expand(bs, -1).contiguous().view(-1)
            finish(kv, e, rows_cap)
            return e

        # draft_extend (v1): qo = accept_length, kv = seq_lens
        n = int(sum(acc_list))

        def de_loop():
            e = torch.cat(
                [torch.arange(kv - q + 1, kv + 1, dtype=torch.int32, device=dev) for q, kv in zip(acc_list, seq_list)]
            )
            finish(seq.to(torch.int32), e, n)
            return e

        ar = torch.arange(n, dtype=torch.int32, device=dev)

        def de_ragged():
            kv = seq.to(torch.int32)
            start = kv - acc + 1
            cu = torch.cumsum(acc, dim=0, dtype=torch.int32)
            row_start = torch.repeat_interleave(cu - acc, acc_l, output_size=n)
            e = torch.repeat_interleave(start, acc_l, output_size=n) + (ar - row_start)
            finish(kv, e, n)
            return e

        for a, b, what in ((tv_loop, tv_quick, "target_verify"), (de_loop, de_ragged, "draft_extend")):
            ea, eb = a(), b()
            if not torch.equal(ea, eb):
                failures.append(f"nsa {what} bs {bs}: the vectorized form differs from the loop")
                print(f"MISMATCH nsa {what} bs {bs}", flush=True)
        size = f"bs {bs}"
        record("nsa-target-verify", "loop", size, "eager", tv_loop)
        record("nsa-target-verify", "quick-win", size, "graph", tv_quick)
        record("nsa-draft-extend", "loop", size, "eager", de_loop)
        record("nsa-draft-extend", "ragged", size, "graph", de_ragged)

    # Sparse sink + heavy + window (seed 003, iter-9 torch ops).
    for b, h, sk in ((1, 32, 8192), (4, 32, 32768)):
        sink, heavy, window, init = 128, 2048, 512, 128
        L = sink + heavy + window
        topk = torch.randint(0, sk - init, (b, h, heavy), generator=gen).to(dev)
        sparse_list = torch.empty(b, h, L, dtype=torch.int64, device=dev)
        weight_list = torch.empty(b, h, sk, dtype=torch.float32, device=dev)
        bi = torch.arange(b, device=dev).view(b, 1, 1)
        hi = torch.arange(h, device=dev).view(1, h, 1)
        sink_ar = torch.arange(sink, device=dev).view(1, 1, -1)
        win_ar = torch.arange(sk - window, sk, device=dev).view(1, 1, -1)
        one_val = torch.ones((), dtype=torch.float32, device=dev)

        def sparse_build():
            sparse_list[:, :, :sink] = sink_ar
            sparse_list[:, :, sink : sink + heavy] = topk + init
            sparse_list[:, :, sink + heavy :] = win_ar
            weight_list.zero_()
            # weight_list[batch_idx, head_idx, sparse_list] = 1.0 (the value on the device, so
            # nothing is copied from the host inside the capture)
            weight_list.index_put_((bi, hi, sparse_list), one_val)

        sparse_build()
        torch.cuda.synchronize()
        if int(weight_list.sum().item()) > b * h * L or not bool((weight_list[:, :, :sink] == 1).all()):
            failures.append(f"sparse b {b} h {h} sk {sk}: weights wrong")
        record("sparse-indices", "iter-9", f"b {b} h {h} sk {sk}", "graph", sparse_build)

    # Draft selection (seed 000).
    for bs in (1, 32, 256):
        n_cand = 128
        counts = [64] if bs == 1 else [64 if i % 4 == 3 else 1 for i in range(bs)]
        # Distinct scores per row (ties would make the two forms' orders legitimately differ).
        scores = torch.stack([torch.randperm(n_cand, generator=gen).float() / n_cand for _ in range(bs)]).to(dev)
        counts_t = torch.tensor(counts, dtype=torch.int64, device=dev)
        total, max_c = sum(counts), max(counts)
        ar_total = torch.arange(total, device=dev)
        req = torch.repeat_interleave(torch.arange(bs, device=dev), counts_t, output_size=total)

        def ds_loop():
            return [torch.topk(scores[i], c).indices for i, c in enumerate(counts) if c > 0]

        def ds_vec():
            top = torch.topk(scores, max_c, dim=-1).indices
            cums = torch.cumsum(counts_t, dim=0)
            offsets = cums - counts_t
            off_rep = torch.repeat_interleave(offsets, counts_t, output_size=total)
            local = ar_total - off_rep
            flat = top[req, local]
            return torch.split(flat, counts)

        la, lb = ds_loop(), [t for t in ds_vec() if t.numel() > 0]
        if len(la) != len(lb) or not all(torch.equal(x, y) for x, y in zip(la, lb)):
            failures.append(f"draft-select bs {bs}: vectorized differs from the loop")
            print(f"MISMATCH draft-select bs {bs}", flush=True)
        size = f"bs {bs}"
        record("draft-select", "loop", size, "eager", ds_loop)
        record("draft-select", "loop", size, "graph", ds_loop)
        record("draft-select", "vectorized", size, "graph", ds_vec)

    result = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0),
        "python": platform.python_version(),
        "replays": args.replays,
        "rows": rows,
        "failures": failures,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    for f in failures:
        print(f"FAILED {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
