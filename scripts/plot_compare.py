"""The pictures and the report tables of a `moesim compare --out` folder; scripts/plot.py and
plot_study.py call draw_compare, compare_table and band_section. Not run on its own."""

from plot_common import *  # noqa: F401,F403 (file names, CSV and figure helpers, Report)


def plot_ttc(plt, compare, iters, path, csv_path):
    labels = [r["label"] for r in compare]
    fig, ax = bar_figure(plt, len(labels), max(len(l) for l in labels))
    xs = list(range(len(labels)))
    heights = {}  # x -> (bar height in s, converged)
    for x, r in zip(xs, compare):
        if r["status"] == "converged" and r["time_to_convergence_s"] != "":
            heights[x] = (num(r["time_to_convergence_s"], csv_path, "time_to_convergence_s"), True)
        else:
            # Runs that did not converge: a hatched bar up to the simulated time they ran (a lower bound).
            ran = iters.get(r["label"], {}).get("end_s", [])
            heights[x] = (ran[-1] if ran else 0.0, False)
    log = scale_axis(ax, [h for h, _ in heights.values()], "simulated time to convergence (s)")
    small = 7 if len(labels) > 10 else 8
    for x, r in zip(xs, compare):
        v, converged = heights[x]
        if converged:
            ax.bar(x, v, color=policy_style(x)["color"])
            ax.annotate(f"{v:.1f}", (x, v), ha="center", va="bottom", fontsize=small)
            continue
        text = "OOM" if r["status"] == "oom" else "not converged"
        if v > 0:
            ax.bar(x, v, color="none", edgecolor="#c44e52", hatch="//")
            text += f"\n(> {v:.1f} s run)" if r["status"] != "oom" else f"\n(after {v:.1f} s)"
        # A bar of no height (out of memory before the first iteration) has no top, and on a log
        # axis no place at all: its note stands on the axis' floor.
        ax.annotate(text, (x, 0.01) if v <= 0 else (x, v), xycoords=("data", "axes fraction") if v <= 0 else "data",
                    ha="center", va="bottom", fontsize=small, color="#c44e52", rotation=90 if len(labels) > 10 else 0)
    set_category_labels(ax, labels, xs)
    ax.set_title("Time to convergence per policy")
    top = max((h for h, _ in heights.values()), default=0.0)
    if log:
        low = min(h for h, _ in heights.values() if h > 0)
        ax.set_ylim(low / 2, top * 3)
    else:
        ax.set_ylim(0, top * 1.25 if top > 0 else 1.0)
    save(fig, path)


