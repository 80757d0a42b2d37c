"""Shared harness of the end-to-end server tests: make a model, start `frontier serve` on
an ephemeral loopback port, talk HTTP/SSE to it, read /metrics, stop it with SIGTERM and
require exit status 0 (under the sanitizer build a leak or memory error makes that fail).
On any failure the server's stderr is printed."""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ORACLE = os.path.join(ROOT, "tests", "oracle", "node_modules")
DSV3_TOK = os.path.join(ORACLE, "@lenml", "tokenizer-deepseek_v3", "models")
KJV = os.path.join(ROOT, "models", "kjv-tiny")
LISTEN_RE = re.compile(r"frontier serve: listening on http://([^:\s]+):(\d+)")
ENV = dict(os.environ, OMP_NUM_THREADS="1")


class Checks:
    """ok/FAIL lines like the CLI tests; finish() exits 1 when anything failed."""

    def __init__(self, width=56):
        self.passed = self.failed = 0
        self.width = width
        self.servers = []

    def check(self, name, ok, detail=""):
        ok = bool(ok)
        self.passed += ok
        self.failed += not ok
        print("%s %-*s %s" % ("ok  " if ok else "FAIL", self.width, name, str(detail)[:400]), flush=True)
        return ok

    def finish(self):
        for s in list(self.servers):
            s.kill()
        print("%d passed, %d failed" % (self.passed, self.failed), flush=True)
        sys.exit(1 if self.failed else 0)


def fr_cmd(fr, *argv, timeout=600):
    r = subprocess.run([fr] + [str(a) for a in argv], capture_output=True, timeout=timeout, env=ENV)
    if r.returncode != 0:
        raise SystemExit("frontier %s failed (%d): %s" % (" ".join(map(str, argv)), r.returncode,
                                                          r.stderr.decode(errors="replace")))
    return r.stdout


def need_dsv3_tokenizer():
    if not os.path.exists(os.path.join(DSV3_TOK, "tokenizer.json")):
        print("skip: DeepSeek-V3 tokenizer package not installed (scripts/install-deps.sh)")
        sys.exit(77)


def make_tiny(fr, workdir, ctx=1024, name="tiny-dsv3"):
    """The `tiny` synth preset (random weights) with DeepSeek-V3's tokenizer and chat template,
    its context raised to ctx tokens so that long generations (abort, drain) take a while."""
    d = os.path.join(workdir, name)
    if os.path.exists(os.path.join(d, "model.safetensors")):
        return d
    cfg = json.loads(fr_cmd(fr, "synth", "tiny", "--print-config"))
    cfg["max_position_embeddings"] = ctx
    path = os.path.join(workdir, name + ".config.json")
    with open(path, "w") as f:
        json.dump(cfg, f)
    fr_cmd(fr, "synth", path, d, "--tokenizer", DSV3_TOK, "--single-file")
    return d


