#!/usr/bin/python3
"""Text end to end on a synth checkpoint that carries a real tokenizer and chat template:
`synth --tokenizer` copies DeepSeek-V3's tokenizer files (from the npm oracle package) and
sizes vocab/BOS/EOS to them; `run -p TEXT --chat` must feed the model exactly the ids of the
rendered template (checked through `logits`, whose last row must equal the run's first-step
logits' argmax as the first generated token) and print text. Skips (77) without the package."""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

ap = argparse.ArgumentParser()
ap.add_argument("--frontier", required=True)
ap.add_argument("--workdir", required=True)
args = ap.parse_args()
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOK = os.path.join(ROOT, "tests", "oracle", "node_modules", "@lenml", "tokenizer-deepseek_v3", "models")
if not os.path.exists(os.path.join(TOK, "tokenizer.json")):
    print("skip: DeepSeek-V3 tokenizer package not installed")
    sys.exit(77)
FR, W = args.frontier, args.workdir
shutil.rmtree(W, ignore_errors=True)
os.makedirs(W)
passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    passed += ok
    failed += not ok
    print("%s %-46s %s" % ("ok  " if ok else "FAIL", name, detail))


def fr(*argv):
    r = subprocess.run([FR] + list(argv), capture_output=True, timeout=600,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    if r.returncode != 0:
        raise SystemExit("frontier %s failed: %s" % (" ".join(argv), r.stderr.decode(errors="replace")))
    return r.stdout


d = os.path.join(W, "tiny-dsv3")
fr("synth", "tiny", d, "--tokenizer", TOK, "--single-file")
cfg = json.load(open(os.path.join(d, "config.json")))
tok = json.load(open(os.path.join(TOK, "tokenizer.json"), encoding="utf-8"))
top = max(max(tok["model"]["vocab"].values()), max(t["id"] for t in tok["added_tokens"])) + 1
check("vocab_size sized to the tokenizer", cfg["vocab_size"] == top, "%d vs %d" % (cfg["vocab_size"], top))
check("tokenizer files copied", all(os.path.exists(os.path.join(d, f)) for f in ("tokenizer.json", "tokenizer_config.json")))

# The chat prompt the engine builds = template render, tokenized without added specials.
msgs = os.path.join(W, "m.json")
json.dump([{"role": "user", "content": "Who wrote the Psalms?"}], open(msgs, "w"))
rendered = fr("template", d, "--messages", msgs, "--generation-prompt").decode()
check("template renders the generation prompt", rendered.endswith("<｜Assistant｜>"), repr(rendered[-40:]))
txt = os.path.join(W, "prompt.txt")
open(txt, "w", encoding="utf-8").write(rendered)
ids = fr("tokenize", d, "--file", txt, "--ids-only", "--no-special").decode().strip()
check("rendered prompt starts with BOS id 0", ids.split(",")[0] == "0", ids[:40])

# Greedy first token of `run --chat` must be the argmax of the last logits row for those ids.
out = os.path.join(W, "l.f32")
fr("logits", d, "--ids", ids, "--out", out)
V = cfg["vocab_size"]
raw = open(out, "rb").read()
last = struct.unpack("<%df" % V, raw[-4 * V:])
want = max(range(V), key=lambda i: (last[i], -i))
first_ids = fr("run", d, "--ids", ids, "-n", "1").decode().split()
check("run --ids picks the logits argmax", first_ids == [str(want)], "%s vs %d" % (first_ids, want))
# Six greedy steps from the same prompt: as ids, then as text through the streaming detokenizer
# (random weights may pick tokens that are parts of a UTF-8 character: both sides print U+FFFD).
six = fr("run", d, "--ids", ids, "-n", "6").decode().split()
text = fr("run", d, "-p", "Who wrote the Psalms?", "--chat", "-n", "6")
piece = fr("detokenize", d, "--ids", ",".join(six), "--lossy", "--skip-special")
check("run -p --chat generates from the same prompt", text.rstrip(b"\n") == piece.rstrip(b"\n"),
      "%r vs %r" % (text, piece))
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
