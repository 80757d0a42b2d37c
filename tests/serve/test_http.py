#!/usr/bin/python3
"""`frontier serve` over raw HTTP (http.client and sockets): every error status with the
OpenAI envelope (400 bad JSON / wrong types / n=2 / context overflow, 401 on every route but
/health with --api-key, 404, 405, 413, 503 + Retry-After when the queue is full), SSE
framing, /health and /metrics, client disconnects (mid-stream, non-streaming, queued) that
must free the request and its KV, and the SIGTERM drain. Each server is stopped with
SIGTERM and must exit 0. Skips (77) without the DeepSeek-V3 tokenizer package."""
import argparse
import json
import os
import shutil
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_util import KJV, SSE, Checks, Server, envelope_ok, make_tiny, need_dsv3_tokenizer, stream_text  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--frontier", required=True)
ap.add_argument("--workdir", required=True)
ap.add_argument("--sanitize", action="store_true", help="slower build: fewer and shorter requests")
args = ap.parse_args()
need_dsv3_tokenizer()
FR, W = args.frontier, args.workdir
shutil.rmtree(W, ignore_errors=True)
os.makedirs(W)
C = Checks()
CTX = 1024
LONG = 900  # output tokens of a request meant to be interrupted
MODEL = make_tiny(FR, W, ctx=CTX)
KEY = "sk-frontier-test-key"
CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
MSG = [{"role": "user", "content": "Who wrote the Psalms?"}]


def expect_error(srv, name, method, path, body, status, code=None, headers=None, raw=False):
    """A request that must fail with `status` and the OpenAI error envelope."""
    h = dict(headers or {})
    if raw:
        h.setdefault("Content-Type", "application/json")
    st, hdr, data = srv.request(method, path, body, h)
    ok_env, detail = envelope_ok(data)
    problems = []
    if st != status:
        problems.append("status %d (want %d)" % (st, status))
    if not ok_env:
        problems.append(detail)
    if "application/json" not in hdr.get("content-type", ""):
        problems.append("content-type %r" % hdr.get("content-type"))
    if code is not None and ok_env:
        got = json.loads(data)["error"].get("code")
        if got != code:
            problems.append("code %r (want %r)" % (got, code))
    C.check(name, not problems, "; ".join(problems) if problems else "%d %s" % (st, detail))
    return st, hdr, data


def raw_exchange(srv, request_bytes, timeout=15):
    """Send bytes on a fresh socket, return what comes back until close or timeout."""
    s = socket.create_connection((srv.host, srv.port), timeout=timeout)
    try:
        s.sendall(request_bytes)
        out = b""
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            out += b
            if b"\r\n\r\n" in out and len(out) > 4096:
                break
        return out
    finally:
        s.close()


def status_of(raw):
    try:
        return int(raw.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


def gen_tokens(srv, headers=None):
    return srv.metrics(headers).get("vllm:generation_tokens_total", 0)


# ------------------------------------------------------------------ server A: defaults
A = Server(C, FR, MODEL, [], W, "plain")
st, hdr, body = A.request("GET", "/health")
C.check("GET /health -> 200", st == 200, body[:80])
st, hdr, body = A.request("GET", "/v1/models")
models = json.loads(body) if st == 200 else {}
C.check("GET /v1/models -> list with an id", st == 200 and models.get("object") == "list"
        and models.get("data") and isinstance(models["data"][0].get("id"), str), body[:200])
NAME = models["data"][0]["id"] if models.get("data") else "x"

st, hdr, body = A.request("GET", "/metrics")
text = body.decode(errors="replace")
C.check("GET /metrics -> 200 text/plain", st == 200 and hdr.get("content-type", "").startswith("text/plain"),
        hdr.get("content-type"))
for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
             "vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:request_success_total",
             "vllm:time_to_first_token_seconds_bucket", "vllm:e2e_request_latency_seconds_count",
             "vllm:inter_token_latency_seconds_bucket"):
    C.check("metrics: %s" % name, ("\n" + name) in ("\n" + text), "")

