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

With --report it also writes RESULTS_DIR/report.md (or report.html): the tables and the pictures,
embedded by relative path. `moesim report RESULTS_DIR` runs this script. Needs Python 3 and
matplotlib (Debian: python3-matplotlib); nothing else.
Exit status: 0 success, 2 bad input (missing folder or file, unreadable CSV).
"""

import argparse
import csv
import json
import os
import sys

PHASES = [  # (column in compare.csv / iterations.csv, legend label, colour)
    ("compute_ns", "compute", "#4c72b0"),
    ("a2a_ns", "all-to-all", "#dd8452"),
    ("grad_sync_ns", "gradient sync", "#55a868"),
    ("optimizer_ns", "optimizer", "#8172b3"),
    ("movement_ns", "movement", "#c44e52"),
    ("wait_ns", "wait", "#937860"),
    ("pipeline_bubble_ns", "pipeline bubble", "#da8bc3"),
    ("tp_comm_ns", "tensor-parallel comm", "#8c8c8c"),
]

# Output names, in the order they appear in the report.
PLOT_TTC = "time_to_convergence.png"
PLOT_BREAKDOWN = "iteration_breakdown.png"
PLOT_PROGRESS = "convergence_progress.png"
PLOT_DROP = "drop_rate.png"
PLOT_HEATMAP = "expert_load_heatmap.png"
PLOT_REPLICAS = "replicas_per_expert.png"

PLOT_STUDY_TTC = "study_time_to_convergence.png"
PLOT_STUDY_PARAMS = "study_parameters.png"
PLOT_STUDY_BREAKDOWN = "study_breakdown.png"
PLOT_STUDY_TRADEOFF = "study_tradeoff.png"

# Per-expert samples written by moesim run/compare (--expert-stats) and sweep --details.
EXPERTS_CSV = "experts.csv"


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


def load_experts(path):
    """experts.csv -> {policy: {"iterations": [...], "layers": L, "experts": E,
    "routed"/"processed"/"replicas": {(iteration, layer, expert): value}}}."""
    cols = ["policy", "iteration", "layer", "expert", "tokens_routed", "tokens_processed", "replicas"]
    rows = read_csv(path, cols)
    if not rows:
        raise InputError(f"{path}: no rows")
    out = {}
    for r in rows:
        d = out.setdefault(r["policy"], {"iterations": [], "layers": 0, "experts": 0,
                                         "routed": {}, "processed": {}, "replicas": {}})
        it = int(num(r["iteration"], path, "iteration"))
        layer = int(num(r["layer"], path, "layer"))
        expert = int(num(r["expert"], path, "expert"))
        if not d["iterations"] or d["iterations"][-1] != it:
            d["iterations"].append(it)
        d["layers"] = max(d["layers"], layer + 1)
        d["experts"] = max(d["experts"], expert + 1)
        key = (it, layer, expert)
        d["routed"][key] = num(r["tokens_routed"], path, "tokens_routed")
        d["processed"][key] = num(r["tokens_processed"], path, "tokens_processed")
        d["replicas"][key] = num(r["replicas"], path, "replicas")
    return out


def hottest_layer(d):
    """The layer whose busiest expert takes the largest share of the layer's assignments."""
    best, best_share = 0, -1.0
    for layer in range(d["layers"]):
        for it in d["iterations"]:
            row = [d["routed"].get((it, layer, e), 0.0) for e in range(d["experts"])]
            total = sum(row)
            if total > 0 and max(row) / total > best_share:
                best, best_share = layer, max(row) / total
    return best


