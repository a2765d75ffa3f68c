"""Shared set-up of the report tests (issue 17 item 6): scripts/ on the import path, matplotlib on
Agg, and one 20-policy `moesim compare` of many_policies.yaml per session with its report pages.
The ctest `report_tests` sets MOESIM_BINARY (the CLI) and MOESIM_REPORT_ARTIFACTS (where the
Chromium screenshot is kept)."""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SCRIPTS = os.path.join(ROOT, "scripts")
if SCRIPTS not in sys.path:
    sys.path.insert(0, SCRIPTS)

import matplotlib  # noqa: E402

matplotlib.use("Agg")

SCENARIO = os.path.join(HERE, "many_policies.yaml")


def moesim_binary():
    path = os.environ.get("MOESIM_BINARY") or os.path.join(ROOT, "build", "moesim")
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


@pytest.fixture(scope="session")
def many_run(tmp_path_factory):
    """A compare folder of the 20 entries of many_policies.yaml with report.md and report.html."""
    binary = moesim_binary()
    if binary is None:
        pytest.fail("no moesim CLI: set MOESIM_BINARY (the ctest does) or build build/moesim")
    out = str(tmp_path_factory.mktemp("many") / "run")
    subprocess.run([binary, "compare", SCENARIO, "--out", out, "-q", "-j", "2"], check=True, cwd=ROOT)
    plot = os.path.join(SCRIPTS, "plot.py")
    for fmt in ("md", "html"):
        subprocess.run([sys.executable, plot, out, "--report", "--format", fmt], check=True,
                       capture_output=True)
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    return out, summary