# 400s, each with the envelope
expect_error(A, "400 malformed JSON", "POST", CHAT, b"{\"messages\": [", 400, raw=True)
expect_error(A, "400 body not an object", "POST", CHAT, b"[1,2,3]", 400, raw=True)
expect_error(A, "400 empty body", "POST", CHAT, b"", 400, raw=True)
expect_error(A, "400 messages missing", "POST", CHAT, {"model": NAME}, 400)
expect_error(A, "400 messages not an array", "POST", CHAT, {"messages": "hi"}, 400)
expect_error(A, "400 message without role", "POST", CHAT, {"messages": [{"content": "hi"}]}, 400)
expect_error(A, "400 max_tokens a string", "POST", CHAT, {"messages": MSG, "max_tokens": "ten"}, 400)
expect_error(A, "400 max_tokens negative", "POST", CHAT, {"messages": MSG, "max_tokens": -1}, 400)
expect_error(A, "400 max_tokens 2^63", "POST", CHAT, {"messages": MSG, "max_tokens": 2 ** 63}, 400)
expect_error(A, "400 temperature -1", "POST", CHAT, {"messages": MSG, "temperature": -1}, 400)
expect_error(A, "400 temperature a string", "POST", CHAT, {"messages": MSG, "temperature": "hot"}, 400)
expect_error(A, "400 top_p 2", "POST", CHAT, {"messages": MSG, "top_p": 2}, 400)
expect_error(A, "400 stream a string", "POST", CHAT, {"messages": MSG, "stream": "yes"}, 400)
expect_error(A, "400 n=2", "POST", CHAT, {"messages": MSG, "n": 2}, 400)
expect_error(A, "400 top_logprobs 21", "POST", CHAT, {"messages": MSG, "logprobs": True, "top_logprobs": 21}, 400)
expect_error(A, "400 stop a number", "POST", CHAT, {"messages": MSG, "stop": 5}, 400)
expect_error(A, "400 response_format bad type", "POST", CHAT,
             {"messages": MSG, "response_format": {"type": "nonsense"}}, 400)
expect_error(A, "400 completions without prompt", "POST", COMP, {"max_tokens": 4}, 400)
expect_error(A, "400 prompt ids out of vocabulary", "POST", COMP, {"prompt": [1, 2, 10 ** 9], "max_tokens": 2}, 400)
expect_error(A, "400 prompt ids negative", "POST", COMP, {"prompt": [1, -5], "max_tokens": 2}, 400)
expect_error(A, "400 prompt empty", "POST", COMP, {"prompt": [], "max_tokens": 2}, 400)
expect_error(A, "400 prompt over the context (ids)", "POST", COMP, {"prompt": [100] * (CTX + 10), "max_tokens": 4},
             400, code="context_length_exceeded")
expect_error(A, "400 prompt over the context (chat)", "POST", CHAT,
             {"messages": [{"role": "user", "content": "word " * (CTX + 50)}], "max_tokens": 4},
             400, code="context_length_exceeded")
st, hdr, body = A.post(COMP, {"prompt": [100] * (CTX - 10), "max_tokens": 100, "ignore_eos": True})
if st == 400:
    ok_env, detail = envelope_ok(body)
    C.check("prompt + max_tokens over the context: 400 context_length_exceeded",
            ok_env and json.loads(body)["error"].get("code") == "context_length_exceeded", detail)
else:
    u = json.loads(body).get("usage", {}) if st == 200 else {}
    C.check("prompt + max_tokens over the context: clamped to the context", st == 200 and
            u.get("prompt_tokens", 0) + u.get("completion_tokens", 0) <= CTX, "%d %s" % (st, u))

# 404, 405
expect_error(A, "404 unknown route", "GET", "/v1/nothing", None, 404)
expect_error(A, "404 unknown route (POST)", "POST", "/v2/chat", {"a": 1}, 404)
expect_error(A, "405 GET on chat completions", "GET", CHAT, None, 405)
expect_error(A, "405 DELETE on completions", "DELETE", COMP, None, 405)
expect_error(A, "405 POST on /v1/models", "POST", "/v1/models", {"a": 1}, 405)

# 413: a declared body over the limit is refused before it is read
raw = raw_exchange(A, ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       "Content-Length: %d\r\n\r\n{" % (CHAT, 1 << 31)).encode())
C.check("413 Content-Length over the body limit", status_of(raw) == 413, raw[:120])
if status_of(raw) == 413:
    # libevent 2.1 writes its own HTML page for this status before the request reaches the
    # server's code (README: a documented limitation), so the envelope is not required here.
    ok_env = envelope_ok(raw.split(b"\r\n\r\n", 1)[-1])[0]
    print("info: the 413 body is %s" % ("the OpenAI envelope" if ok_env else "libevent's HTML page (documented)"))
big = b'{"messages":[{"role":"user","content":"' + b"a" * (65 << 20) + b'"}]}'
try:
    st, hdr, body = A.request("POST", CHAT, big, {"Content-Type": "application/json"})
