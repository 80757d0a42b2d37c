#!/bin/sh
# make demo: synthesize the `tiny` random-weight checkpoint and generate from it, then run
# the small trained kjv-tiny checkpoint shipped in models/. Prompts are token ids until the
# tokenizer lands (issue #3). Synth weights are random: their output ids mean nothing.
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
echo "== frontier run models/kjv-tiny (trained; prompt = BOS + \"And God said\" as ids)"
$FR info models/kjv-tiny
$FR run models/kjv-tiny --ids 0,297,388,389 -n 24 | tee "$OUT/kjv.ids"
printf 'as text: And God said'
/usr/bin/python3 scripts/show_text.py models/kjv-tiny/tokenizer.json < "$OUT/kjv.ids"
