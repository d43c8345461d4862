#!/usr/bin/env bash
# The GPU check, in two halves.
#
#   bash scripts/gpu-check.sh build    # here (no GPU needed): release build + test binaries into .gpu/
#   bash scripts/gpu-check.sh device [STAGE...]
#                                      # on the GPU host, repo root, $OUT set: runs every stage
#                                      # (or only the named ones; `info` always runs), writes
#                                      # logs/JSON into $OUT, prints a summary
#
# The device half never stops at a failed stage: each stage's exit code and time are
# recorded and the next stage runs. Stages: env (NVRTC/cuBLAS lookup) + gpu info, gpu
# selftest, the ignored GPU tests (SPECREPLAY_REQUIRE_GPU=1), the random generator's
# twins (Philox, ln, exp on >= 10^8 inputs), the unit and kernel compile
# tests, gpu replay of the golden and conformance traces (plain, --poison,
# --shadow-eager), gpu sim then CPU replay, the known-bad variant caught, gpu fuzz
# --n 1000, gpu bench, the seeds' metadata builders (gpu builders, their GPU tests, the
# torch forms, explain --device cuda), hf-reference (scripts/hf_reference_check.sh: a
# random-weight Qwen3-0.6B through specreplay's CPU reference and transformers), the Qwen3
# forward (qwen-kernels, qwen-generate, qwen-invariance, qwen-bench, qwen-torch; qwen-ncu,
# Nsight Compute kernel durations, only when named: scripts/ncu_summary.py reads them;
# builders-ncu, the same for the builders' timing graphs, only when named). Files
# in $OUT (flat): info.txt selftest.log selftest.json tests.log replay.log bench.json
# builders.log builders.json builders-timing.json torch-builders.log torch-builders.json
# hf_reference.log qwen.log qwen-bench.json qwen-torch.json ncu-b1.csv ncu-b64.csv ncu-builders.csv
# summary.txt summary.json.
# Each stage has its own time limit, cut further so the whole run ends within 510 s.
set -uo pipefail
cd "$(dirname "$0")/.."

