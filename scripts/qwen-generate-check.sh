#!/usr/bin/env bash
# qwen-generate stage of scripts/gpu-check.sh (issue 14): a random-weight Qwen3-0.6B
# checkpoint written by make-checkpoint, loaded by `gpu generate --model`, driven through the
# engine on scenarios/gpu/qwen_mixed.json (5 staggered requests, n-gram k 3, FULL and
# PIECEWISE graphs, KV tight enough to preempt), recorded with --trace and
#   1. replayed by the CPU simulator (identical),
#   2. generated again: the same trace bytes,
#   3. generated without speculation: the same tokens per request (speculation is lossless),
#   4. generated with every step eager: the same tokens (graphs change nothing),
#   5. generated with --poison (unwritten KV slots, scratch and logits NaN before every step):
#      the same trace bytes (nothing reads what the step did not write),
#   6. `gpu replay --model` of this trace and of the committed traces/qwen3_0.6b_mixed_gpu.json
#      (recorded on another card): every logits row reproduced bit for bit on the device.
# Usage: scripts/qwen-generate-check.sh SPECREPLAY WORKDIR OUTDIR
set -uo pipefail
bin=$1 work=$2 out=$3
# QWEN_KERNELS=PLAN: every `gpu generate` here runs that kernel plan (default: the default plan).
kern=()
[ -n "${QWEN_KERNELS:-}" ] && kern=(--kernels "$QWEN_KERNELS")
mkdir -p "$work" "$out"
sc=scenarios/gpu/qwen_mixed.json
ck="$work/qwen3-0.6b-seed1"
[ -d "$ck" ] || "$bin" gpu make-checkpoint --preset qwen3-0.6b --seed 1 "$ck" || exit 1
python3 - "$sc" "$work/nospec.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for k in ("method", "num_speculative_tokens", "prompt_lookup_min", "prompt_lookup_max"):
    d["config"].pop(k, None)
json.dump(d, open(sys.argv[2], "w"))
PY
fail=0
"$bin" gpu generate ${kern[@]+"${kern[@]}"} --model "$ck" --scenario "$sc" --trace "$out/qwen_mixed_gpu.json" >"$work/spec.txt" || exit 1
cat "$work/spec.txt"
"$bin" replay "$out/qwen_mixed_gpu.json" || { echo "qwen-generate: CPU replay FAILED"; fail=1; }
"$bin" show "$out/qwen_mixed_gpu.json" | grep -icE "preempt" | sed 's/^/qwen-generate: preemption lines in show: /'
"$bin" gpu generate ${kern[@]+"${kern[@]}"} --model "$ck" --scenario "$sc" --trace "$work/again.json" >/dev/null || exit 1
if cmp -s "$out/qwen_mixed_gpu.json" "$work/again.json"; then echo "qwen-generate: second run, same trace bytes"; else echo "qwen-generate: second run DIFFERENT bytes"; fail=1; fi
"$bin" gpu generate ${kern[@]+"${kern[@]}"} --model "$ck" --scenario "$work/nospec.json" >"$work/plain.txt" || exit 1
"$bin" gpu generate ${kern[@]+"${kern[@]}"} --model "$ck" --scenario "$sc" --eager >"$work/eager.txt" || exit 1
toks() { grep -E '^q[0-9]+: ' "$1"; }
if [ "$(toks "$work/spec.txt")" = "$(toks "$work/plain.txt")" ]; then
    echo "qwen-generate: speculative output identical to plain greedy output ($(toks "$work/spec.txt" | wc -l) requests)"
else
    echo "qwen-generate: speculative output DIFFERS from plain greedy output"; diff <(toks "$work/spec.txt") <(toks "$work/plain.txt") | head -20; fail=1
fi
if [ "$(toks "$work/spec.txt")" = "$(toks "$work/eager.txt")" ]; then
    echo "qwen-generate: eager output identical to graph output"
else
    echo "qwen-generate: eager output DIFFERS"; fail=1
fi
"$bin" gpu generate ${kern[@]+"${kern[@]}"} --model "$ck" --scenario "$sc" --poison --trace "$work/poison.json" >/dev/null || exit 1
if cmp -s "$out/qwen_mixed_gpu.json" "$work/poison.json"; then echo "qwen-generate: --poison run, same trace bytes"; else echo "qwen-generate: --poison run DIFFERENT"; "$bin" diff "$out/qwen_mixed_gpu.json" "$work/poison.json" | head -20; fail=1; fi
for t in "$out/qwen_mixed_gpu.json" traces/qwen3_0.6b_mixed_gpu.json traces/qwen3_0.6b_mixed_gpu_tensor.json; do
    if "$bin" gpu replay --model "$ck" "$t" >"$work/replay-model.txt" 2>&1; then
        echo "qwen-generate: gpu replay --model $t: $(tail -n 1 "$work/replay-model.txt")"
    else
        echo "qwen-generate: gpu replay --model $t FAILED"; head -20 "$work/replay-model.txt"; fail=1
    fi
done
grep -h '^generated' "$work/plain.txt" "$work/eager.txt" | sed 's/^/qwen-generate: /'
exit $fail