class Server:
    """`frontier serve DIR --port 0 ARGS...`; stderr goes to a file (no pipe to fill)."""

    def __init__(self, checks, fr, model, args=(), workdir=".", name="server", start_timeout=120):
        self.checks, self.name = checks, name
        self.log_path = os.path.join(workdir, name + ".stderr")
        self.log = open(self.log_path, "wb")
        argv = [fr, "serve", model, "--port", "0"] + [str(a) for a in args]
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.log, env=ENV)
        checks.servers.append(self)
        self.failed_at_start = checks.failed
        deadline = time.time() + start_timeout
        self.host = self.port = None
        while time.time() < deadline:
            m = LISTEN_RE.search(self.stderr())
            if m:
                self.host, self.port = m.group(1), int(m.group(2))
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        if self.port is None:
            self.kill()
            raise SystemExit("%s did not start (%s):\n%s" % (name, " ".join(argv), self.stderr()))
        if self.host in ("0.0.0.0", "localhost", "::"):
            self.host = "127.0.0.1"
        self.url = "http://%s:%d" % (self.host, self.port)

    def stderr(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def conn(self, timeout=60):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=120):
        """(status, {lowercase header: value}, body bytes). body: dict/list -> JSON, bytes as is."""
        h = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            c.close()

    def post(self, path, obj, headers=None, timeout=120):
        return self.request("POST", path, obj, headers, timeout)

    def metrics(self, headers=None):
        """{metric name (labels dropped): summed value} of GET /metrics."""
        st, _, body = self.request("GET", "/metrics", headers=headers)
        out = {}
        if st != 200:
            return out
        for line in body.decode(errors="replace").splitlines():
            if not line or line.startswith("#"):
                continue
            m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
            if not m:
                continue
            try:
                v = float(m.group(3))
            except ValueError:
                continue
            out[m.group(1)] = out.get(m.group(1), 0.0) + v
        return out

    def wait_idle(self, timeout=30, headers=None):
        """Poll /metrics until nothing runs or waits and the KV cache is empty; the last reading."""
        deadline = time.time() + timeout
        m = {}
        while time.time() < deadline:
            m = self.metrics(headers)
            if (m.get("vllm:num_requests_running", -1) == 0 and m.get("vllm:num_requests_waiting", -1) == 0
                    and m.get("vllm:kv_cache_usage_perc", -1) == 0):
                return True, m
            time.sleep(0.05)
        return False, m

    def stop(self, timeout=60, send=True):
        """SIGTERM (unless send is False: one was sent already), then require a clean exit 0
        within timeout; prints stderr when not."""
        if self in self.checks.servers:
            self.checks.servers.remove(self)
        if send and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = "no exit %d s after SIGTERM" % timeout
        self.log.close()
        ok = self.checks.check("%s: SIGTERM -> exit 0" % self.name, rc == 0, "exit %s" % rc)
        if not ok or self.checks.failed > self.failed_at_start:
            print("---- %s stderr (%s) ----\n%s\n---- end ----" % (self.name, " ".join(self.argv),
                                                                  self.stderr()[-20000:]), flush=True)
        return ok

    def kill(self):
        if self in self.checks.servers:
            self.checks.servers.remove(self)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        print("---- %s stderr ----\n%s\n---- end ----" % (self.name, self.stderr()[-20000:]), flush=True)


class SSE:
    """A streaming POST read event by event on a raw http.client response."""

    def __init__(self, server, path, obj, headers=None, timeout=120):
        self.conn = server.conn(timeout)
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        self.conn.request("POST", path, body=json.dumps(obj).encode(), headers=h)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = {k.lower(): v for k, v in self.resp.getheaders()}
        self.lines = []       # every raw line, for framing checks
        self.done = False     # saw data: [DONE]

    def events(self):
        """Yield each event's data string ('[DONE]' included) until the stream ends."""
        data = []
        while True:
            raw = self.resp.readline()
            if not raw:
                if data:
                    yield "\n".join(data)
                return
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            self.lines.append(line)
            if line == "":
                if data:
                    d = "\n".join(data)
                    data = []
                    if d == "[DONE]":
                        self.done = True
                    yield d
                continue
            if line.startswith(":"):
                continue
            if line.startswith("data:"):
                data.append(line[5:].lstrip(" ") if line.startswith("data: ") else line[5:])

    def close(self):
        try:
            self.conn.sock and self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()


def stream_text(server, path, obj, headers=None, timeout=300):
    """Run a streaming request to the end: (status, text, chunks (parsed), done, raw lines)."""
    s = SSE(server, path, obj, headers, timeout)
    if s.status != 200:
        body = s.resp.read()
        s.close()
        return s.status, body.decode(errors="replace"), [], False, []
    chunks, text = [], []
    for d in s.events():
        if d == "[DONE]":
            continue
        try:
            c = json.loads(d)
        except ValueError:
            chunks.append({"_bad_json": d})
            continue
        chunks.append(c)
        for ch in c.get("choices") or []:
            if "delta" in ch:
                text.append((ch.get("delta") or {}).get("content") or "")
            else:
                text.append(ch.get("text") or "")
    s.close()
    return 200, "".join(text), chunks, s.done, s.lines


def envelope_ok(body):
    """(ok, detail): the OpenAI error envelope {"error": {"message": str, "type": str, ...}}."""
    try:
        j = json.loads(body)
    except ValueError:
        return False, "not JSON: %r" % body[:200]
    e = j.get("error") if isinstance(j, dict) else None
    if not isinstance(e, dict):
        return False, "no error object: %r" % body[:200]
    if not isinstance(e.get("message"), str) or not e["message"]:
        return False, "no message: %r" % body[:200]
    if not isinstance(e.get("type"), str):
        return False, "no type: %r" % body[:200]
    return True, e["message"][:160]
