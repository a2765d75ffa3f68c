"""summary.json and compare.json of real runs against docs/schema/, compare.csv against compare.json,
and mutated documents that the schemas must refuse (ctest output_schemas).

Usage: check_output_schemas.py MOESIM_BINARY SOURCE_DIR
Needs the jsonschema module (Debian: python3-jsonschema, installed by scripts/setup.sh)."""

import copy
import csv
import json
import os
import subprocess
import sys
import tempfile

try:
    import jsonschema
except ImportError:
    sys.exit(f"{sys.executable}: no module 'jsonschema'; install Debian's python3-jsonschema "
             "(scripts/setup.sh does) and run this with /usr/bin/python3")

binary, source = sys.argv[1], sys.argv[2]
schemas = {name: json.load(open(os.path.join(source, "docs", "schema", f"{name}.schema.json")))
           for name in ("summary", "compare")}
validators = {}
for name, schema in schemas.items():
    jsonschema.Draft202012Validator.check_schema(schema)
    validators[name] = jsonschema.Draft202012Validator(schema)
failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL:", msg)


def errors(kind, doc):
    return list(validators[kind].iter_errors(doc))


def moesim(*args):
    r = subprocess.run([binary, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"moesim {' '.join(args)} exited {r.returncode}: {r.stderr}")
    return r.stdout


work = tempfile.mkdtemp(prefix="moesim_schemas_")
quickstart = os.path.join(source, "scenarios", "quickstart.yaml")
# The out-of-memory scenario of test_cli (static at capacity factor 2 does not fit in 1.825 GB):
# its result carries the OOM fields, the other policy the not-converged ones.
oom = os.path.join(work, "oom.yaml")
with open(oom, "w") as f:
    f.write("cluster:\n  preset: swiftmoe-cloud\n  gpu: {preset: a100-pcie-80gb, hbm_bytes: 1.825e9}\n"
            "model: {preset: gpt-small-moe}\nplacement: {slots_per_gpu: 4}\n"
            "training: {optimizer_offload: true}\nrun: {max_iterations: 8}\npolicies: [static]\n")
runs = {
    "band": [quickstart, "--set", "run.max_iterations=12", "--convergence-band", "--expert-stats", "0"],
    "oom": [oom, "--policies", "static:min_capacity=2,static:capacity_factor=2", "--expert-stats", "0"],
}
docs = {}
for name, args in runs.items():
    out = os.path.join(work, name)
    moesim("compare", *args, "--quiet", "--out", out)
    summary = json.load(open(os.path.join(out, "summary.json")))
    rows = json.load(open(os.path.join(out, "compare.json")))
    with open(os.path.join(out, "compare.csv"), newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        cells = list(reader)
    docs[name] = (summary, rows)
    for kind, doc in (("summary", summary), ("compare", rows)):
        for e in errors(kind, doc):
            fail(f"{name}/{kind}.json: {'/'.join(map(str, e.absolute_path))}: {e.message}")
    # The CSV and the JSON carry the same fields, in the same order, with the same values.
    if [list(r.keys()) for r in rows] != [header] * len(rows):
        fail(f"{name}: compare.csv header {header} differs from compare.json's keys {list(rows[0].keys())}")
    if len(cells) != len(rows) or len(rows) != len(summary["results"]):
        fail(f"{name}: {len(cells)} CSV rows, {len(rows)} JSON rows, {len(summary['results'])} results")
    for row, line in zip(rows, cells):
        for key, text in zip(header, line):
            v = row[key]
            same = (text == "") if v is None else (text == v if isinstance(v, str) else float(text) == float(v))
            if not same:
                fail(f"{name}: {row['label']}: {key} is {text!r} in compare.csv, {v!r} in compare.json")
    for row, res in zip(rows, summary["results"]):
        for key in ("label", "policy", "status", "mean_iteration_ns", "drop_rate"):
            if row[key] != res[key]:
                fail(f"{name}: {key}: compare.json {row[key]!r}, summary.json {res[key]!r}")

statuses = [r["status"] for r in docs["oom"][1]]
if statuses != ["not_converged", "oom"]:
    fail(f"oom: statuses {statuses}, expected ['not_converged', 'oom']")
if "min_time_to_convergence_s" not in docs["band"][1][0]:
    fail("band: compare.json has no convergence band columns")

# Each mutation is one way a reader would break; each must be refused.
summary, rows = docs["band"]


def mutated(doc, change):
    d = copy.deepcopy(doc)
    change(d)
    return d


cases = [
    ("summary", "a result without 'status'", mutated(summary, lambda d: d["results"][0].pop("status"))),
    ("summary", "'policy' renamed 'name'",
     mutated(summary, lambda d: d["results"][0].update(name=d["results"][0].pop("policy")))),
    ("summary", "an unknown result field", mutated(summary, lambda d: d["results"][0].update(speedup=2.0))),
    ("summary", "a phase missing", mutated(summary, lambda d: d["results"][0]["mean_phase_ns"].pop("a2a_ns"))),
    ("summary", "no scenario name", mutated(summary, lambda d: d["scenario"].pop("name"))),
    ("summary", "a drop rate above 1", mutated(summary, lambda d: d["results"][0].update(drop_rate=1.5))),
    ("compare", "a row without 'label'", mutated(rows, lambda d: d[0].pop("label"))),
    ("compare", "'moved_bytes_per_iteration' renamed 'moved_bytes'",
     mutated(rows, lambda d: d[0].update(moved_bytes=d[0].pop("moved_bytes_per_iteration")))),
    ("compare", "an unknown status", mutated(rows, lambda d: d[0].update(status="done"))),
    ("compare", "a number as text", mutated(rows, lambda d: d[0].update(mean_iteration_ns="1.0"))),
    ("compare", "only one end of the band", mutated(rows, lambda d: d[0].pop("max_time_to_convergence_s"))),
]
for kind, what, doc in cases:
    if not errors(kind, doc):
        fail(f"{kind}.schema.json accepts {what}")

print(f"output schemas: {len(runs)} runs valid, {len(cases)} mutations refused" if not failures else
      f"{len(failures)} failures")
subprocess.run(["rm", "-rf", work])
sys.exit(1 if failures else 0)
