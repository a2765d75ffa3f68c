#!/usr/bin/env python3
"""Draws PNG pictures of a `moesim compare` results folder, and optionally a Markdown report.

    scripts/plot.py RESULTS_DIR [--out DIR] [--report]

RESULTS_DIR holds compare.csv and iterations.csv (as written by `moesim compare ... --out DIR`).
The pictures go to RESULTS_DIR/plots (or --out DIR) under fixed names:

    time_to_convergence.png   simulated time to convergence per policy (OOM / not converged marked)
    iteration_breakdown.png   mean iteration time per policy, stacked by phase, in ms
    convergence_progress.png  convergence progress over simulated time, one line per policy
    drop_rate.png             dropped / routed tokens per iteration, one line per policy
    expert_load_heatmap.png   only when RESULTS_DIR/expert_load.csv exists
    replicas_per_expert.png   only when RESULTS_DIR/replicas.csv exists

With --report it also writes RESULTS_DIR/report.md: the compare table and the pictures, embedded
by relative path. Needs Python 3 and matplotlib (Debian: python3-matplotlib); nothing else.
Exit status: 0 success, 2 bad input (missing folder or file, unreadable CSV).
"""

import argparse
import csv
import os
import sys

PHASES = [  # (column in compare.csv / iterations.csv, legend label, colour)
    ("compute_ns", "compute", "#4c72b0"),
    ("a2a_ns", "all-to-all", "#dd8452"),
    ("grad_sync_ns", "gradient sync", "#55a868"),
    ("optimizer_ns", "optimizer", "#8172b3"),
    ("movement_ns", "movement", "#c44e52"),
    ("wait_ns", "wait", "#937860"),
]

# Output names, in the order they appear in the report.
PLOT_TTC = "time_to_convergence.png"
PLOT_BREAKDOWN = "iteration_breakdown.png"
PLOT_PROGRESS = "convergence_progress.png"
PLOT_DROP = "drop_rate.png"
PLOT_HEATMAP = "expert_load_heatmap.png"
PLOT_REPLICAS = "replicas_per_expert.png"

# Optional inputs that moesim does not write yet; drawn only when present.
EXPERT_LOAD_CSV = "expert_load.csv"  # columns: policy,iteration,layer,expert,load
REPLICAS_CSV = "replicas.csv"  # columns: policy,iteration,layer,expert,replicas


class InputError(Exception):
    pass


def fail(msg):
    print(f"plot.py: error: {msg}", file=sys.stderr)
    sys.exit(2)


