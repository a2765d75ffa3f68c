"""The pictures and the report section of a `moesim sweep --out` folder (study.csv); scripts/plot.py
calls draw_study. Not run on its own."""

from plot_common import *  # noqa: F401,F403 (file names, CSV and figure helpers, Report)
from plot_compare import compare_table, draw_compare, load_summary, oom_reasons, oom_section


# ---- sweeps: study.csv -------------------------------------------------------------------------

def load_study(results_dir):
    path = os.path.join(results_dir, "study.csv")
    rows = read_csv(path, ["point", "seed", "label", "policy", "status", "time_to_convergence_s",
                           "iterations_to_converge", "mean_iteration_ns", "drop_rate", "run_id"]
                    + [c for c, _, _ in PHASES])
    if not rows:
        raise InputError(f"{path}: no rows")
    meta_path = os.path.join(results_dir, "study.json")
    grid_keys, params, name = [], [], os.path.basename(os.path.abspath(results_dir))
    description = ""
    if os.path.isfile(meta_path):
        try:
            with open(meta_path) as f:
                meta = json.load(f)
        except (OSError, ValueError) as e:
            raise InputError(f"{meta_path}: cannot read: {e}")
        grid_keys = list(meta.get("grid_keys", []))
        params = list(meta.get("param_columns", []))
        name = meta.get("study", name)
        description = meta.get("description", "") or ""
    header = list(rows[0].keys())
    params = [p if p in header else "param." + p for p in params]
    return path, rows, grid_keys, params, name, description


def study_groups(path, rows, grid_keys):
    """Rows grouped by (point, policy) in first-seen order, each with its seeds' figures."""
    groups = {}
    for r in rows:
        key = (r["point"], r["label"])
        g = groups.setdefault(key, {"rows": [], "label": r["label"] + (
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
    # Labels (policy @ grid point) wrapped at 34 characters; each row is as tall as its lines.
    labels = [wrap_label(g["label"], 34) for g in order]
    lines = max((t.count("\n") + 1 for t in labels), default=1)
    fig, ax = plt.subplots(figsize=(9.0, (0.12 + 0.14 * lines) * len(order) + 1.6), dpi=100)
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
            # At the axis' left edge, which a log axis has at no time of 0.
            ax.annotate(text, (0.0, y), xycoords=("axes fraction", "data"), xytext=(3, 0),
                        textcoords="offset points", va="center", fontsize=7, color="#c44e52")
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    lows = [g["ttc"][1] for g in order if g["ttc"]]
    if scale_axis(ax, lows + [top], "simulated time to convergence (s)", axis="x"):
        ax.set_xlim(min(lows) / 2, top * 3)
    else:
        ax.set_xlim(0, top * 1.25)
    ax.set_title("Time to convergence (mean over seeds; whiskers: fastest to slowest seed)", fontsize=10)
    save(fig, path)


def plot_study_params(plt, path_csv, rows, grid_keys, params, path):
    """Per policy name, mean time to convergence over the one or two keys/parameters it varies."""
    panels = []
    for name in dict.fromkeys(r["policy"] for r in rows):
        mine = [r for r in rows if r["policy"] == name]
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
    names = list(dict.fromkeys(g["rows"][0]["policy"] for g in pts))
    for i, name in enumerate(names):
        mine = [g for g in pts if g["rows"][0]["policy"] == name]
        style = policy_style(i)
        ax.scatter([g["iter_ms"] for g in mine], [g["iterations"] for g in mine], s=22, label=name,
                   color=style["color"], marker=style["marker"])
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
    legend_outside(ax, len(names))
    save(fig, path)


def study_oom_section(report, results_dir, rows, grid_keys):
    """Why each run that ran out of memory did: the reason is in its run file (runs/<id>.json)."""
    lines, cache = [], {}
    for r in rows:
        if r["status"] != "oom":
            continue
        run_file = os.path.join(results_dir, "runs", r["run_id"] + ".json")
        if run_file not in cache:
            try:
                with open(run_file, encoding="utf-8") as f:
                    cache[run_file] = json.load(f).get("results", [])
            except (OSError, ValueError):
                cache[run_file] = []
        found = oom_reasons([x for x in cache[run_file] if x.get("label") == r["label"]])
        where = ", ".join(f"{k}={r[k]}" for k in grid_keys)
        prefix = f"seed {r['seed']}" + (f", {where}" if where else "") + ": "
        lines += [prefix + x for x in found] or [prefix + f"{r['label']}: reason not found ({run_file} unreadable)"]
    if lines:
        report.heading("Out of memory", 3)
        report.bullets(lines)


def draw_study(plt, results_dir, plots_dir, run_id, report):
    path, rows, grid_keys, params, name, description = load_study(results_dir)
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
    report.para(f"Study: {name}: {description}" if description else f"Study: {name}. It has no description.")
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
    study_oom_section(report, results_dir, rows, grid_keys)
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
        oom_section(report, (load_summary(os.path.join(runs_dir, chosen)) or {}).get("results", []))
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
