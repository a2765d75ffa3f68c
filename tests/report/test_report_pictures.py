"""The report's pictures and pages scale to 20 policies (issue 17 item 6): distinct styles, labels
that fit, log axes where a range spans decades, the scenario's description and each OOM reason on
the page."""
import os

import matplotlib.pyplot as plt
import pytest

import plot_common as pc
from plot_compare import plot_ttc

LONG = "static-cf16-with-a-deliberately-long-label-to-wrap"


# ---- styles ----------------------------------------------------------------------------------

def test_twenty_policies_get_distinct_colour_marker_pairs():
    styles = [pc.policy_style(i) for i in range(20)]
    pairs = {(s["color"], s["marker"]) for s in styles}
    assert len(pairs) == 20
    # Neighbours (adjacent in the legend) never share a colour, nor a marker.
    for a, b in zip(styles, styles[1:]):
        assert a["color"] != b["color"] and a["marker"] != b["marker"]
    # Ten colours: policies 0 and 10 share one and differ in marker (0 vs 10 mod 7 = 3) and line.
    assert styles[0]["color"] == styles[10]["color"]
    assert (styles[0]["marker"], styles[10]["marker"]) == ("o", "D")
    assert (styles[0]["linestyle"], styles[10]["linestyle"]) == ("-", "--")


def test_styles_stay_distinct_to_lcm_of_colours_and_markers():
    # 10 colours x 7 markers (coprime): the first 70 pairs are distinct, the 71st repeats the first.
    pairs = [(pc.policy_style(i)["color"], pc.policy_style(i)["marker"]) for i in range(71)]
    assert len(set(pairs[:70])) == 70
    assert pairs[70] == pairs[0]


# ---- log scale -------------------------------------------------------------------------------

@pytest.mark.parametrize("values, log", [
    ([1.0, 30.0], False),           # ratio 30: not above the threshold
    ([1.0, 30.5], True),            # just above
    ([65.6, 196.4], False),         # many_policies.yaml's times to convergence: a factor of 3
    ([0.0, 0.5, 10.0], False),      # zeros are ignored: 10 / 0.5 = 20
    ([0.0, 0.05, 75.1], True),      # drop rates in %: 0.05 to 75 spans three decades
    ([5.0], False),                 # one value has no range
    ([None, 0.0, 0.0], False),
])
def test_log_scale_decision(values, log):
    assert pc.wants_log(values) is log


def test_scale_axis_sets_log_and_says_so():
    fig, ax = plt.subplots()
    assert pc.scale_axis(ax, [0.1, 100.0], "simulated time (s)") is True
    assert ax.get_yscale() == "log"
    assert ax.get_ylabel() == "simulated time (s), log scale"
    assert pc.scale_axis(ax, [2.0, 3.0], "time (s)", axis="x") is False
    assert ax.get_xscale() == "linear" and ax.get_xlabel() == "time (s)"
    plt.close(fig)


# ---- labels ----------------------------------------------------------------------------------

def test_wrap_label_breaks_after_separators():
    assert pc.wrap_label(LONG, 18) == "static-cf16-with-\na-deliberately-\nlong-label-to-wrap"
    assert pc.wrap_label("static:capacity_factor=1.25", 24) == "static:capacity_factor=\n1.25"
    assert pc.wrap_label("eplb", 18) == "eplb"
    # No separator: cut at the width, nothing lost.
    assert pc.wrap_label("a" * 30, 12) == "a" * 12 + "\n" + "a" * 12 + "\n" + "a" * 6


@pytest.mark.parametrize("label", [LONG, "static:min_capacity=100000000", "x" * 50, "a b c d e f g h i j k l"])
def test_wrapped_lines_fit_and_lose_nothing(label):
    lines = pc.wrap_label(label, 18).split("\n")
    assert all(len(line) <= 18 for line in lines)
    assert "".join(lines).replace(" ", "") == label.replace(" ", "")


def test_label_layout_for_twenty():
    labels = [f"policy-{i}" for i in range(19)] + [LONG]
    width, size, rotation, text = pc.label_layout(20, labels)
    assert width == 13.0  # 2 + 0.55 x 20
    assert rotation == 90
    # 0.8 x 13 in / 20 = 0.52 in = 37.44 pt a label; the long one has 3 lines of 24 characters at most:
    # 0.9 x 37.44 / (1.2 x 3) = 9.36 pt, capped at 9.
    assert text[-1] == "static-cf16-with-a-\ndeliberately-long-label-\nto-wrap" and size == 9.0
    # 30 of them: the width stops at 16 in, 0.8 x 16 / 30 in = 30.72 pt a label, so the font
    # shrinks to 0.9 x 30.72 / (1.2 x 3) = 7.68 pt.
    width, size, rotation, _ = pc.label_layout(30, [LONG] * 30)
    assert (width, rotation) == (16.0, 90) and size == pytest.approx(7.68)
    # 60: 3.84 pt would be unreadable; 6 pt is the floor.
    assert pc.label_layout(60, [LONG] * 60)[1] == 6.0
    few_width, few_size, few_rotation, _ = pc.label_layout(4, ["static", "symi", "oracle", "eplb"])
    assert (few_width, few_size, few_rotation) == (8.0, 9.0, 0)
    # 5 level labels share 0.8 x 8 in / 5 = 92.16 pt each: int(92.16 / 5.5) = 16 characters a line.
    _, _, rotation, text = pc.label_layout(5, ["static-cf1", "static-dropless", "static-capacity-factor-2"])
    assert rotation == 0 and text == ["static-cf1", "static-dropless", "static-capacity-\nfactor-2"]


