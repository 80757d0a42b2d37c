#!/usr/bin/python3
"""Soak and exactness of `frontier serve` on the tiny random-weight model with DeepSeek-V3's
tokenizer and chat template: 64 concurrent greedy streaming chat requests (32 distinct prompts
of mixed lengths, each sent twice) must all complete without error, the two copies of a prompt
must agree, the non-streaming answers must equal the streamed ones, and every answer must equal
`frontier run DIR -p TEXT --chat -n N` (greedy, one sequence alone), whatever batch it ran in.
--sanitize (the ASan pass) scales it down. Skips (77) without the tokenizer package."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import ENV, Checks, Server, make_tiny, need_dsv3_tokenizer, stream_text  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--frontier", required=True)
ap.add_argument("--workdir", required=True)
ap.add_argument("--sanitize", action="store_true", help="slower build: 8 prompts x 2, shorter outputs")
args = ap.parse_args()
need_dsv3_tokenizer()
FR, W = args.frontier, args.workdir
shutil.rmtree(W, ignore_errors=True)
os.makedirs(W)
C = Checks()
MODEL = make_tiny(FR, W, ctx=1024)

WORDS = ("the of and to in a is that for it as was with be by on not he I this are or his from at which but have an "
         "they you were her she there been one all we their has would when if so no what up out who them some could "
         "psalm river mountain lantern copper harvest silence garden winter thunder ancient distant").split()
N_DISTINCT = 8 if args.sanitize else 32
prompts = []
for i in range(N_DISTINCT):
    n_words = [1, 3, 7, 15, 40, 90, 180, 300][i % 8] + i // 8  # about 1 .. 400 tokens
    text = " ".join(WORDS[(i * 7 + j * (i % 5 + 1)) % len(WORDS)] for j in range(n_words))
    if i % 3 == 0:
        text = "Question %d: %s?" % (i, text)
    n_out = (6 + (i * 5) % 40) if not args.sanitize else (4 + (i * 3) % 12)
    prompts.append((text, n_out))
jobs = [(k % N_DISTINCT) for k in range(2 * N_DISTINCT)]  # every prompt twice, interleaved

server = Server(C, FR, MODEL, ["--max-num-seqs", "64"], W, "soak")
results = [None] * len(jobs)
start = threading.Barrier(len(jobs))


def one(k):
    text, n_out = prompts[jobs[k]]
    try:
        start.wait(60)
        results[k] = stream_text(server, "/v1/chat/completions", {
            "messages": [{"role": "user", "content": text}], "max_tokens": n_out, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}, timeout=600)
    except Exception as e:  # noqa: BLE001 - reported below
        results[k] = (-1, repr(e), [], False, [])


t0 = time.time()
ths = [threading.Thread(target=one, args=(k,)) for k in range(len(jobs))]
for t in ths:
    t.start()
peak = 0
while any(t.is_alive() for t in ths):
    peak = max(peak, server.metrics().get("vllm:num_requests_running", 0))
    time.sleep(0.05)
for t in ths:
    t.join()
elapsed = time.time() - t0
print("info: %d concurrent streams in %.1f s, peak running %d" % (len(jobs), elapsed, peak))

bad = []
streamed = {}
for k, r in enumerate(results):
    st, text, chunks, done, _ = r
    i = jobs[k]
    usage = (chunks[-1].get("usage") if chunks else None) or {}
    fins = [c["choices"][0].get("finish_reason") for c in chunks if c.get("choices")]
    fin = fins[-1] if fins else None
    n_out = prompts[i][1]
    if st != 200 or not done:
        bad.append("job %d: status %s done %s %s" % (k, st, done, str(text)[:200]))
    elif any("_bad_json" in c for c in chunks):
        bad.append("job %d: bad JSON chunk" % k)
    elif not ((fin == "length" and usage.get("completion_tokens") == n_out) or
              (fin == "stop" and 0 < (usage.get("completion_tokens") or 0) <= n_out)):
        bad.append("job %d: finish %s with %s of %d tokens" % (k, fin, usage.get("completion_tokens"), n_out))
    else:
        streamed.setdefault(i, []).append(text)
C.check("%d concurrent streams complete, no error" % len(jobs), not bad, bad[:4])
C.check("batching reached the concurrency", peak >= min(len(jobs), 64) // 4, "peak running %d" % peak)
C.check("both copies of each prompt agree", all(len(set(v)) == 1 for v in streamed.values()),
        [(i, v) for i, v in streamed.items() if len(set(v)) != 1][:2])

# The same prompts, non-streaming and concurrent: the same text.
plain = [None] * N_DISTINCT


def one_plain(i):
    text, n_out = prompts[i]
    try:
        st, _, body = server.post("/v1/chat/completions", {"messages": [{"role": "user", "content": text}],
                                                           "max_tokens": n_out, "temperature": 0}, timeout=600)
        plain[i] = json.loads(body)["choices"][0]["message"]["content"] if st == 200 else "HTTP %d %r" % (st, body[:200])
    except Exception as e:  # noqa: BLE001
        plain[i] = repr(e)


ths = [threading.Thread(target=one_plain, args=(i,)) for i in range(N_DISTINCT)]
for t in ths:
    t.start()
for t in ths:
    t.join()
diff = [(i, plain[i], streamed.get(i, [None])[0]) for i in range(N_DISTINCT) if plain[i] != streamed.get(i, [None])[0]]
C.check("non-streaming answers equal the streamed ones", not diff, diff[:2])

ok, m = server.wait_idle()
C.check("idle afterwards: running/waiting 0, KV 0", ok,
        {k: v for k, v in m.items() if "num_requests" in k or "kv" in k})
server.stop()

# Reference: `frontier run --chat`, one sequence alone, greedy.
mismatch = []
for i, (text, n_out) in enumerate(prompts):
    r = subprocess.run([FR, "run", MODEL, "-p", text, "--chat", "-n", str(n_out)], capture_output=True, timeout=600,
                       env=ENV)
    ref = r.stdout.decode("utf-8", errors="replace")
    if ref.endswith("\n"):
        ref = ref[:-1]
    got = streamed.get(i, [None])[0]
    if r.returncode != 0 or got != ref:
        mismatch.append("prompt %d (%d words, -n %d): server %r vs run %r%s" % (
            i, len(text.split()), n_out, got, ref, "" if r.returncode == 0 else " (run failed %d)" % r.returncode))
C.check("greedy text equals `frontier run --chat` for all %d prompts" % N_DISTINCT, not mismatch,
        "%d differ; %s" % (len(mismatch), "; ".join(mismatch[:2])))
for line in mismatch[2:6]:
    print("     ", line[:300])
C.finish()