except (BrokenPipeError, ConnectionResetError) as e:
    st, body = -1, str(e).encode()
C.check("413 on a 65 MiB body", st in (413, -1), "%d %s" % (st, body[:120]))

# A non-streaming chat completion: shape and usage
st, hdr, body = A.post(CHAT, {"model": NAME, "messages": MSG, "max_tokens": 8, "temperature": 0})
j = json.loads(body) if st == 200 else {}
ch = (j.get("choices") or [{}])[0]
u = j.get("usage") or {}
C.check("chat: 200 chat.completion", st == 200 and j.get("object") == "chat.completion", body[:200])
C.check("chat: message role assistant, content a string",
        ch.get("message", {}).get("role") == "assistant" and isinstance(ch.get("message", {}).get("content"), str))
C.check("chat: finish_reason stop|length", ch.get("finish_reason") in ("stop", "length"), ch.get("finish_reason"))
C.check("chat: usage adds up", u.get("prompt_tokens", 0) > 0 and 0 < u.get("completion_tokens", 0) <= 8 and
        u.get("total_tokens") == u.get("prompt_tokens", 0) + u.get("completion_tokens", 0), u)

# SSE framing (chat, include_usage)
s = SSE(A, CHAT, {"messages": MSG, "max_tokens": 12, "stream": True, "ignore_eos": True,
                  "stream_options": {"include_usage": True}})
C.check("stream: 200 text/event-stream", s.status == 200 and
        s.headers.get("content-type", "").startswith("text/event-stream"), s.headers.get("content-type"))
evs = list(s.events())
s.close()
bad = [l for l in s.lines if l and not l.startswith("data: ") and not l.startswith(":")]
C.check("stream: every line is 'data: ...' or blank", not bad, bad[:3])
C.check("stream: ends with data: [DONE]", evs and evs[-1] == "[DONE]" and s.done, evs[-1:] if evs else "")
try:
    chunks = [json.loads(e) for e in evs if e != "[DONE]"]
    parsed = True
except ValueError as e:
    chunks, parsed = [], False
C.check("stream: every event is JSON", parsed)
if chunks:
    C.check("stream: object chat.completion.chunk", all(c.get("object") == "chat.completion.chunk" for c in chunks))
    C.check("stream: first delta has role assistant",
            (chunks[0].get("choices") or [{}])[0].get("delta", {}).get("role") == "assistant", chunks[0])
    content = [c for c in chunks if c.get("choices")]
    fin = [c["choices"][0].get("finish_reason") for c in content]
    C.check("stream: finish_reason null until the last content chunk",
            all(f is None for f in fin[:-1]) and fin[-1] == "length", fin)
    last = chunks[-1]
    C.check("stream: usage chunk before [DONE] with choices []",
            last.get("choices") == [] and (last.get("usage") or {}).get("completion_tokens") == 12, last)
    C.check("stream: other chunks carry no usage", all(not c.get("usage") for c in chunks[:-1]))
    C.check("stream: one id across chunks", len({c.get("id") for c in chunks}) == 1)

# Without include_usage: no usage chunk. Completions: text_completion chunks.
st, txt, chunks, done, _ = stream_text(A, COMP, {"prompt": "In the beginning", "max_tokens": 6, "stream": True})
C.check("completions stream: text_completion chunks, [DONE]", st == 200 and done and chunks and
        all(c.get("object") == "text_completion" for c in chunks), chunks[:1])
C.check("completions stream: no usage chunk without include_usage",
        chunks and all(c.get("choices") for c in chunks) and all(not c.get("usage") for c in chunks))

