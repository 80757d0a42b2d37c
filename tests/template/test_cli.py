"""test_cli.py - `frontier template` on bad input: usage errors exit 2, every other failure
exits 1 with exactly one line on stderr, never a crash or a hang; hostile templates stop
at the render limits; the output is the rendered text with nothing added."""
import argparse
import json
import os
import shutil
import subprocess
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--frontier", required=True)
ap.add_argument("--workdir", required=True)
a = ap.parse_args()
shutil.rmtree(a.workdir, ignore_errors=True)
os.makedirs(a.workdir)

passed = failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def run(*args):
    return subprocess.run([a.frontier, "template", *args], capture_output=True, timeout=120)


def ckpt(name, template=None, config=None, tokcfg=None):
    d = os.path.join(a.workdir, name)
    os.makedirs(d, exist_ok=True)
    if template is not None:
        write(os.path.join(d, "chat_template.jinja"), template)
    if config is not None:
        write(os.path.join(d, "config.json"), json.dumps(config))
    if tokcfg is not None:
        write(os.path.join(d, "tokenizer_config.json"), tokcfg if isinstance(tokcfg, str) else json.dumps(tokcfg))
    return d


msgs = write(os.path.join(a.workdir, "m.json"), json.dumps([{"role": "user", "content": "hi"}]))
ok_dir = ckpt("ok", template="{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}")

# success: exact bytes, no newline added (the template's own trailing newline is dropped by HF rules)
r = run(ok_dir, "--messages", msgs)
check("renders", r.returncode == 0 and r.stdout == b"[user] hi\n", repr(r.stdout) + r.stderr.decode())
r = run(ok_dir, "--messages", write(os.path.join(a.workdir, "wrapped.json"), json.dumps({"messages": [{"role": "user", "content": "x"}]})))
check("messages object form", r.returncode == 0 and r.stdout == b"[user] x\n", repr(r.stdout))

# usage errors: exit 2
for name, args in [("no args", []), ("no messages", [ok_dir]), ("unknown option", [ok_dir, "--messages", msgs, "--bogus"]),
                   ("two dirs", [ok_dir, ok_dir, "--messages", msgs]), ("missing value", [ok_dir, "--messages"])]:
    r = run(*args)
    check(f"usage: {name}", r.returncode == 2, f"exit {r.returncode}")