def read_csv(path, required_columns):
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = reader.fieldnames or []
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}")
    missing = [c for c in required_columns if c not in columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    return rows


def num(value, path, column):
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{path}: column {column}: not a number: {value!r}")


def policies_in_order(rows):
    seen = []
    for r in rows:
        if r["policy"] not in seen:
            seen.append(r["policy"])
    return seen


def load_iterations(path):
    cols = ["policy", "iteration", "tokens_routed", "tokens_dropped", "progress", "end_ns"]
    rows = read_csv(path, cols)
    by_policy = {}
    for r in rows:
        d = by_policy.setdefault(r["policy"], {"end_s": [], "progress": [], "drop": [], "iteration": []})
        routed = num(r["tokens_routed"], path, "tokens_routed")
        dropped = num(r["tokens_dropped"], path, "tokens_dropped")
        d["iteration"].append(int(num(r["iteration"], path, "iteration")))
        d["end_s"].append(num(r["end_ns"], path, "end_ns") / 1e9)
        d["progress"].append(num(r["progress"], path, "progress"))
        d["drop"].append(dropped / routed if routed > 0 else 0.0)
    return by_policy


def new_figure(plt, width=8.0, height=4.5):
    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    ax.grid(True, axis="y", alpha=0.3)
    return fig, ax


def save(fig, path):
    fig.tight_layout()
    # Fixed metadata so that the same inputs give the same files.
    fig.savefig(path, format="png", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)


def plot_ttc(plt, compare, iters, path, csv_path):
    fig, ax = new_figure(plt)
    labels = [r["policy"] for r in compare]
    xs = list(range(len(labels)))
    top = 0.0
    for x, r in zip(xs, compare):
        status = r["status"]
        if status == "converged" and r["time_to_convergence_s"] != "":
            v = num(r["time_to_convergence_s"], csv_path, "time_to_convergence_s")
            ax.bar(x, v, color="#4c72b0")
            ax.annotate(f"{v:.1f}", (x, v), ha="center", va="bottom", fontsize=8)
            top = max(top, v)
    # Runs that did not converge: a hatched bar up to the simulated time they ran (a lower bound).
    for x, r in zip(xs, compare):
        status = r["status"]
        if status == "converged" and r["time_to_convergence_s"] != "":
            continue
        ran = iters.get(r["policy"], {}).get("end_s", [])
        ran_s = ran[-1] if ran else 0.0
        text = "OOM" if status == "oom" else "not converged"
        if ran_s > 0:
            ax.bar(x, ran_s, color="none", edgecolor="#c44e52", hatch="//")
            text += f"\n(> {ran_s:.1f} s run)" if status != "oom" else f"\n(after {ran_s:.1f} s)"
        ax.annotate(text, (x, ran_s), ha="center", va="bottom", fontsize=8, color="#c44e52")
        top = max(top, ran_s)
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, rotation=20, ha="right")
    ax.set_ylabel("simulated time to convergence (s)")
    ax.set_title("Time to convergence per policy")
    ax.set_ylim(0, top * 1.2 if top > 0 else 1.0)
    save(fig, path)


def plot_breakdown(plt, compare, path, csv_path):
    fig, ax = new_figure(plt)
    labels = [r["policy"] for r in compare]
    xs = list(range(len(labels)))
    bottoms = [0.0] * len(labels)
    for col, name, colour in PHASES:
        vals = [num(r[col], csv_path, col) / 1e6 for r in compare]
        ax.bar(xs, vals, bottom=bottoms, label=name, color=colour)
        bottoms = [b + v for b, v in zip(bottoms, vals)]
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, rotation=20, ha="right")
    ax.set_ylabel("mean time per iteration (ms)")
    ax.set_title("Iteration time breakdown (critical GPU)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    save(fig, path)


def plot_progress(plt, iters, order, path):
    fig, ax = new_figure(plt)
    ax.grid(True, axis="x", alpha=0.3)
    for p in order:
        d = iters[p]
        ax.plot([0.0] + d["end_s"], [0.0] + d["progress"], label=p, linewidth=1.5)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="converged")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("convergence progress")
    ax.set_title("Convergence progress over simulated time")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    save(fig, path)


def plot_drop(plt, iters, order, path):
    fig, ax = new_figure(plt)
    ax.grid(True, axis="x", alpha=0.3)
    for p in order:
        d = iters[p]
        ax.plot(d["end_s"], [100.0 * v for v in d["drop"]], label=p, linewidth=1.2)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("tokens dropped (% of routed)")
    ax.set_title("Drop rate per iteration")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    save(fig, path)


def plot_heatmap(plt, path_csv, path):
    """Layer x expert load, averaged over iterations, one panel per policy."""
    rows = read_csv(path_csv, ["policy", "iteration", "layer", "expert", "load"])
    order = policies_in_order(rows)
    if not order:
        raise InputError(f"{path_csv}: no rows")
    fig, axes = plt.subplots(len(order), 1, figsize=(8.0, 2.2 * len(order) + 0.8), dpi=100, squeeze=False)
    for ax, p in zip(axes[:, 0], order):
        sums, counts = {}, {}
        for r in rows:
            if r["policy"] != p:
                continue
            key = (int(num(r["layer"], path_csv, "layer")), int(num(r["expert"], path_csv, "expert")))
            sums[key] = sums.get(key, 0.0) + num(r["load"], path_csv, "load")
            counts[key] = counts.get(key, 0) + 1
        layers = max(k[0] for k in sums) + 1
        experts = max(k[1] for k in sums) + 1
        grid = [[0.0] * experts for _ in range(layers)]
        for (l, e), s in sums.items():
            grid[l][e] = s / counts[(l, e)]
        im = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="viridis")
        ax.set_title(p, fontsize=9)
        ax.set_ylabel("layer")
        fig.colorbar(im, ax=ax, label="mean load")
    axes[-1, 0].set_xlabel("expert")
    fig.suptitle("Expert load (mean over iterations)")
    save(fig, path)


