#!/usr/bin/env bash
# gpu_pack.sh [PACK_DIR] - build the CUDA binaries here, for tests/gpu/check.sh on a lent GPU
# machine that has nvcc and a driver but none of this project's libraries and no network.
#
# Builds frontier and the CUDA op tests with nvcc (sm_90a + PTX) in build-gpu, then puts the
# binaries, and the shared libraries they need except glibc's and the compiler's own, into
# PACK_DIR (default build-gpu-pack, git-ignored), and PACK_DIR.tar.xz (about 8 MB). Carry the
# archive to the GPU machine and run `tar xf build-gpu-pack.tar.xz && tests/gpu/check.sh
# build-gpu-pack` there.
set -euo pipefail
cd "$(dirname "$0")/.."
P=${1:-build-gpu-pack}
B=build-gpu
command -v nvcc >/dev/null || { echo "gpu_pack: nvcc not found" >&2; exit 1; }
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Release -DFR_WERROR=ON >/dev/null
targets="frontier"
for t in tests/gpu/test_cuda_*.c; do targets="$targets $(basename "$t" .c)"; done
cmake --build "$B" -j "$(nproc)" --target $targets
rm -rf "$P"
mkdir -p "$P/lib" "$P/tests/gpu"
cp "$B/frontier" "$P/"
for bin in "$B"/tests/gpu/test_cuda_*; do
  case "$bin" in *_emu) continue ;; esac
  [ -x "$bin" ] && [ -f "$bin" ] && cp "$bin" "$P/tests/gpu/"
done
for bin in "$P/frontier" "$P"/tests/gpu/test_cuda_*; do
  ldd "$bin" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|libresolv.so*|libanl.so*|libutil.so*|libnsl.so*) ;;
      ld-linux*|libgcc_s.so*|libstdc++.so*) ;;
      *) cp -L -n "$lib" "$P/lib/" ;;
    esac
  done
done
# the lent machine takes at most 64 MiB of tree and carried files: carry the archive
tar cJf "$P.tar.xz" "$P"
du -sh "$P" "$P.tar.xz"
