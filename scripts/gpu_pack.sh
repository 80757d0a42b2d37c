#!/usr/bin/env bash
# gpu_pack.sh [BUILD_DIR] - build the CUDA binaries here, for tests/gpu/check.sh on a lent GPU
# machine that has nvcc and a driver but none of this project's libraries and no network.
#
# Builds frontier and the CUDA op tests with nvcc (sm_90a + PTX) into BUILD_DIR (default
# build-gpu, git-ignored) and copies the shared libraries they need, except the C runtime
# and the compiler's own, into BUILD_DIR/lib. Carry BUILD_DIR to the GPU machine and run
# tests/gpu/check.sh BUILD_DIR there.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build-gpu}
command -v nvcc >/dev/null || { echo "gpu_pack: nvcc not found" >&2; exit 1; }
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DFR_WERROR=ON >/dev/null
targets="frontier"
for t in tests/gpu/test_cuda_*.c; do targets="$targets $(basename "$t" .c)"; done
cmake --build "$B" -j "$(nproc)" --target $targets
mkdir -p "$B/lib"
for bin in "$B/frontier" "$B"/tests/gpu/test_cuda_*; do
  case "$bin" in *_emu) continue ;; esac
  [ -x "$bin" ] || continue
  ldd "$bin" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libgcc_s.so*|libstdc++.so*) ;;
      *) cp -L -n "$lib" "$B/lib/" ;;
    esac
  done
done
du -sh "$B/frontier" "$B/lib" "$B/tests/gpu"