build() {
    set -e
    cargo build --release --bin specreplay
    rm -rf .gpu && mkdir -p .gpu
    cp target/release/specreplay .gpu/specreplay
    # The executor's test binaries (unit tests, GPU tests, NVRTC compile test).
    cargo test --release -p specreplay-executor --no-run --message-format=json 2>/dev/null |
        python3 -c '
import json, shutil, sys
names = {("lib", "specreplay_executor"): "executor-unit", ("test", "gpu"): "executor-gpu",
         ("test", "nvrtc_compile"): "executor-nvrtc", ("test", "gpu_random"): "executor-gpu-random",
         ("test", "gpu_qwen"): "executor-gpu-qwen"}
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    key = (m["target"]["kind"][0], m["target"]["name"])
    if key in names:
        shutil.copy(m["executable"], ".gpu/" + names[key])
        print("copied", key[1], "->", ".gpu/" + names[key])
'
    for f in specreplay executor-unit executor-gpu executor-nvrtc executor-gpu-random executor-gpu-qwen; do
        [ -x ".gpu/$f" ] || { echo "gpu-check build: .gpu/$f missing" >&2; exit 1; }
    done
    strip .gpu/* 2>/dev/null || true
    # The kernel modules' CUBINs, compiled here with NVRTC alone (the same NVRTC 13.0 build
    # as the GPU host's: `gpu info` there prints the same module hashes), so the device's
    # calls load them instead of spending ~30 s of device time compiling (`device` seeds its
    # kernel cache from .gpu/kernels). Without NVRTC here the device compiles as before.
    local nvrtc_dir=$PWD/.cache/nvrtc/nvidia/cu13/lib
    if LD_LIBRARY_PATH="$nvrtc_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" .gpu/specreplay gpu compile-kernels .gpu/kernels; then
        echo "gpu-check build: kernel CUBINs in .gpu/kernels"
    else
        rm -rf .gpu/kernels
        echo "gpu-check build: no NVRTC here (run .ci/run once to install it into .cache/nvrtc); the device compiles the modules"
    fi
    local size
    size=$(du -sm .gpu | cut -f1)
    ls -l .gpu
    echo "gpu-check build: .gpu is ${size} MB"
    if [ "$size" -ge 60 ]; then
        echo "gpu-check build: .gpu must stay under 60 MB" >&2
        exit 1
    fi
}

# Adds the folder of the first library named $1 found in the usual places to
# LD_LIBRARY_PATH, unless the dynamic loader already finds it.
add_lib() {
    local name=$1 dir path=${LD_LIBRARY_PATH:-}
    if ldconfig -p 2>/dev/null | grep -q "$name"; then
        echo "$name: in the ldconfig cache"
        return
    fi
    for dir in ${path//:/ } /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
        /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu; do
        if [ -e "$dir/$name" ]; then
            echo "$name: $dir"
            export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            return
        fi
    done
    local found
    found=$(timeout 20 find /usr /opt -name "$name" 2>/dev/null | head -n 1)
    if [ -n "$found" ]; then
        echo "$name: $(dirname "$found") (found by search)"
        export LD_LIBRARY_PATH="$(dirname "$found")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    else
        echo "$name: NOT FOUND"
    fi
}

STAGES=()
DEADLINE=0
ONLY=()
# selected NAME: true when no stage list was given or NAME is in it.
selected() {
    local n
    [ "${#ONLY[@]}" = 0 ] && return 0
    [ "$1" = info ] && return 0
    for n in "${ONLY[@]}"; do [ "$n" = "$1" ] && return 0; done
    return 1
}
# stage NAME LIMIT_S LOG COMMAND...: runs with a time limit (never past DEADLINE), appends
# to LOG, records the result (exit 124/137: timed out; "skipped": no time left).
stage() {
    local name=$1 limit=$2 log=$3
    shift 3
    local t0 t1 rc left
    selected "$name" || return 0
    t0=$(date +%s)
    left=$((DEADLINE - t0))
    if [ "$left" -lt 5 ]; then
        STAGES+=("$name skipped 0")
        echo "stage $name: skipped (no time left)"
        return
    fi
    [ "$limit" -le "$left" ] || limit=$left
    echo "== $name: $(echo "$*" | cut -c1-160)" >>"$log"
    timeout --kill-after=5 "$limit" "$@" >>"$log" 2>&1
    rc=$?
    t1=$(date +%s)
    STAGES+=("$name $rc $((t1 - t0))")
    echo "stage $name: exit $rc in $((t1 - t0)) s"
}

device() {
    : "${OUT:?set OUT to the results folder}"
    mkdir -p "$OUT"
    [ -x .gpu/specreplay ] || { echo "no .gpu/ binaries: run 'scripts/gpu-check.sh build' first and carry .gpu" >&2; exit 2; }
    DEADLINE=$(($(date +%s) + ${GPU_CHECK_BUDGET_S:-510}))
    export SPECREPLAY_KERNEL_CACHE="${TMPDIR:-/tmp}/specreplay-kernels"
    # Seed the cache with the CUBINs built here (their names carry the cache key: source,
    # options, NVRTC version, architecture; a stale one is never picked).
    if [ -d .gpu/kernels ]; then
        mkdir -p "$SPECREPLAY_KERNEL_CACHE" && cp -n .gpu/kernels/*.cubin "$SPECREPLAY_KERNEL_CACHE"/ 2>/dev/null
    fi
    {
        date -u +"%Y-%m-%dT%H:%M:%SZ"
        uname -a
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "nvidia-smi failed"
        add_lib libcuda.so.1
        add_lib libnvrtc.so.13
        add_lib libnvrtc-builtins.so.13.0
        add_lib libcublas.so.13
        echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
        echo "SPECREPLAY_KERNEL_CACHE=$SPECREPLAY_KERNEL_CACHE ($(ls "$SPECREPLAY_KERNEL_CACHE" 2>/dev/null | wc -l) CUBINs seeded from .gpu/kernels)"
    } >"$OUT/info.txt" 2>&1
    # (The brace group above runs in this shell: add_lib's exports apply below.)
    export SPECREPLAY_REQUIRE_GPU=1
    local traces=(traces/vllm_ngram_13step.json traces/conformance/vllm-0.12.0/*.bin)

    # info loads the engine's modules from the kernel cache, seeded from .gpu/kernels; with
    # no seed it compiles them into the cache every later stage reuses (20 s on run 24's
    # H100, over 30 s since run 25: more qwen.cu entries).
    stage info 90 "$OUT/info.txt" .gpu/specreplay gpu info
    stage selftest 100 "$OUT/selftest.log" .gpu/specreplay gpu selftest --random-rows 0 --json "$OUT/selftest.json"
    stage gpu-tests 100 "$OUT/tests.log" .gpu/executor-gpu --ignored --test-threads=1 --skip builders_
    # Philox4x32-10, ln and exp: CUDA twins bit-equal to the CPU on >= 10^8 inputs each.
    stage random-twins 60 "$OUT/tests.log" .gpu/executor-gpu-random --ignored --test-threads=1 --nocapture --skip random_rows
    # Random-mode rows (target distributions + vLLM's random rejection rule): GPU kernels
    # bit-equal to the CPU on >= 10^6 rows, then the device's rows/s at vocabulary 151,936.
    stage random-rows 120 "$OUT/selftest.log" .gpu/specreplay gpu selftest --cases 0 --random-rows 1000000 --json "$OUT/random-rows.json"
    stage random-bench 60 "$OUT/tests.log" .gpu/executor-gpu-random --ignored --test-threads=1 --nocapture random_rows_bench
    stage unit-tests 30 "$OUT/tests.log" .gpu/executor-unit --test-threads=1
    stage nvrtc-compile 20 "$OUT/tests.log" .gpu/executor-nvrtc --test-threads=1
    stage replay 50 "$OUT/replay.log" .gpu/specreplay gpu replay "${traces[@]}"
    stage replay-poison 50 "$OUT/replay.log" .gpu/specreplay gpu replay --poison "${traces[@]}"
    stage replay-shadow 60 "$OUT/replay.log" .gpu/specreplay gpu replay --shadow-eager "${traces[@]}"
    # gpu sim, then the trace replayed on the CPU; the known-bad kernel variant must be
    # caught by gpu replay (exit 1) on a trace with FULL-padded steps.
    local tmp="${TMPDIR:-/tmp}/specreplay-gpu-check"
    mkdir -p "$tmp"
    stage sim-cpu-replay 30 "$OUT/replay.log" bash -c ".gpu/specreplay gpu sim scenarios/cascade_ghost_entry.json -o $tmp/gpu.json && .gpu/specreplay replay $tmp/gpu.json"
    stage known-bad 30 "$OUT/replay.log" bash -c ".gpu/specreplay sim scenarios/cascade_ghost_entry.json -o $tmp/cpu.json && .gpu/specreplay gpu replay --variant padded-slot-writes $tmp/cpu.json; rc=\$?; echo \"known-bad variant: gpu replay exit \$rc (1 expected)\"; test \$rc = 1"
    # Random mode end to end: gpu sim of the committed random scenario then CPU replay, and
    # 500 random-mode fuzz scenarios gpu-sim vs CPU.
    stage random-sim 120 "$OUT/replay.log" bash -c ".gpu/specreplay gpu sim scenarios/random/ngram_mixed.json -o $tmp/gpu-random.json && .gpu/specreplay replay $tmp/gpu-random.json && .gpu/specreplay diff traces/random_ngram_mixed.json $tmp/gpu-random.json && echo 'random gpu sim: identical to traces/random_ngram_mixed.json' && .gpu/specreplay gpu fuzz --random --n 500 --seed 1"
    stage fuzz 90 "$OUT/replay.log" .gpu/specreplay gpu fuzz --n 1000 --seed 1
    stage bench 60 "$OUT/replay.log" .gpu/specreplay gpu bench --replays 1000 --json "$OUT/bench.json" "${traces[@]}"
    # A random-weight Qwen3-0.6B: specreplay's CPU reference vs transformers (bf16 and f32).
    stage hf-reference 400 "$OUT/hf_reference.log" env HF_CPU_REFERENCE=0 bash scripts/hf_reference_check.sh .gpu/specreplay "$tmp/hf"

    # The seeds' metadata builders (issue 17): kernels under CUDA-graph replay. explain --device
    # cuda (must print the CPU's minimized seed-002 counterexample), the small-case GPU tests,
    # device time per replay, the seeds' torch forms on the same GPU, then 10^6 random cases per
    # correct kernel variant vs the simulator (rows printed as they complete).
    stage explain-cuda 30 "$OUT/builders.log" bash scripts/explain-cuda-check.sh .gpu/specreplay
    stage builders-tests 90 "$OUT/builders.log" .gpu/executor-gpu --ignored --test-threads=1 --nocapture builders_
    stage builders 90 "$OUT/builders.log" .gpu/specreplay gpu builders --cases 0 --bench-replays 2000 --json "$OUT/builders-timing.json"
    stage torch-builders 120 "$OUT/torch-builders.log" python3 scripts/bench_builders_torch.py --json "$OUT/torch-builders.json"
    # Agreement: 10^6 random cases per correct kernel variant (10^5 per known-bad one), for
    # the builders named in $BUILDERS_ONLY (space-separated; empty: all).
    local only_args=() b
    for b in ${BUILDERS_ONLY:-}; do only_args+=(--builder "$b"); done
    # RUST_LOG=info: a progress line every 131,072 cases with where the time went (phases),
    # so a run cut by its limit still says how far it got and why.
    stage builders-agree "${AGREE_LIMIT_S:-500}" "$OUT/builders.log" env RUST_LOG=info .gpu/specreplay gpu builders --cases 1000000 --bench-replays 0 ${only_args[@]+"${only_args[@]}"} --json "$OUT/builders-agree.json"
    # Kernel durations of the builders' timing graphs (Nsight Compute, clocks left alone,
    # --graph-profiling node: each kernel node of a replayed graph), so a replay's time splits
    # into the kernel's own duration and the replay's fixed cost. Only when named.
    if [ "${#ONLY[@]}" != 0 ] && selected builders-ncu; then
        local ncu_bin
        ncu_bin=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -n 1)
        stage builders-ncu 120 "$OUT/builders.log" "$ncu_bin" --clock-control none --graph-profiling node \
            --metrics gpu__time_duration.sum -k regex:'nsa_meta|draft_select|sparse_build|builders_empty' \
            -c "${BUILDERS_NCU_KERNELS:-400}" --csv --log-file "$OUT/ncu-builders.csv" \
            .gpu/specreplay gpu builders --cases 0 --bench-replays 3
    fi
    # The Qwen3 forward pass: GPU vs its bitwise CPU twin, batch invariance (tests print
    # the rows that differ); ms/step of a random Qwen3-0.6B; the PyTorch baseline.
    # qwen-bench times the plans in $QWEN_KERNELS and the tensor plan's launch choices in
    # $QWEN_LAUNCHES (gpu.rs `Launches`: `prefetch` changes only batch 1, `staged` only
    # batches of 17 rows or more, `pdl` launches the tensor plan with programmatic
    # dependent launch, its one-row products fetching weights into L2 before their wait;
    # `whole` the GQA-pair attention with whole tiles in flight, from 16 rows; a `+bulkN` or
    # `+linesN` suffix, N 1..=3, asks each product's weights into L2 from a side stream N
    # products ahead: `default+bulk2`; `default` runs steps of at most 8 rows as the decode
    # megakernel (+mega-compact-evict), a plain name such as `prefetch` launches per op, a
    # `+mega`, `+mega-compact`, `+mega-compact-evict` or `+mega-compact-copywarp` suffix picks
    # the megakernel, and `+mega:PROBE` (timeline, timeline-compact-evict, timeline-poll,
    # timeline-tiles, timeline-copywarp, ...: `gpu bench-qwen --help`) times its parts).
    # $QWEN_TESTS: a test-name filter for qwen-kernels (empty: every test);
    # $QWEN_BATCH: qwen-bench's batch sizes; $GEMM_ROWS: bench-gemm's row counts.
    stage qwen-kernels "${QWEN_KERNELS_LIMIT_S:-300}" "$OUT/qwen.log" .gpu/executor-gpu-qwen --ignored --test-threads=1 --nocapture ${QWEN_TESTS:-}
    stage qwen-generate 200 "$OUT/qwen.log" bash scripts/qwen-generate-check.sh .gpu/specreplay "$tmp/qwen" "$OUT"
    stage qwen-invariance 240 "$OUT/qwen.log" bash scripts/qwen-invariance-check.sh .gpu/specreplay "$tmp/qwen" "$OUT"
    stage bench-gemm 90 "$OUT/qwen.log" .gpu/specreplay gpu bench-gemm --rows "${GEMM_ROWS:-1,4,16,32,64}" --json "$OUT/bench-gemm.json"
    stage qwen-bench 180 "$OUT/qwen.log" .gpu/specreplay gpu bench-qwen --batch "${QWEN_BATCH:-1,64}" --kernels "${QWEN_KERNELS:-tensor,fused}" --launches "${QWEN_LAUNCHES:-base,staged+prefetch}" --json "$OUT/qwen-bench.json"
    stage qwen-torch 180 "$OUT/qwen.log" python3 scripts/bench_qwen_torch.py --batch 1,64 --json "$OUT/qwen-torch.json"
    # Kernel durations inside the decode graphs (Nsight Compute, one pass, clocks left
    # alone; --graph-profiling node times each kernel node of a replayed graph): the first
    # QWEN_NCU_KERNELS kernels of a batch-1 and a batch-64 bench-qwen (prefill, then decode
    # steps in FULL graphs), CSV per batch. Only when named (not in the default run).
    if [ "${#ONLY[@]}" != 0 ] && selected qwen-ncu; then
        ncu_bin=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -n 1)
        for b in 1 64; do
            stage qwen-ncu 120 "$OUT/qwen.log" "$ncu_bin" --clock-control none --graph-profiling node \
                --metrics gpu__time_duration.sum,dram__bytes_read.sum,lts__t_bytes.sum,sm__warps_active.avg.pct_of_peak_sustained_active -c "${QWEN_NCU_KERNELS:-600}" --csv \
                --log-file "$OUT/ncu-b$b.csv" .gpu/specreplay gpu bench-qwen --batch "$b" --steps 1 --replays 1 --kernels tensor
        done
    fi

    local failed=0 s name rc secs json="" sep=""
    {
        echo "gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        grep -m 1 '^device ' "$OUT/info.txt" 2>/dev/null
        for s in "${STAGES[@]}"; do
            read -r name rc secs <<<"$s"
            printf '%-14s %s (%s s)\n' "$name" "$([ "$rc" = 0 ] && echo ok || echo "FAILED exit $rc")" "$secs"
            [ "$rc" = 0 ] || failed=$((failed + 1))
        done
        grep -E '^(kernel|first mismatch|[a-z_]+ +[0-9]+ +[0-9]+$)' "$OUT/selftest.log" 2>/dev/null
        grep -E '^test result:|twins: |exponential variate: |^random rows|^vocab .*batch seed|panicked' "$OUT/tests.log" 2>/dev/null
        grep -E '^(== |specreplay: error|identical:|FAIL|first divergence|  |reproduce:|scenarios with|gpu replay:|known-bad|OK .*specreplay-gpu-check|replay of|batch|random| +[0-9]+ +3 )' "$OUT/replay.log" 2>/dev/null | head -n 80
        grep -E '^(== |specreplay: error|kernel |nsa-|draft-|sparse-|floor|builders:|explain-cuda|first mismatch)' "$OUT/builders.log" 2>/dev/null | cut -c1-220 | head -n 80
        grep -E '^(torch|floor|nsa-|draft-|sparse-|MISMATCH|FAILED)' "$OUT/torch-builders.log" 2>/dev/null | head -n 40
        grep -E '^(== |specreplay: error|prompt [0-9]+:|PASS|FAIL|hf-reference:|loaded |after |gpu generate )' "$OUT/hf_reference.log" 2>/dev/null | head -n 40
        grep -E '^(test |GPU|batch|torch|n-gram|NVIDIA|kernels |qwen-generate|generated|identical|  +[0-9]+ |  profile|  megakernel|[a-z_]+_proj |lm_head )|differ|ms/step' "$OUT/qwen.log" 2>/dev/null | head -n 140
    } >"$OUT/summary.txt"
    for s in "${STAGES[@]}"; do
        read -r name rc secs <<<"$s"
        [ "$rc" = skipped ] && rc='"skipped"'
        json+="$sep{\"stage\":\"$name\",\"exit\":$rc,\"seconds\":$secs}"
        sep=","
    done
    echo "{\"failed_stages\":$failed,\"stages\":[$json]}" >"$OUT/summary.json"
    # At most 8 files come back from the device: every log and JSON goes into one archive
    # (unpack with tar -xzf), the summaries stay beside it.
    (cd "$OUT" && find . -maxdepth 1 -type f ! -name 'summary.*' ! -name results.tgz -printf '%P\n' |
        sort | tar -czf results.tgz -T - && find . -maxdepth 1 -type f ! -name 'summary.*' ! -name results.tgz -delete)
    cat "$OUT/summary.txt"
    [ "$failed" = 0 ]
}

case "${1:-}" in
    build) build ;;
    device)
        shift
        ONLY=("$@")
        device
        ;;
    *)
        echo "usage: scripts/gpu-check.sh build | device [STAGE...]" >&2
        exit 2
        ;;
esac
