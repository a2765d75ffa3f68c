"""Shared parts of the report scripts (plot.py, plot_compare.py, plot_study.py): file names, CSV
reading, figure helpers and the report page. Not run on its own."""


import argparse
import csv
import json
import os
import re
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


# ---- styles, labels and scales that hold up to 20 policies (issue 17) --------------------------

# Ten colours (matplotlib's tab10, which a colour-blind reader can mostly tell apart) and seven
# markers. Policy i gets colour i mod 10 and marker i mod 7: 10 and 7 are coprime, so the first
# lcm(10, 7) = 70 policies all get distinct (colour, marker) pairs, and policies 10 apart (same
# colour) also differ in line style.
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
LINESTYLES = ["-", "--", ":", "-."]


def policy_style(i):
    """The (colour, marker, line style) of the i-th policy, as matplotlib keyword arguments."""
    return {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINESTYLES[(i // len(PALETTE)) % len(LINESTYLES)]}


# A ratio of largest to smallest positive value above this draws the axis on a log scale.
LOG_SCALE_RATIO = 30.0


def wants_log(values):
    """True when the positive values span more than LOG_SCALE_RATIO (about a decade and a half)."""
    pos = [v for v in values if v is not None and v > 0]
    return len(pos) >= 2 and max(pos) / min(pos) > LOG_SCALE_RATIO


def scale_axis(ax, values, label, axis="y"):
    """Labels the axis and, where wants_log(values), puts it on a log scale and says so in the
    label. Returns whether it is logarithmic."""
    log = wants_log(values)
    setter = ax.set_yscale if axis == "y" else ax.set_xscale
    (ax.set_ylabel if axis == "y" else ax.set_xlabel)(label + (", log scale" if log else ""))
    if log:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        setter("log")
        # Ticks at 1, 2 and 5 of each decade with plain numbers (2, 5, 10, 20), not powers of ten
        # alone: a range of one or two decades would otherwise get a single labelled tick.
        which = ax.yaxis if axis == "y" else ax.xaxis
        which.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
        which.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        which.set_minor_formatter(NullFormatter())
    return log


def wrap_label(text, width):
    """A label broken into lines of at most `width` characters where it can be: after a space,
    '-', '_', ':', ',', '=' or '/'; a run longer than `width` with none of them is cut."""
    parts = re.findall(r"[^ \-_:,=/]*[ \-_:,=/]?", text)
    lines, cur = [], ""
    for part in (p for p in parts if p):
        while len(part) > width:  # a run with no break: cut it
            if cur:
                lines.append(cur.rstrip())
                cur = ""
            lines.append(part[:width])
            part = part[width:]
        if len(cur) + len(part.rstrip()) > width and cur:
            lines.append(cur.rstrip())
            cur = ""
        cur += part
    if cur:
        lines.append(cur.rstrip())
    return "\n".join(lines)


def label_layout(n, labels):
    """How n category labels are drawn under a bar chart: (figure width in inches, font size in
    points, rotation in degrees, wrapped labels). The figure widens with n from 8 in up to 16 in.
    Up to 6 short labels stand level, wrapped to their share; more stand upright (90 degrees),
    wrapped at 24, and the font (9 pt down to 6 pt) is chosen so that a label's stacked lines
    take at most 90 % of its share of the axis (about 0.8 of the figure's width over n)."""
    width = min(16.0, max(8.0, 2.0 + 0.55 * n))
    share_pt = 0.8 * width / max(n, 1) * 72.0
    if n <= 6 and max((len(l) for l in labels), default=0) <= 28:
        # Level: as many characters a line as fit the label's share at 9 pt (about 5.5 pt each).
        text = [wrap_label(l, max(10, int(share_pt / 5.5))) for l in labels]
        return width, 9.0, 0, text
    text = [wrap_label(l, 24) for l in labels]
    lines = max(t.count("\n") + 1 for t in text) if text else 1
    size = max(6.0, min(9.0, 0.9 * share_pt / (1.2 * lines)))
    return width, size, 90, text


def set_category_labels(ax, labels, positions=None):
    """Category tick labels on the x axis that fit: wrapped, and upright and shrunk as
    label_layout says."""
    positions = list(range(len(labels))) if positions is None else positions
    _, size, rotation, text = label_layout(len(labels), labels)
    ax.set_xticks(positions)
    ax.set_xticklabels(text, rotation=rotation, ha="center", va="top", fontsize=size,
                       multialignment="right" if rotation else "center")


def legend_outside(ax, n, title=None):
    """A legend beside the axes, in two columns past 12 entries and smaller type past 8, its
    labels wrapped, so that 20 policies fit beside the picture."""
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, [wrap_label(l, 24) for l in labels], fontsize=8 if n <= 8 else 7,
              ncol=1 if n <= 12 else 2, loc="upper left", bbox_to_anchor=(1.01, 1.0), title=title,
              borderaxespad=0.0, frameon=False)


def bar_figure(plt, n, longest, height=4.8):
    """A figure for n bars with labels of up to `longest` characters (label_layout's width)."""
    width = label_layout(n, ["x" * longest] * n)[0]
    return new_figure(plt, width, height)


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
        if r["label"] not in seen:
            seen.append(r["label"])
    return seen


def load_iterations(path):
    cols = ["label", "iteration", "tokens_routed", "tokens_dropped", "progress", "end_ns"]
    rows = read_csv(path, cols)
    by_policy = {}
    for r in rows:
        d = by_policy.setdefault(r["label"], {"end_s": [], "progress": [], "drop": [], "iteration": []})
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
    # Through a hidden temporary beside it, renamed into place: a reader sees the old picture or
    # the new one, never a part.
    tmp = temp_path(path)
    try:
        fig.savefig(tmp, format="png", metadata={"Software": None})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    import matplotlib.pyplot as plt

    plt.close(fig)


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
    ("label", "policy"),
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


# The HTML report's style. At 1,200 px nothing is wider than the page (the Chromium test,
# tests/report/test_report_browser.py): a long word (a label, an OOM report's numbers) breaks
# anywhere, tables take the page's width with small type and wrapping headers, and pictures
# shrink to the page.
REPORT_CSS = ("*{box-sizing:border-box}"
              "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 12px;overflow-wrap:anywhere}"
              "div.table{max-width:100%;overflow-x:auto}"
              "table{border-collapse:collapse;font-size:11px}"
              "td,th{border:1px solid #ccc;padding:2px 3px;vertical-align:top}"
              "th{font-weight:600;text-align:left;overflow-wrap:normal}"
              "td{white-space:nowrap}td:first-child{white-space:normal;min-width:8em}"
              "td.r{text-align:right}"
              "figure{margin:1em 0}img{max-width:100%;height:auto}")


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
               f"<style>{REPORT_CSS}</style>",
               "</head><body>", f"<h1>{escape(self.title)}</h1>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{escape(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{escape(b[1])}</p>")
            elif b[0] == "t":
                header, rows, right = b[1], b[2], b[3]
                # In a box of its own that scrolls sideways rather than widening the page, should a
                # table still not fit (a narrower window than the 1,200 px the test checks).
                out.append("<div class=\"table\"><table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header)
                           + "</tr>")
                for r in rows:
                    out.append("<tr>" + "".join(f"<td class=\"r\">{escape(c)}</td>" if i in right
                                                else f"<td>{escape(c)}</td>" for i, c in enumerate(r)) + "</tr>")
                out.append("</table></div>")
            elif b[0] == "i":
                out.append(f"<figure><img src=\"{escape(b[2])}\" alt=\"{escape(b[1])}\">"
                           f"<figcaption>{escape(b[1])}</figcaption></figure>")
            elif b[0] == "l":
                out.append("<ul>" + "".join(f"<li>{escape(x)}</li>" for x in b[1]) + "</ul>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"


_TEMPORARIES = [0]


def temp_path(path):
    """A hidden temporary beside `path`, `.NAME.tmp-PID-N` as moesim's own writer names them
    (app/atomic_files.cpp), so that moesim accepts it in an output folder and removes it once
    its writer is gone."""
    folder, name = os.path.split(path)
    _TEMPORARIES[0] += 1
    return os.path.join(folder, f".{name}.tmp-{os.getpid()}-{_TEMPORARIES[0]}")


def write_atomic(path, text):
    tmp = temp_path(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def add_pictures(report, results_dir, plots_dir, drawn):
    for name in drawn:
        rel = os.path.relpath(os.path.join(plots_dir, name), results_dir).replace(os.sep, "/")
        report.heading(CAPTIONS[name], 3)
        report.image(CAPTIONS[name], rel)