def plot_breakdown(plt, compare, path, csv_path):
    labels = [r["label"] for r in compare]
    fig, ax = bar_figure(plt, len(labels), max(len(l) for l in labels))
    xs = list(range(len(labels)))
    bottoms = [0.0] * len(labels)
    for col, name, colour in PHASES:
        vals = [num(r[col], csv_path, col) / 1e6 for r in compare]
        ax.bar(xs, vals, bottom=bottoms, label=name, color=colour)
        bottoms = [b + v for b, v in zip(bottoms, vals)]
    # Stacked parts cannot share a log axis (a part's share would depend on what lies under it):
    # the axis stays linear and says so when the totals span decades.
    spread = wants_log(bottoms)
    set_category_labels(ax, labels, xs)
    ax.set_ylabel("mean time per iteration (ms)" + (", linear: totals span decades" if spread else ""))
    ax.set_title("Iteration time breakdown (critical GPU)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    save(fig, path)


def line_figure(plt, n):
    """A figure for n lines with the legend beside it: wider past 8 entries, wider again past 12
    (two legend columns)."""
    return new_figure(plt, 8.0 if n <= 8 else (10.0 if n <= 12 else 12.5), 4.8)


def plot_progress(plt, iters, order, path):
    fig, ax = line_figure(plt, len(order))
    ax.grid(True, axis="x", alpha=0.3)
    for i, p in enumerate(order):
        d = iters.get(p)
        if not d:
            continue
        ax.plot([0.0] + d["end_s"], [0.0] + d["progress"], label=p, linewidth=1.4,
                markevery=max(1, (len(d["end_s"]) + 1) // 6), markersize=4, **policy_style(i))
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="converged")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("convergence progress (fraction of the target)")
    ax.set_title("Convergence progress over simulated time")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    legend_outside(ax, len([p for p in order if p in iters]) + 1)
    save(fig, path)


def plot_drop(plt, iters, order, path):
    fig, ax = line_figure(plt, len(order))
    ax.grid(True, axis="x", alpha=0.3)
    drawn = [p for p in order if p in iters and iters[p]["end_s"]]
    for i, p in enumerate(order):
        d = iters.get(p)
        if p in drawn:
            ax.plot(d["end_s"], [100.0 * v for v in d["drop"]], label=p, linewidth=1.1,
                    markevery=max(1, len(d["end_s"]) // 6), markersize=4, **policy_style(i))
    # Drop rates of 0.01 % and 10 % on one page: log scale, where zero drops leave the line's gaps.
    means = [100.0 * sum(iters[p]["drop"]) / len(iters[p]["drop"]) for p in drawn]
    log = scale_axis(ax, means, "tokens dropped (% of routed)")
    ax.set_xlabel("simulated time (s)")
    ax.set_title("Drop rate per iteration" + (" (iterations without drops are not drawn)" if log else ""))
    ax.set_xlim(left=0)
    if not log:
        ax.set_ylim(bottom=0)
    legend_outside(ax, len(drawn))
    save(fig, path)


def load_experts(path):
    """experts.csv -> {policy: {"iterations": [...], "layers": L, "experts": E,
    "routed"/"processed"/"replicas": {(iteration, layer, expert): value}}}."""
    cols = ["label", "iteration", "layer", "expert", "tokens_routed", "tokens_processed", "replicas"]
    rows = read_csv(path, cols)
    if not rows:
        raise InputError(f"{path}: no rows")
    out = {}
    for r in rows:
        d = out.setdefault(r["label"], {"iterations": [], "layers": 0, "experts": 0,
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


def draw_compare(plt, results_dir, plots_dir, prefix=""):
    """The pictures of one `moesim compare --out` folder; returns (compare rows, drawn, notes)."""
    compare_csv = os.path.join(results_dir, "compare.csv")
    iterations_csv = os.path.join(results_dir, "iterations.csv")
    for p in (compare_csv, iterations_csv):
        if not os.path.isfile(p):
            raise InputError(f"{p}: missing (write it with `moesim compare SCENARIO --out {results_dir}`)")
    compare = read_csv(compare_csv, ["label", "status", "time_to_convergence_s"] + [c for c, _, _ in PHASES])
    if not compare:
        raise InputError(f"{compare_csv}: no rows")
    iters = load_iterations(iterations_csv)
    # Every entry keeps its compare.csv position as its style (colour, marker) in every picture,
    # also when it has no iterations to draw (out of memory at the first).
    order = [r["label"] for r in compare]
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
                 right=[i for i, (c, _) in enumerate(REPORT_COLUMNS) if c not in ("label", "status")])
    report.para("Times are simulated; per-phase times are means per iteration on the critical GPU.")


def load_summary(results_dir):
    """summary.json of a compare folder, or None where there is none (an older folder)."""
    path = os.path.join(results_dir, "summary.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read: {e}")


def scenario_section(report, scenario):
    """The scenario's name, file and description (summary.json's `scenario`)."""
    if not scenario:
        return
    name, description = scenario.get("name", ""), scenario.get("description", "")
    line = f"Scenario: {name}" + (f" ({scenario['file']})" if scenario.get("file") else "")
    report.para(line + (f": {description}" if description else ". It has no description."))


def oom_reasons(results):
    """One line per result that ran out of memory: its label, the iteration and the reason
    (summary.json's `oom_report`)."""
    out = []
    for r in results:
        if r.get("status") == "oom" or r.get("oom"):
            at = r.get("oom_iteration")
            out.append(f"{r['label']}" + (f" (iteration {at})" if at is not None else "") + ": "
                       + (r.get("oom_report") or "no reason recorded"))
    return out


def oom_section(report, results, heading="Out of memory"):
    lines = oom_reasons(results)
    if lines:
        report.heading(heading, 3)
        report.bullets(lines)


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