def _boxes(fig, ax):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text()], fig.bbox


def test_twenty_tick_labels_do_not_overlap_and_stay_in_the_figure(tmp_path, monkeypatch):
    """The time-to-convergence picture of 20 entries, one long label and one OOM: drawn as the
    report draws it, no two x tick labels overlap and none leaves the figure."""
    labels = [f"static-cf{i}" for i in range(18)] + [LONG, "static-out-of-memory"]
    rows = []
    for i, label in enumerate(labels):
        oom = label.endswith("memory")
        rows.append({"label": label, "status": "oom" if oom else "converged",
                     "time_to_convergence_s": "" if oom else str(60.0 + 7 * i)})
    captured = {}

    def keep(fig, path):  # the figure as save() lays it out, kept open instead of written
        fig.tight_layout()
        captured["fig"] = fig

    import plot_compare
    monkeypatch.setattr(plot_compare, "save", keep)
    plot_ttc(plt, rows, {}, str(tmp_path / "ttc.png"), "compare.csv")
    fig = captured["fig"]
    ax = fig.axes[0]
    boxes, page = _boxes(fig, ax)
    assert len(boxes) == 20
    for a, b in zip(boxes, boxes[1:]):
        assert a.x1 <= b.x0 + 0.5, (a, b)  # left to right, no overlap
    for b in boxes:
        assert page.x0 <= b.x0 and b.x1 <= page.x1 and page.y0 <= b.y0, b
    assert ax.get_yscale() == "linear"  # 60 to 193 s: a factor of 3
    plt.close(fig)


def test_old_layout_would_overlap():
    """The check above can fail: the layout the report had before (8 in wide, 20 degrees, no
    wrapping) makes 20 of these labels overlap."""
    fig, ax = plt.subplots(figsize=(8.0, 4.5), dpi=100)
    labels = [f"static-cf{i}" for i in range(18)] + [LONG, "static-out-of-memory"]
    ax.bar(range(20), [1.0] * 20)
    ax.set_xticks(range(20))
    ax.set_xticklabels(labels, rotation=20, ha="right")
    boxes, _ = _boxes(fig, ax)
    assert any(a.x1 > b.x0 + 0.5 for a, b in zip(boxes, boxes[1:]))
    plt.close(fig)


# ---- the report pages of a 20-policy compare ---------------------------------------------------

def test_report_pages_carry_description_and_oom_reason(many_run):
    out, summary = many_run
    results = summary["results"]
    assert len(results) == 20
    oom = [r for r in results if r["status"] == "oom"]
    assert [r["label"] for r in oom] == ["static-out-of-memory"]
    reason = oom[0]["oom_report"]
    assert "dispatch buffers" in reason and "80.00 GB" in reason
    description = summary["scenario"]["description"]
    assert description.startswith("Twenty placement variants")
    with open(os.path.join(out, "report.md"), encoding="utf-8") as f:
        md = f.read()
    assert f"Scenario: many-policies ({summary['scenario']['file']}): {description}" in md
    assert f"- static-out-of-memory (iteration {oom[0]['oom_iteration']}): {reason}\n" in md
    for r in results:
        assert f"| {r['label']} |" in md
    with open(os.path.join(out, "report.html"), encoding="utf-8") as f:
        html = f.read()
    from html import escape
    assert escape(description) in html
    assert f"<li>static-out-of-memory (iteration {oom[0]['oom_iteration']}): {escape(reason)}</li>" in html
    assert html.count("<div class=\"table\"><table>") == 1
    for name in (pc.PLOT_TTC, pc.PLOT_BREAKDOWN, pc.PLOT_PROGRESS, pc.PLOT_DROP):
        path = os.path.join(out, "plots", name)
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{name}" in html


