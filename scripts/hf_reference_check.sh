#!/usr/bin/env bash
# The gpu-check stage `hf-reference` (GPU host: torch + transformers, offline):
#   bash scripts/hf_reference_check.sh [SPECREPLAY_BIN] [WORK_DIR]
# 1. `gpu make-checkpoint --preset qwen3-0.6b --seed 1` (random weights, HF layout);
# 2. transformers' Qwen3ForCausalLM in bf16 (`scripts/hf_reference.py run`) on 3 prompts:
#    prefill logits and 256 greedy tokens each;
# 3. with a GPU (`gpu info` succeeds): the executor itself — `gpu generate` of each prompt
#    (256 greedy tokens, margins from its trace) with the prefill rows of the CUDA forward's
#    bitwise CPU twin (`gpu reference --forward executor`) — against transformers bf16:
#    prefill logits rel err <= 1e-2, continuations identical or diverging at a numerical near
#    tie (transformers' top-1/top-2 margin <= 4 bf16 ulps). The acceptance criterion;
# 4. unless HF_CPU_REFERENCE=0: specreplay's f32 CPU reference (`gpu reference`) against
#    transformers bf16 (the same bounds) and float32 (32 tokens, rel err <= 1e-3): checks
#    the reference itself (device-independent, slow on one core);
# 5. the yardsticks, prefill: transformers bf16 against transformers float32, against
#    itself with eager attention instead of SDPA, and (with CUDA) against itself on the CPU:
#    how far two bf16 forms of the same model drift apart on this checkpoint (not judged).
# Prints every figure; exit 0 only if every comparison run passes.
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
cpu_ref=${HF_CPU_REFERENCE:-1}
if [ "$cpu_ref" = 1 ]; then
    "$bin" gpu reference --model "$work/qwen" --prompt-ids "$p1" --prompt-ids "$p2" --prompt-ids "$p3" \
        --max-tokens 256 --json "$work/ours.json" >"$work/ours.log" 2>&1 &
    ours_pid=$!
fi
# The executor's prefill rows (CPU twin, one thread per process, one process per prompt)
# run beside transformers.
exec_pids=()
for i in 1 2 3; do
    p=p$i
    "$bin" gpu reference --forward executor --model "$work/qwen" --prompt-ids "${!p}" --max-tokens 0 \
        --json "$work/executor$i.json" >"$work/executor$i.log" 2>&1 &
    exec_pids+=($!)
done
python3 scripts/hf_reference.py run --model "$work/qwen" --prompt-ids "$p1" --prompt-ids "$p2" \
    --prompt-ids "$p3" --max-tokens 256 --dtype bfloat16 --out "$work/hf-bf16.json" || exit 2
python3 scripts/hf_reference.py run --model "$work/qwen" --prompt-ids "$p1" --prompt-ids "$p2" \
    --prompt-ids "$p3" --max-tokens 32 --dtype float32 --out "$work/hf-f32.json" || exit 2
for i in 1 2 3; do
    wait "${exec_pids[$((i - 1))]}" || { cat "$work/executor$i.log"; exit 2; }
done
python3 scripts/hf_reference.py merge --in "$work/executor1.json" --in "$work/executor2.json" \
    --in "$work/executor3.json" --out "$work/executor.json" || exit 2
echo "after $(($(date +%s) - t0)) s: transformers bf16 and f32, executor prefill rows done"
rc=0
if "$bin" gpu info >/dev/null 2>&1; then
    traces=()
    for i in 1 2 3; do
        p=p$i
        "$bin" gpu generate --model "$work/qwen" --prompt-ids "${!p}" --max-tokens 256 \
            --trace "$work/gen$i.json" >"$work/gen$i.txt" || exit 2
        echo "gpu generate prompt $i: $(grep '^generated' "$work/gen$i.txt")"
        traces+=(--trace "$work/gen$i.json")
    done
    python3 scripts/hf_reference.py attach-tokens --ours "$work/executor.json" "${traces[@]}" \
        --out "$work/gpu.json" || exit 2
    echo "== GPU executor (prefill: its bitwise CPU twin; 256 tokens: gpu generate) vs transformers bfloat16 (the acceptance criterion)"
    python3 scripts/hf_reference.py compare --ours "$work/gpu.json" --theirs "$work/hf-bf16.json" \
        --max-rel-err 1e-2 --near-tie-ulps 4 || rc=1
else
    echo "== executor (CPU twin of the CUDA forward) vs transformers bfloat16, prefill (no GPU here: no generation)"
    python3 scripts/hf_reference.py compare --ours "$work/executor.json" --theirs "$work/hf-bf16.json" \
        --max-tokens 0 --max-rel-err 1e-2 --near-tie-ulps 4 || rc=1
fi
if [ "$cpu_ref" = 1 ]; then
    wait "$ours_pid" || { cat "$work/ours.log"; exit 2; }
    echo "== CPU reference vs transformers bfloat16"
    python3 scripts/hf_reference.py compare --ours "$work/ours.json" --theirs "$work/hf-bf16.json" \
        --max-rel-err 1e-2 --near-tie-ulps 4 || rc=1
    echo "== CPU reference vs transformers float32 (32 tokens)"
    python3 scripts/hf_reference.py compare --ours "$work/ours.json" --theirs "$work/hf-f32.json" \
        --max-tokens 32 --max-rel-err 1e-3 --near-tie-ulps 4 || rc=1
fi
echo "== yardstick: transformers float32 vs transformers bfloat16, prefill"
python3 scripts/hf_reference.py compare --ours "$work/hf-f32.json" --theirs "$work/hf-bf16.json" \
    --max-tokens 0 --max-rel-err 1e-2 --near-tie-ulps 4
prompts=(--prompt-ids "$p1" --prompt-ids "$p2" --prompt-ids "$p3")
if python3 scripts/hf_reference.py run --model "$work/qwen" "${prompts[@]}" --max-tokens 0 \
    --attn-implementation eager --out "$work/hf-bf16-eager.json" >/dev/null; then
    echo "== yardstick: transformers bfloat16 eager attention vs its SDPA (the default), prefill"
    python3 scripts/hf_reference.py compare --ours "$work/hf-bf16-eager.json" --theirs "$work/hf-bf16.json" \
        --max-tokens 0 --max-rel-err 1e-2 --near-tie-ulps 4
fi
if python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null &&
    python3 scripts/hf_reference.py run --model "$work/qwen" "${prompts[@]}" --max-tokens 0 \
        --device cpu --out "$work/hf-bf16-cpu.json" >/dev/null; then
    echo "== yardstick: transformers bfloat16 on the CPU vs on the GPU, prefill"
    python3 scripts/hf_reference.py compare --ours "$work/hf-bf16-cpu.json" --theirs "$work/hf-bf16.json" \
        --max-tokens 0 --max-rel-err 1e-2 --near-tie-ulps 4
fi
echo "hf-reference: exit $rc, $(($(date +%s) - t0)) s"
echo "reproduce: HF_CPU_REFERENCE=$cpu_ref bash scripts/hf_reference_check.sh $bin $work"
exit $rc
