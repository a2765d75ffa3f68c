#!/usr/bin/env python3
"""Draws PNG pictures of a moesim results folder, and optionally a report page.

    scripts/plot.py RESULTS_DIR [--out DIR] [--report] [--format md|html] [--run ID]

RESULTS_DIR is either a `moesim compare --out` folder (compare.csv, iterations.csv and, unless
--expert-stats 0, experts.csv) or a `moesim sweep --out` folder (study.csv, study.json and, with
sweep --details, runs/<id>/ folders of the former kind). The pictures go to RESULTS_DIR/plots (or
--out DIR) under fixed names:

  compare folder
    time_to_convergence.png   simulated time to convergence per policy (OOM / not converged marked)
    iteration_breakdown.png   mean iteration time per policy, stacked by phase, in ms
    convergence_progress.png  convergence progress over simulated time, one line per policy
    drop_rate.png             dropped / routed tokens per iteration, one line per policy
    expert_load_heatmap.png   layer x expert load share, and the most skewed layer over iterations
    replicas_per_expert.png   replicas per expert over iterations, policies whose replicas change
  sweep folder
    study_time_to_convergence.png, study_parameters.png, study_breakdown.png, study_tradeoff.png,
    and <run id>_<one of the above> for one run with details (the first, or --run ID)

With --report it also writes RESULTS_DIR/report.md (or report.html): the scenario's description,
the tables, why each entry that ran out of memory did, and the pictures, embedded by relative
path. Styles, labels and log axes that hold up to 20 policies: docs/outputs.md, "The report". `moesim report RESULTS_DIR` runs this script. Needs Python 3 and
matplotlib (Debian: python3-matplotlib); nothing else.
Exit status: 0 success, 2 bad input (missing folder or file, unreadable CSV).
"""

import argparse
import os
import sys

# Beside this file: the shared helpers and the compare and sweep halves of the pictures.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plot_common import *  # noqa: E402,F401,F403
from plot_compare import band_section, compare_table, draw_compare, load_summary, oom_section, scenario_section  # noqa: E402,E501
from plot_study import draw_study  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description="Draw PNG pictures (and a report page) of a moesim results folder.")
    ap.add_argument("results_dir", metavar="RESULTS_DIR",
                    help="folder written by `moesim compare --out` or `moesim sweep --out`")
    ap.add_argument("--out", metavar="DIR", help="folder for the PNG files (default RESULTS_DIR/plots)")
    ap.add_argument("--report", action="store_true", help="also write RESULTS_DIR/report.md (or .html)")
    ap.add_argument("--format", choices=["md", "html"], default="md", help="format of the report page")
    ap.add_argument("--run", metavar="ID", help="sweep folder: the run drawn in detail (default: the first with "
                                                "a runs/ID folder)")
    args = ap.parse_args(argv)

    results_dir = args.results_dir
    if not os.path.isdir(results_dir):
        fail(f"{results_dir}: no such directory")
    is_study = os.path.isfile(os.path.join(results_dir, "study.csv"))
    if not is_study:
        for name in ("compare.csv", "iterations.csv"):
            p = os.path.join(results_dir, name)
            if not os.path.isfile(p):
                fail(f"{p}: missing (write it with `moesim compare SCENARIO --out {results_dir}`, or give a "
                     "`moesim sweep --out` folder holding study.csv)")

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        # A python3 first on PATH (pyenv, a virtual environment) may lack Debian's matplotlib: use the
        # system interpreter when it differs and has not been tried yet.
        system = "/usr/bin/python3"
        if (os.path.isfile(system) and os.path.realpath(sys.executable) != os.path.realpath(system)
                and not os.environ.get("MOESIM_PLOT_REEXEC")):
            os.environ["MOESIM_PLOT_REEXEC"] = "1"
            os.execv(system, [system, os.path.abspath(__file__)] + (sys.argv[1:] if argv is None else list(argv)))
        print("plot.py: error: matplotlib is not installed (Debian: apt-get install python3-matplotlib)",
              file=sys.stderr)
        return 1

    plots_dir = args.out or os.path.join(results_dir, "plots")
    report = Report(f"moesim results: {os.path.basename(os.path.abspath(results_dir))}")
    try:
        if is_study:
            drawn, notes = draw_study(plt, results_dir, plots_dir, args.run, report)
        else:
            compare, drawn, notes = draw_compare(plt, results_dir, plots_dir)
            summary = load_summary(results_dir) or {}
            scenario_section(report, summary.get("scenario"))
            report.heading("Policies")
            compare_table(report, compare)
            oom_section(report, summary.get("results", []))
            band_section(report, results_dir)
            report.heading("Pictures")
            add_pictures(report, results_dir, plots_dir, drawn)
    except InputError as e:
        fail(str(e))
    for n in notes:
        print(f"plot.py: note: {n}", file=sys.stderr)
    if notes:
        report.heading("Not drawn")
        report.bullets(notes)

    for name in drawn:
        print(f"wrote {os.path.join(plots_dir, name)}")
    if args.report:
        path = os.path.join(results_dir, "report." + args.format)
        write_atomic(path, report.markdown() if args.format == "md" else report.html())
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
