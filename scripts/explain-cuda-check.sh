#!/usr/bin/env bash
# explain-cuda stage of scripts/gpu-check.sh: `specreplay explain ... --device cuda` must
# print the same minimized counterexample as the CPU explain (seed 002: bs 1, D 2,
# seq_lens [1], accept_length [1], nsa_seqlens_expanded[0] expected 1 actual 0), and find
# nothing for the general variant; the sparse fused-kernel and sorted draft-select
# counterexamples found on the device equal the CPU's too. Usage: scripts/explain-cuda-check.sh [SPECREPLAY]
set -uo pipefail
bin=${1:-specreplay}
cpu=$("$bin" explain nsa-draft-extend --variant uniform-qo)
cpu_rc=$?
gpu=$("$bin" explain nsa-draft-extend --variant uniform-qo --device cuda)
gpu_rc=$?
echo "explain-cuda: CPU exit $cpu_rc, CUDA exit $gpu_rc (0 = counterexample found)"
echo "--- CUDA report:"
echo "$gpu"
echo "--- CPU report:"
echo "$cpu"
section() { sed -n '/^minimized input/,/^  variant /p' | grep -v -E '^(  path|first divergence)'; }
a=$(echo "$cpu" | section | sed 's/(.*path)//')
b=$(echo "$gpu" | section | sed 's/(.*path)//')
"$bin" explain nsa-draft-extend --variant general --device cuda --cases 20000 >/dev/null
general_rc=$?
echo "explain-cuda: general variant on the device exit $general_rc (1 = none found)"
ok=0
[ "$cpu_rc" = 0 ] && [ "$gpu_rc" = 0 ] || ok=1
[ "$general_rc" = 1 ] || ok=1
if [ "$(echo "$a" | grep -v '^  where')" = "$(echo "$b" | grep -v '^  where')" ]; then
    echo "explain-cuda: the device's minimized counterexample equals the CPU's"
else
    echo "explain-cuda: DIFFERENT minimized counterexamples"
    diff <(echo "$a") <(echo "$b")
    ok=1
fi
echo "$gpu" | grep -q 'expected   1' && echo "$gpu" | grep -q 'actual     0' || { echo "explain-cuda: expected 1 / actual 0 missing"; ok=1; }
# The other known-bad kernels, on the device: the same minimized inputs as the CPU.
for bv in "sparse-indices fused-kernel" "draft-select vectorized-sorted"; do
    set -- $bv
    c=$("$bin" explain "$1" --variant "$2" | sed -n '/^minimized input/,/^first divergence/p' | grep -v '^first divergence')
    g=$("$bin" explain "$1" --variant "$2" --device cuda)
    grc=$?
    gi=$(echo "$g" | sed -n '/^minimized input/,/^first divergence/p' | grep -v '^first divergence')
    if [ "$grc" = 0 ] && [ "$c" = "$gi" ]; then
        echo "explain-cuda: $1 / $2 on the device: the CPU's minimized input"
    else
        echo "explain-cuda: $1 / $2 on the device: exit $grc, minimized input differs from the CPU's"
        ok=1
    fi
    echo "$g"
done
exit $ok
