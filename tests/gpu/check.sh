#!/usr/bin/env bash
# tests/gpu/check.sh [BUILD_DIR] - the one GPU check: run it on a machine with an NVIDIA GPU.
#
#   1. every CUDA op against the CPU backend on fresh random inputs, outputs poisoned
#      (tests/gpu/test_cuda_*: basic ops, matmul in every format, attention, MoE);
#   2. `frontier logits` with --device cuda against --device cpu on synth checkpoints and
#      kjv-tiny (tests/gpu/test_cuda_logits.py);
#   3. the benchmark table of issue #6: one-stream decode of the moonlight shape (BF16 and
#      MXFP4 experts) and of DeepSeek-V3 cut to 4 layers (MXFP4 experts, FP8 attention), each
#      as a ratio to the copy bandwidth the same run measures; batch 1/8/64; 10k context;
#      a 10k-token prefill.
# BUILD_DIR (default build-gpu) is built here with nvcc unless it already holds the binaries
# (scripts/gpu_pack.sh builds them elsewhere into build-gpu-pack, with their libraries, for a
# machine that has no network). Set FR_CHECK_QUICK=1 to skip the benchmarks. Exits 1 if any
# check failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
B=${1:-build-gpu}
if [ ! -x "$B/frontier" ]; then
  cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release >/dev/null && cmake --build "$B" -j "$(nproc)" || exit 1
fi
[ -d "$B/lib" ] && export LD_LIBRARY_PATH="$PWD/$B/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
F="$PWD/$B/frontier"
# no GPU, no point spending device time on the rest
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader ||
  { echo "check.sh: no GPU here (nvidia-smi failed)"; exit 1; }
fail=0
t_start=$(date +%s)
# The CPU side of every comparison with f32 activations, as the CUDA kernels compute (on CPUs
# with AVX-512 VNNI the default 4-bit CPU products round x to int8: backend/cpu/matmul.h).
export FR_ISA=avx512

echo "== 1. CUDA ops against the CPU backend"
for t in "$B"/tests/gpu/test_cuda_*; do
  case "$t" in *_emu) continue ;; esac
  [ -x "$t" ] || continue
  echo "-- $(basename "$t")"
  "$t"; rc=$?
  # here a skip (77: no GPU found) is a failure
  [ $rc -eq 0 ] || { echo "FAILED: $(basename "$t") (exit $rc)"; fail=1; }
done

echo "== 2. model logits, cuda vs cpu"
python3 tests/gpu/test_cuda_logits.py --frontier "$F" --gpu-frontier "$F" --workdir /tmp/fr_gpu_logits \
  --model models/kjv-tiny || fail=1

if [ "${FR_CHECK_QUICK:-0}" != 1 ]; then
  echo "== 3. benchmarks (frontier bench --device cuda; ratios to the measured copy bandwidth)"
  bench() { echo "-- frontier bench $*"; "$F" bench --load-format dummy --device cuda "$@" || fail=1; }
  bench --preset moonlight -p 1024 -n 64
  bench --preset moonlight -p 1024 -n 64 --quantize-experts mxfp4
  bench --preset deepseek-v3 --layers 4 --fp8-blocks --quantize-experts mxfp4 -p 1024 -n 32
  bench --preset moonlight --batch 1,8,64 -p 128 -n 16
  bench --preset moonlight --context 10240 -n 16
  bench --preset moonlight -p 10000 -n 4
fi
echo "== check.sh: $([ $fail = 0 ] && echo PASSED || echo FAILED) in $(( $(date +%s) - t_start )) s"
exit $fail