def test_report_is_deterministic(many_run, tmp_path):
    out, _ = many_run
    import subprocess
    import sys
    from conftest import SCRIPTS
    again = tmp_path / "plots"
    subprocess.run([sys.executable, os.path.join(SCRIPTS, "plot.py"), out, "--out", str(again)], check=True,
                   capture_output=True)
    for name in (pc.PLOT_TTC, pc.PLOT_PROGRESS, pc.PLOT_DROP):
        with open(os.path.join(out, "plots", name), "rb") as a, open(again / name, "rb") as b:
            assert a.read() == b.read(), name


def test_no_oom_section_without_oom():
    from plot_compare import oom_reasons
    assert oom_reasons([{"label": "a", "status": "converged", "oom": False, "oom_report": None}]) == []
    assert oom_reasons([{"label": "b", "status": "oom", "oom": True, "oom_iteration": 3, "oom_report": "why"}]) \
        == ["b (iteration 3): why"]


def test_study_report_carries_description_and_each_oom_run(tmp_path):
    """A sweep whose grid has an out-of-memory variant: the study's description and one line per
    (point, seed) that ran out of memory, with the reason from its run file."""
    from conftest import ROOT, SCRIPTS, moesim_binary
    import subprocess
    import sys
    binary = moesim_binary()
    if binary is None:
        pytest.fail("no moesim CLI: set MOESIM_BINARY (the ctest does) or build build/moesim")
    study = tmp_path / "study.yaml"
    study.write_text("name: tiny-oom\n"
                     "description: two points, one variant out of memory\n"
                     f"base: {ROOT}/scenarios/quickstart.yaml\n"
                     "set: {run.max_iterations: 5}\n"
                     "grid: {trace.skew: [0.5, 1.0]}\n"
                     "policies: [oracle]\n"
                     "policy_grid: {static: {min_capacity: [2, 100000000]}}\n"
                     "seeds: [1]\n")
    out = tmp_path / "out"
    subprocess.run([binary, "sweep", str(study), "--out", str(out), "--jobs", "1", "--quiet"], check=True)
    subprocess.run([sys.executable, os.path.join(SCRIPTS, "plot.py"), str(out), "--report"], check=True,
                   capture_output=True)
    md = (out / "report.md").read_text()
    assert "Study: tiny-oom: two points, one variant out of memory\n" in md
    oom_lines = [line for line in md.splitlines() if line.startswith("- seed 1, trace.skew=")]
    # 2 points x 1 seed x the one out-of-memory variant.
    assert [line.split(":")[0] for line in oom_lines] == ["- seed 1, trace.skew=0.5", "- seed 1, trace.skew=1.0"]
    for line in oom_lines:
        assert "static:min_capacity=100000000 (iteration 0): OOM on GPU 0" in line
        assert "dispatch buffers" in line


def test_pages_and_pictures_are_written_through_hidden_temporaries(tmp_path, monkeypatch):
    """write_atomic and save go through `.NAME.tmp-PID-N` and leave nothing else behind; a
    failed write removes its temporary and keeps the old file."""
    target = tmp_path / "report.md"
    target.write_text("old\n")
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        real_replace(src, dst)

    monkeypatch.setattr(pc.os, "replace", spy)
    pc.write_atomic(str(target), "new\n")
    assert target.read_text() == "new\n"
    assert re_fullmatch(r"\.report\.md\.tmp-%d-\d+" % os.getpid(), seen[0])
    fig, ax = plt.subplots()
    pc.save(fig, str(tmp_path / "a.png"))
    assert re_fullmatch(r"\.a\.png\.tmp-%d-\d+" % os.getpid(), seen[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "report.md"]

    def broken(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pc.os, "replace", broken)
    with pytest.raises(OSError):
        pc.write_atomic(str(target), "newer\n")
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "report.md"]


def re_fullmatch(pattern, text):
    import re
    return re.fullmatch(pattern, text) is not None


def test_ttc_goes_log_when_times_span_decades(tmp_path, monkeypatch):
    """1.5 s to 120 s (a factor of 80) and one OOM: the time-to-convergence axis is logarithmic,
    says so, and its range holds every bar (half the smallest to three times the largest)."""
    rows = [{"label": "fast", "status": "converged", "time_to_convergence_s": "1.5"},
            {"label": "slow", "status": "converged", "time_to_convergence_s": "120"},
            {"label": "oom", "status": "oom", "time_to_convergence_s": ""}]
    captured = {}
    import plot_compare
    monkeypatch.setattr(plot_compare, "save", lambda fig, path: captured.setdefault("fig", fig))
    plot_ttc(plt, rows, {}, str(tmp_path / "ttc.png"), "compare.csv")
    ax = captured["fig"].axes[0]
    assert ax.get_yscale() == "log"
    assert ax.get_ylabel() == "simulated time to convergence (s), log scale"
    assert ax.get_ylim() == pytest.approx((0.75, 360.0))
    notes = [t.get_text() for t in ax.texts]
    assert notes == ["1.5", "120.0", "OOM"]
    plt.close(captured["fig"])