# runtime errors: exit 1, one line "frontier template: ..."
bad = [
    ("missing dir", [os.path.join(a.workdir, "nope"), "--messages", msgs], "no chat template"),
    ("missing messages file", [ok_dir, "--messages", os.path.join(a.workdir, "nope.json")], "nope.json"),
    ("malformed messages", [ok_dir, "--messages", write(os.path.join(a.workdir, "bad.json"), "[{")], "invalid JSON"),
    ("messages not a list", [ok_dir, "--messages", write(os.path.join(a.workdir, "obj.json"), '{"a": 1}')], "not a JSON array"),
    ("tools not a list", [ok_dir, "--messages", msgs, "--tools", write(os.path.join(a.workdir, "t.json"), "{}")], "--tools"),
    ("kwargs not an object", [ok_dir, "--messages", msgs, "--kwargs", write(os.path.join(a.workdir, "k.json"), "[]")], "--kwargs"),
    ("kwargs sets messages", [ok_dir, "--messages", msgs, "--kwargs", write(os.path.join(a.workdir, "k2.json"), '{"messages": 1}')], "may not set"),
    ("no template", [ckpt("empty", tokcfg={"bos_token": "<s>"}), "--messages", msgs], "no chat template"),
    ("bad tokenizer_config", [ckpt("badcfg", tokcfg="{nope"), "--messages", msgs], "invalid JSON"),
    ("chat_template wrong type", [ckpt("wrongtype", tokcfg={"chat_template": 5}), "--messages", msgs], "neither a string nor a list"),
    ("syntax error", [ckpt("syntax", template="hello\n{% for m in messages %}\n{{ m.role "), "--messages", msgs], "line 3:"),
    ("raise_exception", [ckpt("raise", template="{{ raise_exception('only user turns') }}"), "--messages", msgs], "only user turns"),
    ("huge range", [ckpt("range", template="{% for i in range(10**12) %}{% endfor %}"), "--messages", msgs], "range()"),
    ("endless recursion", [ckpt("rec", template="{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"), "--messages", msgs], "nested more than"),
    ("output blowup", [ckpt("blow", template="{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}"), "--messages", msgs], "allowed"),
    ("endless loop", [ckpt("loop", template="{% set r = range(1000000) %}{% for a in r %}{% for b in r %}{% endfor %}{% endfor %}"), "--messages", msgs], "evaluation steps"),
    ("dsv32 orphan tool", [ckpt("v32", config={"model_type": "deepseek_v32"}), "--messages",
                           write(os.path.join(a.workdir, "orphan.json"), json.dumps([{"role": "tool", "content": "x"}]))], "tool result"),
]
# DeepSeek-V3.2 tool prompts are read from the checkpoint's encoding/encoding_dsv32.py
tools = write(os.path.join(a.workdir, "tools.json"), json.dumps([{"type": "function", "function": {"name": "f"}}]))
v32_big = ckpt("v32big", config={"model_type": "deepseek_v32"})
write(os.path.join(v32_big, "encoding", "encoding_dsv32.py"), "# " + "x" * (1 << 20) + "\n")
v32_open = ckpt("v32open", config={"model_type": "deepseek_v32"})
write(os.path.join(v32_open, "encoding", "encoding_dsv32.py"), 'A = 1\nTOOLS_SYSTEM_TEMPLATE = """never closed {tool_schemas}\n')
v32_esc = ckpt("v32esc", config={"model_type": "deepseek_v32"})
write(os.path.join(v32_esc, "encoding", "encoding_dsv32.py"), 'A = 1\n\nTOOLS_SYSTEM_TEMPLATE = "bad \\x4 escape {tool_schemas}"\n')
v32_brace = ckpt("v32brace", config={"model_type": "deepseek_v32"})
write(os.path.join(v32_brace, "encoding", "encoding_dsv32.py"), 'TOOLS_SYSTEM_TEMPLATE = "{tool_schemas} {"\n')
v32_expr = ckpt("v32expr", config={"model_type": "deepseek_v32"})
write(os.path.join(v32_expr, "encoding", "encoding_dsv32.py"), 'TOOLS_SYSTEM_TEMPLATE = "x {tool_schemas}" + EOS\n')
bad += [
    ("dsv32 tools, no encoding file", [ckpt("v32", config={"model_type": "deepseek_v32"}), "--messages", msgs, "--tools", tools],
     "encoding/encoding_dsv32.py in the checkpoint, which"),
    ("dsv32 encoding file too big", [v32_big, "--messages", msgs, "--tools", tools], "more than the 1048576 allowed"),
    ("dsv32 literal never closes", [v32_open, "--messages", msgs, "--tools", tools], "line 2: a string literal does not close"),
    ("dsv32 bad escape", [v32_esc, "--messages", msgs, "--tools", tools], "line 3: TOOLS_SYSTEM_TEMPLATE: a \\x, \\u or \\U escape"),
    ("dsv32 single brace", [v32_brace, "--messages", msgs, "--tools", tools], "a single '{'"),
    ("dsv32 expression", [v32_expr, "--messages", msgs, "--tools", tools], "an expression, not a plain string literal"),
]
for name, args, piece in bad:
    try:
        r = run(*args)
    except subprocess.TimeoutExpired:
        check(name, False, "timed out")
        continue
    err = r.stderr.decode("utf-8", "replace")
    lines = err.strip().split("\n")
    check(name, r.returncode == 1 and len(lines) == 1 and err.startswith("frontier template: ") and piece in err and not r.stdout,
          f"exit {r.returncode}, stderr {err!r}")

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