# Chunks must leave as they are generated, also on a reused keep-alive connection (where a
# socket without TCP_NODELAY holds small writes until the client's delayed ACK, ~40 ms).
conn = A.conn(120)
spread = []
for k in range(3):
    conn.request("POST", COMP, body=json.dumps({"prompt": [11, 12, 13], "max_tokens": 32, "ignore_eos": True,
                                                "stream": True, "temperature": 0}).encode(),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    ts = []
    while True:
        line = r.readline()
        if not line or line.startswith(b"data: [DONE]"):
            break
        if line.startswith(b"data: "):
            ts.append(time.time())
    r.read()
    gaps = [b - a for a, b in zip(ts, ts[1:])]
    spread.append(sum(g > 2e-4 for g in gaps) / max(1, len(gaps)))
conn.close()
C.check("stream: chunks arrive as generated on a kept-alive connection", min(spread[1:]) >= 0.5,
        "share of gaps > 0.2 ms per request: %s" % ["%.2f" % x for x in spread])

# Client disconnect mid-stream: the request must stop (not run to max_tokens) and free its KV.
ok, m = A.wait_idle()
C.check("idle before the disconnect tests", ok, {k: v for k, v in m.items() if "num_requests" in k or "kv" in k})
g0 = gen_tokens(A)
s = SSE(A, COMP, {"prompt": [100, 200, 300], "max_tokens": LONG, "ignore_eos": True, "stream": True})
n = 0
for e in s.events():
    n += 1
    if n == 3:
        break
busy = A.metrics().get("vllm:num_requests_running", 0)
s.close()
ok, m = A.wait_idle()
g1 = gen_tokens(A)
C.check("disconnect mid-stream: running/waiting 0, KV 0", ok,
        {k: v for k, v in m.items() if "num_requests" in k or "kv" in k})
C.check("disconnect mid-stream: the request was running", busy >= 1, busy)
C.check("disconnect mid-stream: generation stopped early", g1 - g0 < LONG, "%d of %d tokens" % (g1 - g0, LONG))

# Non-streaming request, client gone after 0.2 s.
g0 = gen_tokens(A)
body = json.dumps({"prompt": [5, 6, 7], "max_tokens": LONG, "ignore_eos": True}).encode()
sk = socket.create_connection((A.host, A.port))
sk.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
           % len(body) + body)
time.sleep(0.2)
sk.close()
ok, m = A.wait_idle()
g1 = gen_tokens(A)
C.check("disconnect non-streaming: idle, KV 0", ok, {k: v for k, v in m.items() if "num_requests" in k or "kv" in k})
C.check("disconnect non-streaming: generation stopped early", g1 - g0 < LONG, "%d of %d tokens" % (g1 - g0, LONG))

# Disconnect right after sending a long prompt (in the queue or mid-prefill).
p0 = A.metrics().get("vllm:prompt_tokens_total", 0)
body = json.dumps({"prompt": list(range(1000, 1000 + CTX - 40)), "max_tokens": 30, "ignore_eos": True,
                   "stream": True}).encode()
sk = socket.create_connection((A.host, A.port))
sk.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
           % len(body) + body)
sk.close()
ok, m = A.wait_idle()
C.check("disconnect during prefill: idle, KV 0", ok, {k: v for k, v in m.items() if "num_requests" in k or "kv" in k})
print("info: prompt tokens computed for the abandoned prefill: %d of %d" %
      (m.get("vllm:prompt_tokens_total", 0) - p0, CTX - 40))
st, txt, chunks, done, _ = stream_text(A, CHAT, {"messages": MSG, "max_tokens": 4, "stream": True})
C.check("serves after the disconnects", st == 200 and done, txt[:60])
A.stop()

# ------------------------------------------------------------------ server B: --api-key
B = Server(C, FR, MODEL, ["--api-key", KEY], W, "api-key")
routes = [("GET", "/v1/models", None), ("POST", CHAT, {"messages": MSG, "max_tokens": 2}),
          ("POST", COMP, {"prompt": "a", "max_tokens": 2}), ("GET", "/metrics", None)]
for method, path, body in routes:
    expect_error(B, "401 %s %s without a key" % (method, path), method, path, body, 401)
    expect_error(B, "401 %s %s with a wrong key" % (method, path), method, path, body, 401,
                 headers={"Authorization": "Bearer sk-wrong"})
    st, _, data = B.request(method, path, body, {"Authorization": "Bearer " + KEY})
    C.check("%s %s with the key -> 200" % (method, path), st == 200, "%d %s" % (st, data[:100]))
st, _, data = B.request("GET", "/health")
C.check("/health needs no key", st == 200, st)
st, _, data = B.request("GET", "/v1/nothing")
print("info: unknown route without a key answers %d" % st)
B.stop()

# ------------------------------------------------------------------ server C: tiny queue
Cs = Server(C, FR, MODEL, ["--max-num-seqs", "1", "--max-queue", "1"], W, "queue")
N_FLOOD = 6
results = [None] * N_FLOOD


