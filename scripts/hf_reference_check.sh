#!/usr/bin/env bash
# The gpu-check stage `hf-reference` (GPU host: torch + transformers, offline):
#   bash scripts/hf_reference_check.sh [SPECREPLAY_BIN] [WORK_DIR]
# 1. `gpu make-checkpoint --preset qwen3-0.6b --seed 1` (random weights, HF layout);
# 2. specreplay's CPU reference (`gpu reference`) and transformers' Qwen3ForCausalLM in
#    bf16 (`scripts/hf_reference.py run`), concurrently, on 3 prompts: prefill logits and
#    256 greedy tokens each;
# 3. compare: prefill logits rel err <= 1e-2, continuations identical or diverging at a
#    numerical near tie (transformers' top-1/top-2 margin <= 4 bf16 ulps);
# 4. the same against transformers in float32 (32 tokens, rel err <= 1e-3): checks the
#    reference itself, whose arithmetic is f32.
# Prints every figure; exit 0 only if both comparisons pass.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${1:-.gpu/specreplay}
work=${2:-${TMPDIR:-/tmp}/specreplay-hf-reference}
rm -rf "$work" && mkdir -p "$work"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
t0=$(date +%s)
"$bin" gpu make-checkpoint --preset qwen3-0.6b --seed 1 "$work/qwen" || exit 2
ids() { python3 -c 'import sys; print(",".join(str(b) for b in sys.argv[1].encode()))' "$1"; }
p1=$(ids "The quick brown fox jumps over the lazy dog.")
p2=$(ids "abc abc abc abc abc abc abc abc abc abc")
p3="151000,7,90000,123,5000,42,131071,1"
"$bin" gpu reference --model "$work/qwen" --prompt-ids "$p1" --prompt-ids "$p2" --prompt-ids "$p3" \
    --max-tokens 256 --json "$work/ours.json" >"$work/ours.log" 2>&1 &
ours_pid=$!
python3 scripts/hf_reference.py run --model "$work/qwen" --prompt-ids "$p1" --prompt-ids "$p2" \
    --prompt-ids "$p3" --max-tokens 256 --dtype bfloat16 --out "$work/hf-bf16.json"
hf_rc=$?
wait "$ours_pid"
ours_rc=$?
cat "$work/ours.log"
echo "after $(($(date +%s) - t0)) s: specreplay reference exit $ours_rc, transformers bf16 exit $hf_rc"
[ "$ours_rc" = 0 ] && [ "$hf_rc" = 0 ] || exit 2
echo "== CPU reference vs transformers bfloat16 (the acceptance criterion)"
python3 scripts/hf_reference.py compare --ours "$work/ours.json" --theirs "$work/hf-bf16.json" \
    --max-rel-err 1e-2 --near-tie-ulps 4
bf16_rc=$?
echo "== CPU reference vs transformers float32 (32 tokens)"
python3 scripts/hf_reference.py compare --ours "$work/ours.json" --model "$work/qwen" --dtype float32 \
    --max-tokens 32 --out "$work/hf-f32.json" --max-rel-err 1e-3 --near-tie-ulps 4
f32_rc=$?
# The executor's own numbers (the CUDA forward's bitwise CPU twin: bf16 activations, f32
# accumulation) on the 3 prompts' prefill, against transformers bf16 (the acceptance
# metric), and the yardstick: transformers bf16 against transformers f32 on the same rows.
"$bin" gpu reference --forward executor --model "$work/qwen" --prompt-ids "$p1" --prompt-ids "$p2" \
    --prompt-ids "$p3" --max-tokens 0 --json "$work/executor.json" || exit 2
echo "== executor (CPU twin of the CUDA forward) vs transformers bfloat16, prefill"
python3 scripts/hf_reference.py compare --ours "$work/executor.json" --theirs "$work/hf-bf16.json" \
    --max-tokens 0 --max-rel-err 1e-2 --near-tie-ulps 4
exec_rc=$?
echo "== yardstick: transformers float32 vs transformers bfloat16, prefill"
python3 scripts/hf_reference.py compare --ours "$work/hf-f32.json" --theirs "$work/hf-bf16.json" \
    --max-tokens 0 --max-rel-err 1e-2 --near-tie-ulps 4
echo "hf-reference: bf16 comparison exit $bf16_rc, f32 comparison exit $f32_rc, executor comparison exit $exec_rc, $(($(date +%s) - t0)) s"
echo "reproduce: bash scripts/hf_reference_check.sh $bin $work"
[ "$bf16_rc" = 0 ] && [ "$f32_rc" = 0 ]
