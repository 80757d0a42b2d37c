#!/usr/bin/python3
"""The official `openai` Node SDK (tests/oracle/node_modules/openai, installed by
scripts/install-deps.sh) against `frontier serve --api-key`: chat and completions, streaming,
usage, stop strings, max_tokens, logprobs, abort, models.list and APIError statuses (the
checks are in sdk_test.mjs). Then SIGTERM must give exit 0. Skips (77) without node, the SDK
or the DeepSeek-V3 tokenizer package."""
import argparse
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import ENV, ORACLE, Checks, Server, fr_cmd, make_tiny, need_dsv3_tokenizer  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--frontier", required=True)
ap.add_argument("--workdir", required=True)
ap.add_argument("--node", default="node")
args = ap.parse_args()
SDK = os.path.join(ORACLE, "openai", "index.mjs")
if not os.path.exists(SDK):
    print("skip: the openai npm package is not installed (scripts/install-deps.sh)")
    sys.exit(77)
if not shutil.which(args.node):
    print("skip: node not found")
    sys.exit(77)
need_dsv3_tokenizer()
FR, W = args.frontier, args.workdir
shutil.rmtree(W, ignore_errors=True)
os.makedirs(W)
C = Checks()
model = make_tiny(FR, W, ctx=1024)
KEY = "sk-frontier-sdk-test"
TEXT = "In the beginning God created"
ids = fr_cmd(FR, "tokenize", model, "--text", TEXT, "--ids-only").decode().strip()
srv = Server(C, FR, model, ["--api-key", KEY], W, "sdk")
r = subprocess.run([args.node, os.path.join(os.path.dirname(os.path.abspath(__file__)), "sdk_test.mjs")],
                   capture_output=True, text=True, timeout=900,
                   env=dict(ENV, FR_URL=srv.url, FR_KEY=KEY, FR_PROMPT_TEXT=TEXT, FR_PROMPT_IDS=ids, FR_SDK=SDK))
print(r.stdout, end="")
if r.stderr.strip():
    print(r.stderr[-3000:])
C.check("sdk_test.mjs: all checks pass", r.returncode == 0, "exit %d" % r.returncode)
srv.stop()
C.finish()