def plot_heatmap(plt, experts, path):
    """Routed load per expert: layer x expert (mean share over the sampled iterations) and, for the
    hottest layer, expert x iteration. The trace is the same for every policy: the first is drawn."""
    first = next(iter(experts))
    d = experts[first]
    L, E, its = d["layers"], d["experts"], d["iterations"]
    mean = [[0.0] * E for _ in range(L)]
    for layer in range(L):
        for it in its:
            row = [d["routed"].get((it, layer, e), 0.0) for e in range(E)]
            total = sum(row)
            for e in range(E):
                mean[layer][e] += (row[e] / total if total > 0 else 0.0) / len(its)
    hot = hottest_layer(d)
    over_time = [[0.0] * len(its) for _ in range(E)]
    for j, it in enumerate(its):
        row = [d["routed"].get((it, hot, e), 0.0) for e in range(E)]
        total = sum(row)
        for e in range(E):
            over_time[e][j] = row[e] / total if total > 0 else 0.0
    fig, axes = plt.subplots(1, 2, figsize=(12.0, 4.8), dpi=100)
    im = axes[0].imshow(mean, aspect="auto", interpolation="nearest", cmap="viridis", origin="lower")
    axes[0].set_xlabel("expert")
    axes[0].set_ylabel("MoE layer")
    axes[0].set_title(f"Share of each layer's assignments (mean of {len(its)} sampled iterations)", fontsize=9)
    fig.colorbar(im, ax=axes[0], label="share of the layer's assignments")
    im = axes[1].imshow(over_time, aspect="auto", interpolation="nearest", cmap="viridis", origin="lower",
                        extent=(its[0] - 0.5, its[-1] + 0.5, -0.5, E - 0.5))
    axes[1].set_xlabel("iteration")
    axes[1].set_ylabel("expert")
    axes[1].yaxis.get_major_locator().set_params(integer=True)
    axes[1].set_title(f"Layer {hot} (the most skewed) over iterations", fontsize=9)
    fig.colorbar(im, ax=axes[1], label="share of the layer's assignments")
    fig.suptitle("Expert load (tokens routed by the gate)")
    save(fig, path)


def plot_replicas(plt, experts, path):
    """Replicas of each expert of the hottest layer over iterations, one panel per policy whose
    replicas change; returns the policies drawn (static placements have nothing to show)."""
    hot = hottest_layer(experts[next(iter(experts))])
    drawn = []
    for p, d in experts.items():
        values = {v for (it, layer, e), v in d["replicas"].items() if layer == hot}
        if len(values) > 1:
            drawn.append(p)
    if not drawn:
        return []
    fig, axes = plt.subplots(len(drawn), 1, figsize=(9.0, 2.6 * len(drawn) + 0.8), dpi=100, squeeze=False)
    for ax, p in zip(axes[:, 0], drawn):
        d = experts[p]
        its, E = d["iterations"], d["experts"]
        grid = [[d["replicas"].get((it, hot, e), 0.0) for it in its] for e in range(E)]
        im = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="magma", origin="lower",
                       extent=(its[0] - 0.5, its[-1] + 0.5, -0.5, E - 0.5))
        ax.set_title(p, fontsize=9)
        ax.set_ylabel("expert")
        ax.yaxis.get_major_locator().set_params(integer=True)
        fig.colorbar(im, ax=ax, label="replicas")
    axes[-1, 0].set_xlabel("iteration")
    fig.suptitle(f"Replicas per expert over time, layer {hot}")
    save(fig, path)
    return drawn


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
    ("pipeline_bubble_ns", "pipeline bubble (ms)"),
    ("tp_comm_ns", "tensor-parallel comm (ms)"),
    ("exposed_comm_ns", "exposed comm (ms)"),
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
    PLOT_STUDY_TTC: "Time to convergence per point and policy (mean over seeds, bars from min to max)",
    PLOT_STUDY_PARAMS: "Time to convergence over the varied keys and parameters",
    PLOT_STUDY_BREAKDOWN: "Iteration time breakdown per point and policy (mean over seeds)",
    PLOT_STUDY_TRADEOFF: "Faster iterations or fewer of them: iteration time against iterations to converge",
}


