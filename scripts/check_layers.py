#!/usr/bin/env python3
"""Fails when a project #include runs against the layer order (docs/architecture.md).

Order, lowest first: core -> kernels -> models -> sim -> {traces, policies} -> app. A file may
include its own layer and any layer below it; traces and policies are siblings and never see
each other (a policy sees routing data only through sim/routing.hpp). tests/, bench/ and build
outputs may include anything.

  check_layers.py [ROOT]     check the tree under ROOT (default: the repository)
  check_layers.py --self-test  check tests/layers_fixture, whose bad lines end in
                               `// expect-violation`, and fail unless exactly those are reported
"""
import os
import re
import sys

# What each layer may include besides itself.
BELOW = {
    "core": set(),
    "kernels": {"core"},
    "models": {"core", "kernels"},
    "sim": {"core", "kernels", "models"},
    "traces": {"core", "kernels", "models", "sim"},
    "policies": {"core", "kernels", "models", "sim"},
    "app": {"core", "kernels", "models", "sim", "traces", "policies"},
}
UNCHECKED = {"tests", "bench"}  # may include anything
SKIP_DIRS = {".git", "build", "out", "docs", "scenarios", "studies", "scripts", "cmake"}
SUFFIXES = (".cpp", ".hpp", ".h", ".cu", ".cuh", ".inc")
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]')


def layer_of(rel):
    return rel.split("/", 1)[0] if "/" in rel else None


def target_layer(root, rel_file, inc):
    """The layer an include lands in, or None when it is not a project file (a system header)."""
    first = inc.split("/", 1)[0]
    if first in BELOW or first in UNCHECKED:
        return first
    # A bare or relative name resolves next to the including file.
    here = os.path.normpath(os.path.join(os.path.dirname(rel_file), inc))
    if not here.startswith("..") and os.path.isfile(os.path.join(root, here)):
        return layer_of(here)
    return None


def rule(layer):
    allowed = sorted(BELOW[layer] | {layer})
    return f"{layer}/ may include only {', '.join(allowed)}"


def check(root):
    """Every violation under root as (file, line, include, message)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        if rel_dir == ".":
            dirnames[:] = sorted(d for d in dirnames if d in BELOW)
        else:
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            if not name.endswith(SUFFIXES):
                continue
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            layer = layer_of(rel)
            if layer not in BELOW:
                continue
            with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as f:
                for number, text in enumerate(f, 1):
                    m = INCLUDE.match(text)
                    if not m:
                        continue
                    to = target_layer(root, rel, m.group(1))
                    if to is None or to == layer or to in BELOW[layer]:
                        continue
                    found.append((rel, number, m.group(1),
                                  f'includes "{m.group(1)}" ({to}/): {rule(layer)}'))
    return found


def self_test(repo):
    root = os.path.join(repo, "tests", "layers_fixture")
    expected = set()
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            if not name.endswith(SUFFIXES):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            with open(path, encoding="utf-8") as f:
                for number, text in enumerate(f, 1):
                    if text.rstrip().endswith("// expect-violation"):
                        expected.add((rel, number))
    got = {(f, n) for f, n, _, _ in check(root)}
    if not expected:
        print("self-test: the fixture marks no violation")
        return 1
    if got != expected:
        for f, n in sorted(expected - got):
            print(f"self-test: {f}:{n}: violation not reported")
        for f, n in sorted(got - expected):
            print(f"self-test: {f}:{n}: reported but not a violation")
        return 1
    print(f"self-test: the {len(got)} marked violations reported, nothing else")
    return 0


def main(argv):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if len(argv) > 1 and argv[1] == "--self-test":
        return self_test(repo)
    root = argv[1] if len(argv) > 1 else repo
    found = check(root)
    for f, n, _, message in found:
        print(f"{f}:{n}: {message}")
    if found:
        print(f"{len(found)} include(s) against the layer order (docs/architecture.md)")
        return 1
    print("layer order: every include points down")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
