#!/usr/bin/python3
"""SSE keep-alive: a stream that has nothing to send (here a long prefill, made slow with a
one-token step budget) gets `: keep-alive` comment lines every --sse-keepalive seconds, and
the stream is still well formed: data events, finish, [DONE]. With --sse-keepalive 0 none
are sent. Skips (77) without the tokenizer package."""
import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import Checks, Server, make_tiny, need_dsv3_tokenizer  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--frontier", required=True)
ap.add_argument("--workdir", required=True)
ap.add_argument("--sanitize", action="store_true")
args = ap.parse_args()
need_dsv3_tokenizer()
FR, W = args.frontier, args.workdir
shutil.rmtree(W, ignore_errors=True)
os.makedirs(W)
C = Checks()
MODEL = make_tiny(FR, W, ctx=1024)
PROMPT = [1000 + (i * 37) % 20000 for i in range(1000)]


def raw_stream(srv):
    st, _, body = srv.post("/v1/completions", {"prompt": PROMPT, "max_tokens": 2, "ignore_eos": True,
                                               "temperature": 0, "stream": True}, timeout=300)
    return st, body.decode()


for ping, name in ((0.05, "keepalive"), (0, "no-keepalive")):
    srv = Server(C, FR, MODEL, ["--max-batched-tokens", "1", "--sse-keepalive", ping, "-t", "1"], W, name)
    st, text = raw_stream(srv)
    pings = text.count(": keep-alive\n\n")
    before_data = text.find(": keep-alive") < text.find("data: ") if pings else False
    events = [l[6:] for l in text.split("\n") if l.startswith("data: ")]
    done = events[-1:] == ["[DONE]"]
    chunks = [json.loads(e) for e in events[:-1]] if done else []
    finished = any(c["choices"] and c["choices"][0].get("finish_reason") == "length" for c in chunks)
    if ping:
        C.check("%s: comments while the prompt is computed" % name, st == 200 and pings >= 2 and before_data,
                "status %d, %d comments" % (st, pings))
    else:
        C.check("%s: no comments" % name, st == 200 and pings == 0, "status %d, %d comments" % (st, pings))
    C.check("%s: data events, finish, [DONE]" % name, done and finished, text[-300:])
    srv.stop()
C.finish()
