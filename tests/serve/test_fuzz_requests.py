#!/usr/bin/python3
"""Seeded random request bodies against `frontier serve` (SERVING.md 9: every HTTP field is
hostile): JSON of random shapes in every field the API knows (wrong types, huge and negative
numbers, 2^63, nested arrays, NULs, lone think tags, 300-element id lists, truncated bodies),
on both generation routes, streaming or not. Every answer must be 200 or a 4xx in OpenAI's
envelope, never a 5xx or a dropped connection, and the server must still exit 0 on SIGTERM
(under ASan: no leak, no UB). Skips (77) without the tokenizer package."""
import argparse
import json
import os
import random
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import Checks, Server, envelope_ok, make_tiny, need_dsv3_tokenizer  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--frontier", required=True)
ap.add_argument("--workdir", required=True)
ap.add_argument("--sanitize", action="store_true", help="slower build: fewer requests")
ap.add_argument("--seed", type=int, default=20261128)
args = ap.parse_args()
need_dsv3_tokenizer()
FR, W = args.frontier, args.workdir
shutil.rmtree(W, ignore_errors=True)
os.makedirs(W)
C = Checks()
MODEL = make_tiny(FR, W, ctx=256)
rnd = random.Random(args.seed)

VALUES = [None, True, False, 0, -1, 1, 2, 3.5, -1e308, 1e308, 2**63, -2**63, 2**64, 1e-320, "", "x", "\u0000",
          "\ud7ff\ue000", "a" * 5000, [], [1, 2], [[1]], {}, {"a": 1}, [None], ["stop", ""], [-5, 99999999],
          list(range(300)), "<think>", "</think>"]
KEYS = ["model", "messages", "prompt", "stream", "stream_options", "max_tokens", "max_completion_tokens",
        "temperature", "top_p", "top_k", "min_p", "seed", "stop", "stop_token_ids", "logprobs", "top_logprobs",
        "presence_penalty", "frequency_penalty", "ignore_eos", "n", "tools", "tool_choice", "chat_template_kwargs",
        "extra_body", "response_format", "echo", "suffix", "continuous_usage_stats", "include_usage", "role",
        "content", "type", "text"]


def value(depth=0):
    r = rnd.random()
    if depth < 3 and r < 0.15:
        return {rnd.choice(KEYS): value(depth + 1) for _ in range(rnd.randint(0, 4))}
    if depth < 3 and r < 0.25:
        return [value(depth + 1) for _ in range(rnd.randint(0, 4))]
    return rnd.choice(VALUES)


def body():
    b = {}
    if rnd.random() < 0.5:
        b["messages"] = rnd.choice([[{"role": "user", "content": "hi"}], value(),
                                    [{"role": value(), "content": value()}],
                                    [{"role": "user", "content": [{"type": "text", "text": value()}]}]])
    else:
        b["prompt"] = rnd.choice(["hello", value(), [1, 2, 3], [[5, 6]], [value()]])
    for _ in range(rnd.randint(0, 6)):
        b[rnd.choice(KEYS)] = value()
    if rnd.random() < 0.3:
        b["stream"] = True
    if rnd.random() < 0.8:
        b["max_tokens"] = rnd.choice([1, 2, 4, value()])
    return b


srv = Server(C, FR, MODEL, ["--max-model-len", "256", "--max-queue", "8", "-t", "1"], W, "fuzz")
n = 120 if args.sanitize else 400
statuses, bad = {}, []
for i in range(n):
    path = rnd.choice(["/v1/chat/completions", "/v1/completions"])
    data = json.dumps(body()).encode()
    if rnd.random() < 0.05:
        data = data[:rnd.randint(0, len(data))]
    try:
        st, hdr, out = srv.request("POST", path, data, {"Content-Type": "application/json"})
    except Exception as e:  # noqa: BLE001 - a dropped connection is a failure to report
        bad.append("request %d: %s: %s" % (i, e, data[:200]))
        if srv.proc.poll() is not None:
            bad.append("server died with %s" % srv.proc.returncode)
            break
        continue
    statuses[st] = statuses.get(st, 0) + 1
    if st >= 500 or (st != 200 and not envelope_ok(out)[0]):
        bad.append("request %d: status %d body %r for %r" % (i, st, out[:200], data[:200]))
C.check("%d random bodies: 200 or 4xx with the envelope" % n, not bad, "; ".join(bad[:3]) or str(statuses))
C.check("some succeed and some are refused", statuses.get(200, 0) > 0 and statuses.get(400, 0) > 0, str(statuses))
st, _, _ = srv.request("GET", "/health")
C.check("still healthy", st == 200, str(st))
srv.stop()
C.finish()
