#!/bin/sh
# make demo: synthesize the `tiny` random-weight checkpoint and generate from it (ids in,
# ids out: its weights are random, so its output means nothing), then run the small
# trained kjv-tiny checkpoint shipped in models/ with text in and text out.
set -e
BUILD=${1:-build}
FR=$BUILD/frontier
OUT=$BUILD/demo
echo "== frontier synth tiny $OUT/tiny (random weights, released DeepSeek-V3 layout)"
$FR synth tiny "$OUT/tiny" --seed 1
$FR info "$OUT/tiny"
echo
echo "== frontier run $OUT/tiny --ids 1,17,42,99 -n 16 (greedy)"
$FR run "$OUT/tiny" --ids 1,17,42,99 -n 16
echo
echo "== frontier run models/kjv-tiny (trained on the King James Bible)"
$FR info models/kjv-tiny
for p in "And God said" "The LORD is my shepherd" "In the beginning"; do
    echo
    echo "prompt: $p"
    printf '%s' "$p"
    $FR run models/kjv-tiny -p "$p" -n 40
done
