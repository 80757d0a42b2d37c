#!/usr/bin/python3
"""`frontier bench-serve` against `frontier serve` on the tiny model: the JSON report must
have the right counts and sane numbers (no failures, every output exactly --output-len with
ignore_eos, TTFT < E2E, throughput consistent with the counts), and its errors must be one
line with exit 1 (unreachable server, HTTP errors) or 2 (bad options). The error cases need
no model; the run skips (77) without the DeepSeek-V3 tokenizer package."""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from cli_check import CliCheck  # noqa: E402
from serve_util import DSV3_TOK, ENV, Checks, Server, make_tiny  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--frontier", required=True)
ap.add_argument("--workdir", required=True)
ap.add_argument("--sanitize", action="store_true")
args = ap.parse_args()
FR, W = args.frontier, args.workdir
shutil.rmtree(W, ignore_errors=True)
os.makedirs(W)

# A port nothing listens on: bind, note the port, close.
s = socket.socket()
s.bind(("127.0.0.1", 0))
dead_port = s.getsockname()[1]
s.close()

cli = CliCheck(FR)
bs = ["bench-serve"]
cli.expect_error("no --url", bs + ["--vocab", "100"])
cli.expect_error("--url not http", bs + ["--url", "ftp://x", "--vocab", "100"], "http")
cli.expect_error("neither --vocab nor --tokenizer", bs + ["--url", "http://127.0.0.1:1"])
cli.expect_error("bad --concurrency list", bs + ["--url", "http://127.0.0.1:1", "--vocab", "9", "--concurrency", "1,,4"])
cli.expect_error("--concurrency 0", bs + ["--url", "http://127.0.0.1:1", "--vocab", "9", "--concurrency", "0"])
cli.expect_error("--range-ratio 1", bs + ["--url", "http://127.0.0.1:1", "--vocab", "9", "--range-ratio", "1"])
cli.expect_error("unknown option", bs + ["--url", "http://127.0.0.1:1", "--vocab", "9", "--frobnicate"])
cli.expect_error("--tokenizer dir without a tokenizer", bs + ["--url", "http://127.0.0.1:1", "--tokenizer", W])
cli.expect_error("connection refused", bs + ["--url", "http://127.0.0.1:%d" % dead_port, "--vocab", "100"],
                 "127.0.0.1")
for name, argv in [("no --url", bs + ["--vocab", "100"]), ("unknown option", bs + ["--url", "http://a", "--vocab", "9", "--x"])]:
    r = cli.run(argv)
    cli.passed += r.returncode == 2
    cli.failed += r.returncode != 2
    print("%s %-44s exit %d" % ("ok  " if r.returncode == 2 else "FAIL", "usage error exits 2: " + name, r.returncode))
r = cli.run(bs + ["--url", "http://127.0.0.1:%d" % dead_port, "--vocab", "100"])
cli.passed += r.returncode == 1
cli.failed += r.returncode != 1
print("%s %-44s exit %d" % ("ok  " if r.returncode == 1 else "FAIL", "runtime error exits 1", r.returncode))

if not os.path.exists(os.path.join(DSV3_TOK, "tokenizer.json")):
    print("%d passed, %d failed" % (cli.passed, cli.failed))
    print("skip: DeepSeek-V3 tokenizer package not installed (the run against a server)")
    sys.exit(1 if cli.failed else 77)

C = Checks()
C.passed, C.failed = cli.passed, cli.failed
model = make_tiny(FR, W, ctx=256)
srv = Server(C, FR, model, [], W, "bench")

# An HTTP error from the server: a prompt over the context is one line, exit 1, with the message.
cli.expect_error("prompt over the context (HTTP 400)", bs + ["--url", srv.url, "--tokenizer", model, "--input-len",
                                                             "400", "--output-len", "4", "--concurrency", "1"])
C.passed, C.failed = cli.passed, cli.failed

IN, OUT, LEVELS = 64, 16, [1, 4]
out_json = os.path.join(W, "bench.json")
argv = [FR, "bench-serve", "--url", srv.url + "/v1", "--tokenizer", model, "--input-len", str(IN), "--output-len",
        str(OUT), "--concurrency", ",".join(map(str, LEVELS)), "--seed", "3", "--json", out_json, "--timeout", "300"]
r = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=ENV)
print(r.stdout)
C.check("bench-serve exits 0", r.returncode == 0, r.stderr[-500:])
C.check("prints the summary table", "### summary" in r.stdout and "speedup vs c=1" in r.stdout)
try:
    rep = json.load(open(out_json))
except (OSError, ValueError) as e:
    rep = {"levels": []}
    C.check("JSON report readable", False, repr(e))
lv = rep.get("levels", [])
C.check("one JSON level per concurrency", [l.get("concurrency") for l in lv] == LEVELS, [l.get("concurrency") for l in lv])
C.check("model name from /v1/models", isinstance(rep.get("model"), str) and rep["model"], rep.get("model"))
for l in lv:
    c = l["concurrency"]
    n = max(2 * c, 8)
    reqs = l.get("requests", [])
    tag = "c=%d: " % c
    C.check(tag + "num_prompts default max(2c, 8)", l["num_prompts"] == n == len(reqs), l["num_prompts"])
    C.check(tag + "all completed, none failed", l["completed"] == n and l["failed"] == 0, l.get("first_error"))
    C.check(tag + "every output is --output-len tokens", all(q.get("output_tokens") == OUT for q in reqs),
            [q.get("output_tokens") for q in reqs])
    C.check(tag + "token totals", l["total_input_tokens"] == n * IN and l["total_output_tokens"] == n * OUT,
            (l["total_input_tokens"], l["total_output_tokens"]))
    C.check(tag + "0 < TTFT < E2E for every request",
            all(0 < q["ttft_ms"] < q["e2el_ms"] for q in reqs if q.get("ok")))
    C.check(tag + "max concurrency reached, not exceeded", l["max_concurrent_requests"] == c, l["max_concurrent_requests"])
    d = l["duration_s"]
    C.check(tag + "throughputs consistent with counts", d > 0 and
            abs(l["output_throughput"] - n * OUT / d) < 1e-6 * max(1, l["output_throughput"]) and
            abs(l["request_throughput"] - n / d) < 1e-6 * max(1, l["request_throughput"]) and
            abs(l["total_token_throughput"] - n * (IN + OUT) / d) < 1e-6 * max(1, l["total_token_throughput"]))
    t, e2e, tpot, itl = l["ttft_ms"], l["e2el_ms"], l["tpot_ms"], l["itl_ms"]
    C.check(tag + "stats ordered (mean TTFT < mean E2E, median <= p99)",
            t["mean"] < e2e["mean"] and t["median"] <= t["p99"] and e2e["median"] <= e2e["p99"] and
            tpot["median"] <= tpot["p99"] and itl["n"] >= n * (OUT - 1) - n, (t, e2e))
    C.check(tag + "TPOT = (E2E - TTFT) / (OUT - 1) on average",
            abs(tpot["mean"] - (e2e["mean"] - t["mean"]) / (OUT - 1)) < 1e-6 * max(1.0, tpot["mean"]), tpot["mean"])
C.check("speedup of c=1 is 1", lv and abs((lv[0].get("speedup") or 0) - 1) < 1e-9, lv[0].get("speedup") if lv else None)
ok, m = srv.wait_idle()
C.check("server idle after the benchmark", ok, {k: v for k, v in m.items() if "num_requests" in k or "kv" in k})
srv.stop()
C.finish()