def plot_replicas(plt, path_csv, path):
    """Replicas of each expert over iterations, one line per (layer, expert), one panel per policy."""
    rows = read_csv(path_csv, ["policy", "iteration", "layer", "expert", "replicas"])
    order = policies_in_order(rows)
    if not order:
        raise InputError(f"{path_csv}: no rows")
    fig, axes = plt.subplots(len(order), 1, figsize=(8.0, 2.5 * len(order) + 0.8), dpi=100, squeeze=False)
    for ax, p in zip(axes[:, 0], order):
        series = {}
        for r in rows:
            if r["policy"] != p:
                continue
            key = (int(num(r["layer"], path_csv, "layer")), int(num(r["expert"], path_csv, "expert")))
            s = series.setdefault(key, ([], []))
            s[0].append(int(num(r["iteration"], path_csv, "iteration")))
            s[1].append(num(r["replicas"], path_csv, "replicas"))
        for key in sorted(series):
            ax.step(series[key][0], series[key][1], where="post", linewidth=0.8, alpha=0.7)
        ax.set_title(p, fontsize=9)
        ax.set_ylabel("replicas")
        ax.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel("iteration")
    fig.suptitle("Replicas per expert over time")
    save(fig, path)


def fmt_cell(col, value):
    if value == "":
        return "–"
    try:
        v = float(value)
    except ValueError:
        return value
    if col.endswith("_ns"):
        return f"{v / 1e6:.2f}"
    if col == "drop_rate":
        return f"{100 * v:.2f}"
    if col.endswith("_bytes") or col.endswith("_bytes_per_iteration"):
        return f"{v / 1e6:.1f}"
    if col == "time_to_convergence_s":
        return f"{v:.2f}"
    if col == "ratio_to_best":
        return f"{v:.3f}"
    return value


REPORT_COLUMNS = [  # (compare.csv column, header in the report)
    ("policy", "policy"),
    ("status", "status"),
    ("iterations_to_converge", "iterations"),
    ("time_to_convergence_s", "time to convergence (s)"),
    ("ratio_to_best", "ratio to best"),
    ("mean_iteration_ns", "mean iteration (ms)"),
    ("p99_iteration_ns", "p99 iteration (ms)"),
    ("compute_ns", "compute (ms)"),
    ("a2a_ns", "all-to-all (ms)"),
    ("grad_sync_ns", "grad sync (ms)"),
    ("optimizer_ns", "optimizer (ms)"),
    ("movement_ns", "movement (ms)"),
    ("wait_ns", "wait (ms)"),
    ("drop_rate", "dropped (%)"),
    ("moved_bytes_per_iteration", "moved (MB/iter)"),
    ("peak_gpu_memory_bytes", "peak GPU memory (MB)"),
]

CAPTIONS = {
    PLOT_TTC: "Time to convergence per policy",
    PLOT_BREAKDOWN: "Iteration time breakdown per policy",
    PLOT_PROGRESS: "Convergence progress over simulated time",
    PLOT_DROP: "Drop rate over time",
    PLOT_HEATMAP: "Expert load heatmap",
    PLOT_REPLICAS: "Replicas per expert over time",
}


