#!/usr/bin/env bash
# qwen-invariance stage of scripts/gpu-check.sh (issue 14, item 4: batch invariance on the
# GPU). A random-weight Qwen3-0.6B checkpoint (make-checkpoint seed 1); 3 prompts of 1,024
# generated tokens each (p1 text bytes, p2 a repetitive text, p3 token ids across the
# vocabulary), greedy, recorded with --trace:
#   1. each prompt alone (batch 1), plain decode and n-gram k 3: the same 1,024 tokens, and
#      `specreplay diff --by-position`: every kept logits row (verify rows included) has the
#      digest of the sequential decode's row at that position;
#   2. the 3 prompts inside a batch of 16 mixed requests (13 mates: other prompts, lengths,
#      max_tokens and arrivals), n-gram k 3: the same tokens and rows as alone;
#   3. that batch without speculation: all 16 requests' rows equal the speculative run's;
#   4. the same 3 prompts with 13 other mates: the same rows (mates change nothing).
# Usage: scripts/qwen-invariance-check.sh SPECREPLAY WORKDIR OUTDIR
set -uo pipefail
bin=$1 work=$2 out=$3
# QWEN_KERNELS=PLAN: every `gpu generate` here runs that kernel plan (default: the default plan).
kern=()
[ -n "${QWEN_KERNELS:-}" ] && kern=(--kernels "$QWEN_KERNELS")
mkdir -p "$work" "$out"
ck="$work/qwen3-0.6b-seed1"
[ -d "$ck" ] || "$bin" gpu make-checkpoint --preset qwen3-0.6b --seed 1 "$ck" >/dev/null || exit 1
TOKENS=${INVARIANCE_TOKENS:-1024}
python3 - "$work" "$TOKENS" <<'PY'
import json, random, sys
work, tokens = sys.argv[1], int(sys.argv[2])
prompts = {
    "p1": list(b"The quick brown fox jumps over the lazy dog."),
    "p2": list(b"abc abc abc abc abc abc abc abc abc abc"),
    "p3": [151000, 7, 90000, 123, 5000, 42, 131071, 1],
}
def config(k):
    c = {"profile": "vllm-v1", "block_size": 16, "num_gpu_blocks": 1280, "max_num_seqs": 16,
         "max_num_batched_tokens": 512, "max_model_len": tokens + 96,
         "cudagraph_capture_sizes": [1, 2, 4, 8, 16, 24, 32, 48, 64],
         "cudagraph_mode": "FULL_AND_PIECEWISE", "enable_chunked_prefill": True,
         "enable_prefix_caching": True}
    if k:
        c.update({"method": "ngram", "num_speculative_tokens": k, "prompt_lookup_min": 2,
                  "prompt_lookup_max": 4})
    return c
oracle = {"kind": "synthetic", "seed": 0, "vocab_size": 2, "order": 1}
def req(rid, p, n, arrival):
    return {"req_id": rid, "prompt_token_ids": p, "max_tokens": n, "arrival_step": arrival}
def mates(tag, seed):
    rng = random.Random(seed)
    out = []
    for i in range(13):
        n = rng.randrange(4, 80)
        if rng.random() < 0.5:  # repetitive: drafts get proposed and accepted
            unit = [rng.randrange(151936) for _ in range(rng.randrange(1, 6))]
            p = (unit * n)[:n]
        else:
            p = [rng.randrange(151936) for _ in range(n)]
        out.append(req(f"{tag}{i:02}", p, rng.randrange(16, 600), rng.randrange(1, 300)))
    return out
main = [req(rid, p, tokens, 1 + 40 * i) for i, (rid, p) in enumerate(prompts.items())]
for rid, p in prompts.items():
    for k in (0, 3):
        json.dump({"config": config(k), "requests": [req(rid, p, tokens, 1)], "oracle": oracle},
                  open(f"{work}/b1-{rid}-k{k}.json", "w"))
for tag, seed in (("a", 1), ("b", 2)):
    for k in (0, 3):
        json.dump({"config": config(k), "requests": main + mates(tag, seed), "oracle": oracle},
                  open(f"{work}/b16{tag}-k{k}.json", "w"))
PY
fail=0
gen() { # NAME: runs the scenario $work/NAME.json, trace $work/NAME.trace.json
    if "$bin" gpu generate ${kern[@]+"${kern[@]}"} --model "$ck" --scenario "$work/$1.json" --trace "$work/$1.trace.json" \
        >"$work/$1.txt" 2>"$work/$1.err"; then
        echo "qwen-invariance: $1: $(grep '^generated' "$work/$1.txt")"
    else
        echo "qwen-invariance: $1 FAILED: $(tail -n 1 "$work/$1.err")"; fail=1
    fi
}
toks() { grep -E "^$2: " "$work/$1.txt"; }
same_tokens() { # A B REQ
    local a b
    a=$(toks "$1" "$3") b=$(toks "$2" "$3")
    if [ -n "$a" ] && [ "$a" = "$b" ]; then
        echo "qwen-invariance: $3 tokens identical in $1 and $2 ($(echo "${a#*: }" | tr ',' '\n' | wc -l) tokens)"
    else
        echo "qwen-invariance: $3 tokens DIFFER between $1 and $2"; fail=1
    fi
}
by_position() { # A B
    if "$bin" diff --by-position "$work/$1.trace.json" "$work/$2.trace.json" >"$work/bp.txt" 2>&1; then
        echo "qwen-invariance: $1 vs $2: $(tail -n 1 "$work/bp.txt")"
    else
        echo "qwen-invariance: $1 vs $2: DIFFERENT"; sed 's/^/    /' "$work/bp.txt" | head -40; fail=1
    fi
}
for p in p1 p2 p3; do
    gen "b1-$p-k0"; gen "b1-$p-k3"
    same_tokens "b1-$p-k0" "b1-$p-k3" "$p"
    by_position "b1-$p-k0" "b1-$p-k3"
done
gen b16a-k3; gen b16a-k0; gen b16b-k3
for p in p1 p2 p3; do
    same_tokens "b1-$p-k0" b16a-k3 "$p"
    by_position "b1-$p-k0" b16a-k3
    same_tokens b16a-k3 b16b-k3 "$p"
done
by_position b16a-k0 b16a-k3
by_position b16a-k3 b16b-k3
echo "qwen-invariance: exit $fail"
echo "reproduce: bash scripts/qwen-invariance-check.sh $bin $work $out"
exit $fail
