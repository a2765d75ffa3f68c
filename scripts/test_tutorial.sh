#!/usr/bin/env bash
# Runs docs/tutorial.md as a reader would: every `$ ` command of its shell blocks and its Python
# block, in order, in a fresh folder holding only links to the build, studies/, scenarios/ and
# scripts/ (so out/ starts empty, as in a fresh clone). Each command must exit 0, or 2 where the
# page shows an `error:`; each output line the page shows must appear, in order (timings and the
# --jobs default are not compared; `...` skips lines), and every out/ file it names must exist.
# Called by scripts/test.sh after ctest. TUTORIAL=FILE checks another copy of the page.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
ln -s "$BUILD_DIR" "$work/build"
for d in studies scenarios scripts; do ln -s "$ROOT/$d" "$work/$d"; done
python3 - "${TUTORIAL:-$ROOT/docs/tutorial.md}" "$work" <<'PY'
import re, subprocess, sys, time

doc, work = sys.argv[1], sys.argv[2]

# (kind, text, expected lines): kind "sh" for a `$ ` command, "python" for a Python block.
steps, block, lang = [], None, None
for line in open(doc).read().splitlines():
    if line.startswith("```"):
        if block is None:
            block, lang = [], line[3:].strip()
            continue
        if lang == "python":
            steps.append(["python", "\n".join(block) + "\n", None])
        elif lang == "":
            cmd = None
            for b in block:
                if b.startswith("$ "):
                    cmd = ["sh", b[2:], []]
                    steps.append(cmd)
                elif cmd is not None:
                    cmd[2].append(b)
            # A bare block right after a Python block is what it prints.
            if cmd is None and steps and steps[-1][0] == "python" and steps[-1][2] is None:
                steps[-1][2] = block
        block = None
        continue
    if block is not None:
        block.append(line)


def pattern(line):
    """The shown line as a regex: timings ("4.17 s", "0:02") and the --jobs default may differ."""
    p = re.escape(line)
    p = re.sub(r"\d+\\\.\d+\\ s\b", r"[0-9.]+\\ s", p)
    p = re.sub(r"\\-\\-jobs\\ \d+", r"\\-\\-jobs\\ \\d+", p)
    return re.compile(p)


def check_output(expected, actual):
    """Every shown line appears in order; `...` skips any number of lines. Returns a problem or None."""
    lines = actual.splitlines()
    at = 0
    for e in expected:
        if e.strip() == "..." or not e.strip():
            continue
        rx = pattern(e)
        while at < len(lines) and not rx.fullmatch(lines[at]):
            at += 1
        if at == len(lines):
            return f"shown line not printed (in that order): {e!r}"
        at += 1
    return None


failures = 0
for kind, text, expected in steps:
    expected = expected or []
    start = time.time()
    if kind == "sh":
        proc = subprocess.run(["bash", "-c", text], cwd=work, capture_output=True, text=True)
        want_rc = 2 if expected and expected[0].startswith("error:") else 0
        shown = text
    else:
        proc = subprocess.run([sys.executable, "-"], input=text, cwd=work, capture_output=True, text=True)
        want_rc = 0
        shown = "the Python block"
    actual = proc.stdout + proc.stderr
    problem = None
    if proc.returncode != want_rc:
        problem = f"exit status {proc.returncode}, expected {want_rc}"
    elif kind == "python" and expected:
        # First and last lines, around the `...`.
        out = proc.stdout.splitlines()
        cut = expected.index("...") if "..." in expected else len(expected)
        head, tail = expected[:cut], expected[cut + 1:]
        if out[:len(head)] != head or (tail and out[-len(tail):] != tail):
            problem = "its first or last lines differ from the page"
    else:
        problem = check_output(expected, actual)
    if problem is None:
        for e in expected:
            for path in re.findall(r"\bout/[\w./-]*\w", e):
                if not subprocess.run(["test", "-e", path], cwd=work).returncode == 0:
                    problem = f"{path} is named but missing"
    print(f"test_tutorial: {'ok  ' if problem is None else 'FAIL'} {time.time() - start:5.1f} s  {shown.strip()[:100]}")
    if problem is not None:
        failures += 1
        print(f"  {problem}\n  output:\n" + "\n".join("    " + l for l in actual.splitlines()[-20:]))
print(f"test_tutorial: {len(steps)} steps, {failures} failed")
sys.exit(1 if failures else 0)
PY