class Report:
    """A report page as blocks, rendered to Markdown or HTML."""

    def __init__(self, title):
        self.title = title
        self.blocks = []

    def heading(self, text, level=2):
        self.blocks.append(("h", level, text))

    def para(self, text):
        self.blocks.append(("p", text))

    def table(self, header, rows, right=()):
        self.blocks.append(("t", header, rows, set(right)))

    def image(self, caption, rel):
        self.blocks.append(("i", caption, rel))

    def bullets(self, items):
        self.blocks.append(("l", list(items)))

    def markdown(self):
        out = [f"# {self.title}", ""]
        for b in self.blocks:
            if b[0] == "h":
                out += ["#" * b[1] + " " + b[2], ""]
            elif b[0] == "p":
                out += [b[1], ""]
            elif b[0] == "t":
                header, rows, right = b[1], b[2], b[3]
                out.append("| " + " | ".join(header) + " |")
                out.append("|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|")
                out += ["| " + " | ".join(r) + " |" for r in rows]
                out.append("")
            elif b[0] == "i":
                out += [f"![{b[1]}]({b[2]})", ""]
            elif b[0] == "l":
                out += [f"- {x}" for x in b[1]] + [""]
        return "\n".join(out).rstrip("\n") + "\n"

    def html(self):
        from html import escape
        out = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\">", f"<title>{escape(self.title)}</title>",
               "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
               "td,th{border:1px solid #ccc;padding:2px 6px}td.r{text-align:right}img{max-width:100%}</style>",
               "</head><body>", f"<h1>{escape(self.title)}</h1>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{escape(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{escape(b[1])}</p>")
            elif b[0] == "t":
                header, rows, right = b[1], b[2], b[3]
                out.append("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>")
                for r in rows:
                    out.append("<tr>" + "".join(f"<td class=\"r\">{escape(c)}</td>" if i in right
                                                else f"<td>{escape(c)}</td>" for i, c in enumerate(r)) + "</tr>")
                out.append("</table>")
            elif b[0] == "i":
                out.append(f"<figure><img src=\"{escape(b[2])}\" alt=\"{escape(b[1])}\">"
                           f"<figcaption>{escape(b[1])}</figcaption></figure>")
            elif b[0] == "l":
                out.append("<ul>" + "".join(f"<li>{escape(x)}</li>" for x in b[1]) + "</ul>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def add_pictures(report, results_dir, plots_dir, drawn):
    for name in drawn:
        rel = os.path.relpath(os.path.join(plots_dir, name), results_dir).replace(os.sep, "/")
        report.heading(CAPTIONS[name], 3)
        report.image(CAPTIONS[name], rel)


def draw_compare(plt, results_dir, plots_dir, prefix=""):
    """The pictures of one `moesim compare --out` folder; returns (compare rows, drawn, notes)."""
    compare_csv = os.path.join(results_dir, "compare.csv")
    iterations_csv = os.path.join(results_dir, "iterations.csv")
    for p in (compare_csv, iterations_csv):
        if not os.path.isfile(p):
            raise InputError(f"{p}: missing (write it with `moesim compare SCENARIO --out {results_dir}`)")
    compare = read_csv(compare_csv, ["policy", "status", "time_to_convergence_s"] + [c for c, _, _ in PHASES])
    if not compare:
        raise InputError(f"{compare_csv}: no rows")
    iters = load_iterations(iterations_csv)
    order = [r["policy"] for r in compare if r["policy"] in iters]
    order += [p for p in iters if p not in order]
    os.makedirs(plots_dir, exist_ok=True)
    drawn, notes = [], []

    def out(name):
        return os.path.join(plots_dir, prefix + name)

    plot_ttc(plt, compare, iters, out(PLOT_TTC), compare_csv)
    plot_breakdown(plt, compare, out(PLOT_BREAKDOWN), compare_csv)
    plot_progress(plt, iters, order, out(PLOT_PROGRESS))
    plot_drop(plt, iters, order, out(PLOT_DROP))
    drawn += [PLOT_TTC, PLOT_BREAKDOWN, PLOT_PROGRESS, PLOT_DROP]
    experts_csv = os.path.join(results_dir, EXPERTS_CSV)
    if os.path.isfile(experts_csv):
        experts = load_experts(experts_csv)
        plot_heatmap(plt, experts, out(PLOT_HEATMAP))
        drawn.append(PLOT_HEATMAP)
        if plot_replicas(plt, experts, out(PLOT_REPLICAS)):
            drawn.append(PLOT_REPLICAS)
        else:
            notes.append("replicas per expert: not drawn, no policy changed any expert's number of replicas")
    else:
        notes.append(f"expert load heatmap and replicas per expert: not drawn, {EXPERTS_CSV} is missing "
                     "(moesim run/compare write it unless --expert-stats 0; sweep with --details)")
    return compare, [prefix + n for n in drawn], notes


def compare_table(report, compare):
    report.table([h for _, h in REPORT_COLUMNS],
                 [[fmt_cell(c, r.get(c, "")) for c, _ in REPORT_COLUMNS] for r in compare],
                 right=[i for i, (c, _) in enumerate(REPORT_COLUMNS) if c not in ("policy", "status")])
    report.para("Times are simulated; per-phase times are means per iteration on the critical GPU.")


def band_section(report, results_dir):
    """The convergence band of `compare --convergence-band` (summary.json), when the run has one."""
    path = os.path.join(results_dir, "summary.json")
    if not os.path.isfile(path):
        return
    try:
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read: {e}")
    band = summary.get("convergence_band")
    if not band:
        return
    forms = band["forms"]
    report.heading("Convergence band")
    rows = []
    for r in summary["results"]:
        b = r.get("convergence_band") or {}
        cells = [r["label"]]
        for form in forms:
            e = b.get("forms", {}).get(form, {})
            t = e.get("time_to_convergence_s")
            cells.append("–" if t is None else f"{t:.2f} (#{e.get('rank')})")
        rows.append(cells)
    report.table(["policy"] + [f"{f}: s (rank)" for f in forms], rows, right=list(range(1, len(forms) + 1)))
    if band["rank_stable"]:
        report.para("The ranking is the same under every convergence form.")
    else:
        report.para("The ranking changes with the convergence form: "
                    + "; ".join(f"{f}: {' < '.join(band['rankings'][f])}" for f in forms) + ".")


# ---- sweeps: study.csv -------------------------------------------------------------------------

def load_study(results_dir):
    path = os.path.join(results_dir, "study.csv")
    rows = read_csv(path, ["point", "seed", "policy", "name", "status", "time_to_convergence_s",
                           "iterations_to_converge", "mean_iteration_ns", "drop_rate", "run_id"]
                    + [c for c, _, _ in PHASES])
    if not rows:
        raise InputError(f"{path}: no rows")
    meta_path = os.path.join(results_dir, "study.json")
    grid_keys, params, name = [], [], os.path.basename(os.path.abspath(results_dir))
    if os.path.isfile(meta_path):
        try:
            with open(meta_path) as f:
                meta = json.load(f)
        except (OSError, ValueError) as e:
            raise InputError(f"{meta_path}: cannot read: {e}")
        grid_keys = list(meta.get("grid_keys", []))
        params = list(meta.get("param_columns", []))
        name = meta.get("study", name)
    header = list(rows[0].keys())
    params = [p if p in header else "param." + p for p in params]
    return path, rows, grid_keys, params, name


def study_groups(path, rows, grid_keys):
    """Rows grouped by (point, policy) in first-seen order, each with its seeds' figures."""
    groups = {}
    for r in rows:
        key = (r["point"], r["policy"])
        g = groups.setdefault(key, {"rows": [], "label": r["policy"] + (
            " @ " + ", ".join(f"{k}={r[k]}" for k in grid_keys) if grid_keys else "")})
        g["rows"].append(r)
    for g in groups.values():
        conv = [r for r in g["rows"] if r["status"] == "converged" and r["time_to_convergence_s"] != ""]
        ttc = [num(r["time_to_convergence_s"], path, "time_to_convergence_s") for r in conv]
        its = [num(r["iterations_to_converge"], path, "iterations_to_converge") for r in conv]
        g["seeds"] = len(g["rows"])
        g["converged"] = len(conv)
        g["oom"] = sum(1 for r in g["rows"] if r["status"] == "oom")
        g["ttc"] = (sum(ttc) / len(ttc), min(ttc), max(ttc)) if ttc else None
        g["iterations"] = sum(its) / len(its) if its else None
        g["iter_ms"] = sum(num(r["mean_iteration_ns"], path, "mean_iteration_ns") for r in g["rows"]) / 1e6 / len(g["rows"])
        g["drop"] = sum(num(r["drop_rate"], path, "drop_rate") for r in g["rows"]) / len(g["rows"])
        g["phases_ms"] = [sum(num(r[c], path, c) for r in g["rows"]) / 1e6 / len(g["rows"]) for c, _, _ in PHASES]
    return list(groups.values())


def plot_study_ttc(plt, groups, path):
    order = sorted(groups, key=lambda g: (g["ttc"] is None, g["ttc"][0] if g["ttc"] else 0.0))
    fig, ax = plt.subplots(figsize=(9.0, 0.32 * len(order) + 1.6), dpi=100)
    ax.grid(True, axis="x", alpha=0.3)
    ys = list(range(len(order)))
    top = max((g["ttc"][2] for g in order if g["ttc"]), default=1.0)
    for y, g in zip(ys, order):
        if g["ttc"]:
            mean, lo, hi = g["ttc"]
            ax.barh(y, mean, color="#4c72b0", xerr=[[mean - lo], [hi - mean]], capsize=2)
            text = f"{mean:.1f}" + ("" if g["converged"] == g["seeds"] else f"  ({g['converged']} of {g['seeds']} seeds)")
            ax.annotate(text, (hi, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
        else:
            text = "OOM" if g["oom"] else "not converged"
            ax.annotate(text, (0, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7,
                        color="#c44e52")
    ax.set_yticks(ys)
    ax.set_yticklabels([g["label"] for g in order], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.25)
    ax.set_xlabel("simulated time to convergence (s)")
    ax.set_title("Time to convergence (mean over seeds; whiskers: fastest to slowest seed)", fontsize=10)
    save(fig, path)


def plot_study_params(plt, path_csv, rows, grid_keys, params, path):
    """Per policy name, mean time to convergence over the one or two keys/parameters it varies."""
    panels = []
    for name in dict.fromkeys(r["name"] for r in rows):
        mine = [r for r in rows if r["name"] == name]
        dims = [k for k in grid_keys + params if len({r.get(k, "") for r in mine}) > 1]
        if 1 <= len(dims) <= 2:
            panels.append((name, mine, dims))
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.0), dpi=100, squeeze=False)
    for ax, (name, mine, dims) in zip(axes[0], panels):
        def mean_ttc(sel):
            v = [num(r["time_to_convergence_s"], path_csv, "time_to_convergence_s") for r in sel
                 if r["status"] == "converged" and r["time_to_convergence_s"] != ""]
            return sum(v) / len(v) if v else float("nan")

        def ordered(values):
            try:
                return sorted(values, key=float)
            except ValueError:
                return sorted(values)

        xs = ordered({r[dims[-1]] for r in mine})
        if len(dims) == 1:
            ys = [mean_ttc([r for r in mine if r[dims[0]] == x]) for x in xs]
            ax.plot(range(len(xs)), ys, marker="o")
            ax.set_xticks(range(len(xs)))
            ax.set_xticklabels(xs)
            ax.set_xlabel(dims[0])
            ax.set_ylabel("mean time to convergence (s)")
            ax.grid(True, alpha=0.3)
        else:
            ys = ordered({r[dims[0]] for r in mine})
            grid = [[mean_ttc([r for r in mine if r[dims[0]] == y and r[dims[1]] == x]) for x in xs] for y in ys]
            im = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="viridis_r", origin="lower")
            for i, row in enumerate(grid):
                for j, v in enumerate(row):
                    ax.annotate("-" if v != v else f"{v:.1f}", (j, i), ha="center", va="center", fontsize=8,
                                color="white")
            ax.set_xticks(range(len(xs)))
            ax.set_xticklabels(xs)
            ax.set_yticks(range(len(ys)))
            ax.set_yticklabels(ys)
            ax.set_xlabel(dims[1])
            ax.set_ylabel(dims[0])
            fig.colorbar(im, ax=ax, label="mean time to convergence (s)")
        ax.set_title(name, fontsize=10)
    fig.suptitle("Time to convergence over what the study varies (mean over seeds)")
    save(fig, path)
    return True


def plot_study_breakdown(plt, groups, path):
    fig, ax = plt.subplots(figsize=(9.0, 0.32 * len(groups) + 1.6), dpi=100)
    ax.grid(True, axis="x", alpha=0.3)
    ys = list(range(len(groups)))
    lefts = [0.0] * len(groups)
    for i, (_, name, colour) in enumerate(PHASES):
        vals = [g["phases_ms"][i] for g in groups]
        ax.barh(ys, vals, left=lefts, label=name, color=colour)
        lefts = [a + b for a, b in zip(lefts, vals)]
    ax.set_yticks(ys)
    ax.set_yticklabels([g["label"] for g in groups], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("mean time per iteration (ms)")
    ax.set_title("Iteration time breakdown (critical GPU, mean over seeds)")
    ax.legend(fontsize=7, loc="lower right")
    save(fig, path)


def plot_study_tradeoff(plt, groups, path):
    """Each (point, policy) at (mean iteration time, iterations to converge), coloured by policy
    name; dashed curves join the points of equal time to convergence (iterations x time)."""
    fig, ax = new_figure(plt, 8.0, 5.0)
    ax.grid(True, alpha=0.3)
    pts = [g for g in groups if g["iterations"] is not None]
    names = list(dict.fromkeys(g["rows"][0]["name"] for g in pts))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(names):
        mine = [g for g in pts if g["rows"][0]["name"] == name]
        ax.scatter([g["iter_ms"] for g in mine], [g["iterations"] for g in mine], s=22, label=name,
                   color=colours[i % len(colours)], marker="osD^v<>"[i % 7])
    if pts:
        xs = [g["iter_ms"] for g in pts]
        lo, hi = min(xs) * 0.9, max(xs) * 1.1
        ttcs = sorted(g["iter_ms"] * g["iterations"] / 1e3 for g in pts)
        levels = sorted({ttcs[0], ttcs[len(ttcs) // 2], ttcs[-1]})
        for level in levels:
            grid = [lo + (hi - lo) * k / 50 for k in range(51)]
            ax.plot(grid, [level * 1e3 / x for x in grid], linestyle="--", color="grey", linewidth=0.8)
            ax.annotate(f"{level:.0f} s", (hi, level * 1e3 / hi), fontsize=7, color="grey", ha="right", va="bottom")
        ys = [g["iterations"] for g in pts]
        ax.set_xlim(lo, hi)
        ax.set_ylim(min(ys) * 0.9, max(ys) * 1.1)
    ax.set_xlabel("mean iteration time (ms)")
    ax.set_ylabel("iterations to converge (mean over converged seeds)")
    ax.set_title("Faster iterations or fewer of them (dashed: equal time to convergence)")
    ax.legend(fontsize=8)
    save(fig, path)


def draw_study(plt, results_dir, plots_dir, run_id, report):
    path, rows, grid_keys, params, name = load_study(results_dir)
    groups = study_groups(path, rows, grid_keys)
    os.makedirs(plots_dir, exist_ok=True)
    drawn, notes = [], []
    plot_study_ttc(plt, groups, os.path.join(plots_dir, PLOT_STUDY_TTC))
    drawn.append(PLOT_STUDY_TTC)
    if plot_study_params(plt, path, rows, grid_keys, params, os.path.join(plots_dir, PLOT_STUDY_PARAMS)):
        drawn.append(PLOT_STUDY_PARAMS)
    else:
        notes.append("parameter map: not drawn, no policy varies one or two keys or parameters")
    plot_study_breakdown(plt, groups, os.path.join(plots_dir, PLOT_STUDY_BREAKDOWN))
    plot_study_tradeoff(plt, groups, os.path.join(plots_dir, PLOT_STUDY_TRADEOFF))
    drawn += [PLOT_STUDY_BREAKDOWN, PLOT_STUDY_TRADEOFF]

    report.title = f"moesim study: {name}"
    seeds = sorted({r["seed"] for r in rows}, key=lambda x: float(x) if x.replace(".", "", 1).isdigit() else 0)
    report.para(f"{len(rows)} rows from study.csv: {len(groups)} (point, policy) pairs over seeds {', '.join(seeds)}. "
                "Times are simulated; means are over the seeds that converged.")
    report.heading("Results")
    table = []
    for g in sorted(groups, key=lambda g: (g["ttc"] is None, g["ttc"][0] if g["ttc"] else 0.0)):
        ttc = g["ttc"]
        table.append([g["label"], f"{g['converged']}/{g['seeds']}",
                      f"{ttc[0]:.2f}" if ttc else "–", f"{ttc[1]:.2f}" if ttc else "–", f"{ttc[2]:.2f}" if ttc else "–",
                      f"{g['iterations']:.0f}" if g["iterations"] is not None else "–",
                      f"{g['iter_ms']:.2f}", f"{100 * g['drop']:.2f}"])
    report.table(["point and policy", "converged seeds", "mean time to convergence (s)", "fastest seed (s)",
                  "slowest seed (s)", "iterations", "mean iteration (ms)", "dropped (%)"], table,
                 right=range(1, 8))
    report.heading("Pictures")
    add_pictures(report, results_dir, plots_dir, drawn)

    # One run in detail, when sweep --details wrote its folder.
    runs_dir = os.path.join(results_dir, "runs")
    candidates = [run_id] if run_id else list(dict.fromkeys(r["run_id"] for r in rows))
    chosen = next((c for c in candidates if os.path.isfile(os.path.join(runs_dir, c, "compare.csv"))), None)
    if run_id and chosen is None:
        raise InputError(f"--run {run_id}: {os.path.join(runs_dir, run_id, 'compare.csv')} is missing "
                         "(run the sweep with --details)")
    if chosen:
        compare, run_drawn, run_notes = draw_compare(plt, os.path.join(runs_dir, chosen), plots_dir, chosen + "_")
        r0 = next(r for r in rows if r["run_id"] == chosen)
        where = ", ".join(f"{k}={r0[k]}" for k in grid_keys)
        report.heading(f"One run in detail: {chosen} (seed {r0['seed']}{', ' + where if where else ''})")
        compare_table(report, compare)
        for name in run_drawn:
            rel = os.path.relpath(os.path.join(plots_dir, name), results_dir).replace(os.sep, "/")
            caption = CAPTIONS[name[len(chosen) + 1:]]
            report.heading(caption, 3)
            report.image(caption, rel)
        notes += run_notes
        drawn += run_drawn
    else:
        notes.append("per-run pictures (progress, drop rate, expert load, replicas): not drawn, no run folder "
                     "(run the sweep with --details)")
    return drawn, notes


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
            report.heading("Policies")
            compare_table(report, compare)
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