def flood(i):
    try:
        conn = Cs.conn(300)
        conn.request("POST", COMP, body=json.dumps({"prompt": [10 + i, 20, 30], "max_tokens": 200, "ignore_eos": True,
                                                    "stream": True}).encode(),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        results[i] = (r.status, {k.lower(): v for k, v in r.getheaders()}, data)
        conn.close()
    except Exception as e:  # noqa: BLE001 - reported as a failed check
        results[i] = (-1, {}, repr(e).encode())


ths = [threading.Thread(target=flood, args=(i,)) for i in range(N_FLOOD)]
for t in ths:
    t.start()
    time.sleep(0.01)
for t in ths:
    t.join(600)
codes = [r[0] for r in results]
C.check("queue full: some requests get 503", 503 in codes, codes)
C.check("queue full: the others complete (200, [DONE])",
        all(r[0] == 503 or (r[0] == 200 and b"data: [DONE]" in r[2]) for r in results) and 200 in codes, codes)
for r in results:
    if r[0] == 503:
        C.check("503 carries Retry-After", "retry-after" in r[1], r[1])
        C.check("503 carries the envelope", envelope_ok(r[2])[0], r[2][:200])
        break
ok, m = Cs.wait_idle()
C.check("queue: idle after the flood", ok, {k: v for k, v in m.items() if "num_requests" in k or "kv" in k})

# A queued request whose client leaves must leave the queue while another one runs.
s = SSE(Cs, COMP, {"prompt": [1, 2, 3], "max_tokens": LONG, "ignore_eos": True, "stream": True})
it = s.events()
next(it)
body = json.dumps({"prompt": [4, 5, 6], "max_tokens": 10, "stream": True}).encode()
sk = socket.create_connection((Cs.host, Cs.port))
sk.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
           % len(body) + body)
deadline, waiting = time.time() + 10, 0
while time.time() < deadline:
    waiting = Cs.metrics().get("vllm:num_requests_waiting", 0)
    if waiting >= 1:
        break
    time.sleep(0.02)
C.check("queue: second request waits behind --max-num-seqs 1", waiting >= 1, waiting)
sk.close()
deadline, m = time.time() + 10, {}
while time.time() < deadline:
    m = Cs.metrics()
    if m.get("vllm:num_requests_waiting", -1) == 0:
        break
    time.sleep(0.02)
C.check("queue: disconnected waiting request leaves the queue", m.get("vllm:num_requests_waiting", -1) == 0
        and m.get("vllm:num_requests_running", 0) == 1, {k: v for k, v in m.items() if "num_requests" in k})
s.close()
ok, m = Cs.wait_idle()
C.check("queue: idle at the end", ok, {k: v for k, v in m.items() if "num_requests" in k or "kv" in k})
Cs.stop()

# ------------------------------------------------------------------ server D: SIGTERM drain
D = Server(C, FR, MODEL, [], W, "drain")
n_drain = 300 if not args.sanitize else 120
s = SSE(D, COMP, {"prompt": [7, 8, 9], "max_tokens": n_drain, "ignore_eos": True, "stream": True,
                  "stream_options": {"include_usage": True}})
it = s.events()
first = next(it)
D.proc.send_signal(signal.SIGTERM)
time.sleep(0.2)
try:
    st, hdr, data = D.post(COMP, {"prompt": [1, 2], "max_tokens": 2}, timeout=10)
    C.check("draining: a new request gets 503", st == 503 and envelope_ok(data)[0], "%d %s" % (st, data[:120]))
except OSError as e:
    C.check("draining: a new request is refused (503 or connection refused)", True, repr(e))
rest = [first] + list(it)
usage = None
for e in rest:
    if e != "[DONE]":
        try:
            usage = json.loads(e).get("usage") or usage
        except ValueError:
            pass
s.close()
C.check("draining: the in-flight stream completes", rest[-1] == "[DONE]" and usage and
        usage.get("completion_tokens") == n_drain, usage)
D.stop(send=False)  # the drain's SIGTERM alone must end it

# ------------------------------------------------------------------ server E: kjv-tiny
# The trained model (no chat template): chat is a 400, completions give its known greedy text.
E = Server(C, FR, KJV, [], W, "kjv-tiny")
expect_error(E, "kjv-tiny: chat without a template -> 400", "POST", CHAT, {"messages": MSG, "max_tokens": 4}, 400)
WANT = " unto him, Thy brother is come; and thy father hath killed the fatted calf."
st, hdr, body = E.post(COMP, {"prompt": "And God said", "max_tokens": 18, "temperature": 0})
got = json.loads(body)["choices"][0]["text"] if st == 200 else body[:200]
C.check("kjv-tiny: greedy completion of 'And God said'", st == 200 and got.startswith(WANT), repr(got))
st, txt, chunks, done, _ = stream_text(E, COMP, {"prompt": "And God said", "max_tokens": 18, "temperature": 0,
                                                 "stream": True})
C.check("kjv-tiny: streamed the same text", st == 200 and done and txt == got, repr(txt))
E.stop()

C.finish()
