"""Shared harness of the bad-input CLI tests: run `frontier` and require that a bad input
ends with exit status 1 or 2, exactly one line on stderr starting with "frontier", and no
signal (the sanitizer build turns memory errors into failures here too)."""
import json
import os
import struct
import subprocess
import sys


class CliCheck:
    def __init__(self, frontier, name_width=44):
        self.fr = frontier
        self.passed = self.failed = 0
        self.width = name_width

    def run(self, argv, timeout=120):
        return subprocess.run([self.fr] + argv, capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, OMP_NUM_THREADS="1"))

    def expect_error(self, name, argv, must_contain=None):
        r = self.run(argv)
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        problems = []
        if r.returncode < 0:
            problems.append("killed by signal %d" % -r.returncode)
        elif r.returncode not in (1, 2):
            problems.append("exit status %d (want 1 or 2)" % r.returncode)
        if len(lines) != 1:
            problems.append("%d stderr lines (want 1): %r" % (len(lines), r.stderr[-2000:]))
        elif not lines[0].startswith("frontier"):
            problems.append("stderr line does not start with 'frontier': %r" % lines[0])
        if must_contain and must_contain not in r.stderr:
            problems.append("stderr lacks %r: %r" % (must_contain, r.stderr[-500:]))
        if problems:
            self.failed += 1
            print("FAIL %-*s %s" % (self.width, name, "; ".join(problems)))
        else:
            self.passed += 1
            print("ok   %-*s %s" % (self.width, name, lines[0][:120]))

    def must_succeed(self, argv, timeout=600):
        r = self.run(argv, timeout=timeout)
        if r.returncode != 0:
            print("fixture command failed: %s\n%s" % (" ".join(argv), r.stderr))
            sys.exit(1)
        return r

    def finish(self):
        print("%d passed, %d failed" % (self.passed, self.failed))
        sys.exit(1 if self.failed else 0)


def header_of(data):
    """(header length, parsed JSON header) of safetensors bytes."""
    n = struct.unpack("<Q", bytes(data[:8]))[0]
    return n, json.loads(bytes(data[8:8 + n]))


def with_header(data, hdr):
    """The same safetensors bytes with the header replaced by hdr (padded to 8 bytes)."""
    n, _ = header_of(data)
    body = data[8 + n:]
    text = json.dumps(hdr).encode()
    text += b" " * (-len(text) % 8)
    return bytearray(struct.pack("<Q", len(text)) + text + body)
