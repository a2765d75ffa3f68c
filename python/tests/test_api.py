"""Loading, overrides, errors, and results that equal the command line's files."""
import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import BUILD, ROOT, SMALL

import moesim

QUICKSTART = os.path.join(ROOT, "scenarios", "quickstart.yaml")


def write_yaml(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_load_yaml_reads_the_file():
    s = moesim.load(QUICKSTART)
    assert s.name == "quickstart"
    assert s.seed == 42
    assert [label for _, label in s.policies] == ["static-cf1", "static-cf2", "static-dropless", "symi", "oracle"]
    d = s.to_dict()
    assert d["run"]["max_iterations"] == 5000


def test_dict_and_yaml_load_the_same_scenario(tmp_path, small):
    # The same scenario as YAML (JSON is YAML): every resolved value agrees.
    path = write_yaml(tmp_path, "small.yaml", json.dumps(small))
    from_file = moesim.load(path).to_dict()
    from_dict = moesim.load(small).to_dict()
    assert (from_file.pop("file"), from_dict.pop("file")) == (path, "<dict>")
    assert from_file == from_dict
    assert from_dict["cluster"]["nodes"] == 4
    assert from_dict["placement"]["slots_per_gpu"] == 8


def test_overrides_as_strings_and_as_a_dict(small):
    a = moesim.load(small, set=["run.max_iterations=7", "cluster.nodes=8"]).to_dict()
    b = moesim.load(small, set={"run.max_iterations": 7, "cluster.nodes": 8}).to_dict()
    assert a == b
    assert a["run"]["max_iterations"] == 7 and a["cluster"]["nodes"] == 8
    # A Scenario loaded again with more overrides keeps its own.
    c = moesim.load(moesim.load(small, set="cluster.nodes=8"), set="run.max_iterations=7").to_dict()
    assert c == a
    r = moesim.run(small, set={"run.max_iterations": 3})
    assert [x["iterations_run"] for x in r["results"]] == [3, 3, 3]


def test_seed_override_changes_the_trace(small):
    small["policies"] = ["static"]
    a = moesim.run(small, seed=5)["results"][0]
    b = moesim.run(small, seed=6)["results"][0]
    assert moesim.load(small, seed=6).seed == 6
    assert a["drop_rate"] != b["drop_rate"]
    with pytest.raises(moesim.InputError, match="seed"):
        moesim.load(small, seed=-1)


def test_bad_input_raises_input_error_with_file_line_and_key(tmp_path, small):
    path = write_yaml(tmp_path, "bad.yaml", "name: bad\ncluster:\n  preset: swiftmoe-cloud\n  nodez: 3\n")
    with pytest.raises(moesim.InputError) as e:
        moesim.load(path)
    msg = str(e.value)
    assert "bad.yaml:4:" in msg and "nodez" in msg
    assert isinstance(e.value, ValueError)
    # An override names the assignment; a dict names its key path.
    with pytest.raises(moesim.InputError, match="run.max_iterations=0"):
        moesim.load(small, set="run.max_iterations=0")
    small["trace"]["skew"] = "steep"
    with pytest.raises(moesim.InputError, match=r"<dict>.*trace\.skew"):
        moesim.load(small)
    with pytest.raises(moesim.InputError, match="missing.yaml: cannot open file: No such file"):
        moesim.load(str(tmp_path / "missing.yaml"))


def test_unknown_policy_lists_the_registered_ones(small):
    with pytest.raises(moesim.InputError, match="unknown policy 'nosuch'.*static.*oracle"):
        moesim.compare(small, policies="nosuch")


def test_compare_policies_argument_as_the_command_line(small):
    r = moesim.compare(small, policies=["static:capacity_factor=2", "oracle"])
    assert [x["label"] for x in r["results"]] == ["static:capacity_factor=2", "oracle"]
    assert r["scenario"]["policies"][0]["parameters"]["capacity_factor"] == 2.0


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_compare_equals_the_command_line(tmp_path, small, moesim_binary):
    path = write_yaml(tmp_path, "small.yaml", json.dumps(small))
    out = tmp_path / "cli"
    subprocess.run([moesim_binary, "compare", path, "--quiet", "--out", str(out), "--set", "run.max_iterations=9"],
                   check=True)
    r = moesim.compare(path, set="run.max_iterations=9")
    with open(out / "summary.json") as f:
        summary = json.load(f)
    with open(out / "compare.json") as f:
        rows = json.load(f)
    assert dict(r) == summary
    assert r.results == summary["results"]
    assert r.compare_rows() == rows
    # The tables: every cell as the CLI wrote it (the Python lists hold numbers).
    cli_iters = read_csv(out / "iterations.csv")
    assert len(r.iterations()) == len(cli_iters) == 3 * 9
    for mine, theirs in zip(r.iterations(), cli_iters):
        assert {k: str(v) for k, v in mine.items()} == theirs
    assert r.iterations()[0]["iteration_ns"] == int(cli_iters[0]["iteration_ns"])
    assert len(r.experts()) == len(read_csv(out / "experts.csv")) > 0
    # Result.write gives the same files.
    r.write(tmp_path / "py")
    for name in ("summary.json", "compare.json", "compare.csv", "iterations.csv", "experts.csv"):
        assert (tmp_path / "py" / name).read_text() == (out / name).read_text(), name


def test_run_and_compare_are_deterministic(small):
    a = moesim.compare(small)
    b = moesim.compare(small)
    assert dict(a) == dict(b)
    assert a.iterations() == b.iterations()
    c = moesim.compare(small, jobs=3)
    assert dict(c) == dict(a) and c.iterations() == a.iterations()


def test_str_is_the_command_line_table(small):
    r = moesim.compare(small)
    text = str(r)
    for label in ("static-cf1", "static-dropless", "symi"):
        assert label in text
    assert "static-cf1" in repr(r)


def test_dataframes_when_pandas_is_installed(small):
    r = moesim.compare(small, set="run.max_iterations=4")
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pandas"):
            r.iterations_df()
        return
    df = r.iterations_df()
    assert len(df) == 3 * 4
    assert list(df["iteration"][:4]) == [0, 1, 2, 3]
    assert list(r.compare_df()["label"]) == ["static-cf1", "static-dropless", "symi"]
    assert list(r.compare_df()["policy"]) == ["static", "static", "symi"]


def test_importable_from_the_interpreter_on_path():
    # The done criterion, with the first python3 on PATH (here pyenv's; Debian's runs
    # this suite), from the repository root, on a shortened quickstart.
    py = shutil.which("python3")
    if py is None:
        pytest.skip("no python3 on PATH")
    code = ("import moesim; r = moesim.compare('scenarios/quickstart.yaml', set='run.max_iterations=3'); "
            "print(r); print(len(r['results']))")
    env = dict(os.environ, MOESIM_BUILD_DIR=BUILD)
    env.pop("PYTHONPATH", None)
    p = subprocess.run([py, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert p.stdout.strip().endswith("5")
    assert "static-cf1" in p.stdout