def write_report(results_dir, plots_dir, compare, drawn, notes):
    path = os.path.join(results_dir, "report.md")
    lines = [f"# moesim results: {os.path.basename(os.path.abspath(results_dir))}", ""]
    lines += ["## Policies", ""]
    lines.append("| " + " | ".join(h for _, h in REPORT_COLUMNS) + " |")
    lines.append("|" + "|".join("---" if c in ("policy", "status") else "---:" for c, _ in REPORT_COLUMNS) + "|")
    for r in compare:
        lines.append("| " + " | ".join(fmt_cell(c, r.get(c, "")) for c, _ in REPORT_COLUMNS) + " |")
    lines += ["", "Times are simulated; per-phase times are means per iteration on the critical GPU.", ""]
    lines += ["## Pictures", ""]
    for name in drawn:
        rel = os.path.relpath(os.path.join(plots_dir, name), results_dir).replace(os.sep, "/")
        lines += [f"### {CAPTIONS[name]}", "", f"![{CAPTIONS[name]}]({rel})", ""]
    if notes:
        lines += ["## Not drawn", ""]
        lines += [f"- {n}" for n in notes]
        lines.append("")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines).rstrip("\n") + "\n")
    os.replace(tmp, path)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description="Draw PNG pictures (and a Markdown report) of a moesim results folder.")
    ap.add_argument("results_dir", metavar="RESULTS_DIR", help="folder written by `moesim compare --out`")
    ap.add_argument("--out", metavar="DIR", help="folder for the PNG files (default RESULTS_DIR/plots)")
    ap.add_argument("--report", action="store_true", help="also write RESULTS_DIR/report.md")
    args = ap.parse_args(argv)

    results_dir = args.results_dir
    if not os.path.isdir(results_dir):
        fail(f"{results_dir}: no such directory")
    compare_csv = os.path.join(results_dir, "compare.csv")
    iterations_csv = os.path.join(results_dir, "iterations.csv")
    for p in (compare_csv, iterations_csv):
        if not os.path.isfile(p):
            fail(f"{p}: missing (write it with `moesim compare SCENARIO --out {results_dir}`)")

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
    try:
        compare = read_csv(compare_csv, ["policy", "status", "time_to_convergence_s"] + [c for c, _, _ in PHASES])
        if not compare:
            raise InputError(f"{compare_csv}: no rows")
        iters = load_iterations(iterations_csv)
        order = [r["policy"] for r in compare if r["policy"] in iters]
        order += [p for p in iters if p not in order]
        os.makedirs(plots_dir, exist_ok=True)

        drawn, notes = [], []
        plot_ttc(plt, compare, iters, os.path.join(plots_dir, PLOT_TTC), compare_csv)
        drawn.append(PLOT_TTC)
        plot_breakdown(plt, compare, os.path.join(plots_dir, PLOT_BREAKDOWN), compare_csv)
        drawn.append(PLOT_BREAKDOWN)
        plot_progress(plt, iters, order, os.path.join(plots_dir, PLOT_PROGRESS))
        drawn.append(PLOT_PROGRESS)
        plot_drop(plt, iters, order, os.path.join(plots_dir, PLOT_DROP))
        drawn.append(PLOT_DROP)

        for csv_name, plot_name, what, fn in (
            (EXPERT_LOAD_CSV, PLOT_HEATMAP, "expert load heatmap", plot_heatmap),
            (REPLICAS_CSV, PLOT_REPLICAS, "replicas per expert", plot_replicas),
        ):
            src = os.path.join(results_dir, csv_name)
            if os.path.isfile(src):
                fn(plt, src, os.path.join(plots_dir, plot_name))
                drawn.append(plot_name)
            else:
                note = f"{what}: not drawn, {csv_name} is missing (moesim does not write per-expert data yet)"
                notes.append(note)
                print(f"plot.py: note: {note}", file=sys.stderr)
    except InputError as e:
        fail(str(e))

    for name in drawn:
        print(f"wrote {os.path.join(plots_dir, name)}")
    if args.report:
        print(f"wrote {write_report(results_dir, plots_dir, compare, drawn, notes)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
