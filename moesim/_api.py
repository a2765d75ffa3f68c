"""Scenarios, runs and results: load a scenario from a YAML file or a dict, override keys as
`moesim run --set` does, run or compare, and read the results as the dicts summary.json and
compare.json hold (or as pandas DataFrames where pandas is installed)."""
import csv
import io
import json
import os

from ._ext import core as _core

_MAX_SEED = 1 << 62


def _overrides(values):
    """`set=` as `key.path=value` strings: a string, a list of them, or a dict (values that are not
    strings are written as JSON, which YAML reads with the same types)."""
    if values is None:
        return []
    if isinstance(values, str):
        return [values]
    if isinstance(values, dict):
        return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in values.items()]
    out = list(values)
    for v in out:
        if not isinstance(v, str):
            raise TypeError(f"set: {v!r} is not a 'key.path=value' string")
    return out


def _seed(seed):
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
        raise _core.InputError(f"seed: '{seed}' is not allowed; allowed: an integer in [0, {_MAX_SEED}]")
    return seed


class Scenario:
    """A loaded, validated scenario (app/scenario.*). It remembers where it came from, so that
    run(scenario, set=...) can load it again with more overrides."""

    def __init__(self, source, overrides, seed):
        self._source = source
        self._overrides = overrides
        self._seed = seed
        if isinstance(source, dict):
            # JSON is YAML: the scenario parser reads the dict's text, so every check and every
            # error message (key path, allowed values) is the one a YAML file gets.
            text = json.dumps(source, indent=2, default=str)
            self._core = _core.load_text(text, "<dict>", overrides, seed)
        else:
            self._core = _core.load_file(source, overrides, seed)

    def with_overrides(self, set=None, seed=None):
        """The same source loaded again with these overrides added (and this seed, if given)."""
        more = _overrides(set)
        seed = _seed(seed)
        if not more and seed is None:
            return self
        return Scenario(self._source, self._overrides + more, self._seed if seed is None else seed)

    @property
    def name(self):
        return self._core.name

    @property
    def description(self):
        return self._core.description

    @property
    def file(self):
        return self._core.file

    @property
    def seed(self):
        return self._core.seed

    @property
    def policies(self):
        """(name, label) of each policy entry."""
        return self._core.policies()

    def to_dict(self):
        """Everything with defaults filled in, as summary.json's `scenario` holds it."""
        return json.loads(self._core.to_json())

    def check(self):
        """What run() would refuse before simulating (memory, policy parameters), as InputError."""
        self._core.check()

    def __repr__(self):
        return f"<moesim.Scenario {self.name!r} from {self.file!r}: {len(self.policies)} policies>"


def load(source, set=None, seed=None):
    """A Scenario from a YAML path (str or os.PathLike), a dict of the same keys, or a Scenario
    (then `set` and `seed` are added to its own). Raises moesim.InputError on bad input."""
    if isinstance(source, Scenario):
        return source.with_overrides(set, seed)
    if isinstance(source, dict):
        return Scenario(source, _overrides(set), _seed(seed))
    if isinstance(source, (str, os.PathLike)):
        return Scenario(os.fspath(source), _overrides(set), _seed(seed))
    raise TypeError(f"load: expected a YAML path, a dict or a moesim.Scenario, got {type(source).__name__}")


def _typed_rows(text):
    """CSV rows as dicts; a column whose every value is a number becomes int or float."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        return rows

    def number(v):
        try:
            return int(v)
        except ValueError:
            return float(v)

    for col in rows[0].keys():
        if col in ("label", "policy", "status"):
            continue
        try:
            values = [number(r[col]) for r in rows]
        except (ValueError, TypeError):
            continue
        for r, v in zip(rows, values):
            r[col] = v
    return rows


def _pandas(what):
    try:
        import pandas
    except ImportError as e:
        raise ImportError(f"{what} needs pandas (Debian: python3-pandas); the plain lists work without it") from e
    return pandas


class Result(dict):
    """summary.json as a dict: "moesim_version", "scenario" (resolved, with each policy's
    parameters) and "results" (one dict per policy). compare_rows() is compare.json. The per-iteration
    and per-expert tables are read on demand: iterations(), experts(), and with pandas
    iterations_df(), experts_df(), compare_df(). str() is the command line's table."""

    def __init__(self, scenario, out):
        super().__init__(json.loads(out.summary_json()))
        self.scenario = scenario
        self._out = out
        self._cache = {}

    def _rows(self, which):
        if which not in self._cache:
            self._cache[which] = _typed_rows(getattr(self._out, which)())
        return self._cache[which]

    @property
    def results(self):
        """One dict per policy: summary.json's results."""
        return self["results"]

    def iterations(self):
        """iterations.csv as a list of dicts, one per policy and iteration."""
        return self._rows("iterations_csv")

    def experts(self):
        """experts.csv as a list of dicts (empty unless expert_stats sampled some iterations)."""
        return self._rows("experts_csv")

    def compare_rows(self):
        """compare.json: one flat dict per policy, the fields of compare.csv (docs/outputs.md)."""
        if "compare_json" not in self._cache:
            self._cache["compare_json"] = json.loads(self._out.compare_json())
        return self._cache["compare_json"]

    def iterations_df(self):
        return _pandas("iterations_df()").DataFrame(self.iterations())

    def experts_df(self):
        return _pandas("experts_df()").DataFrame(self.experts())

    def compare_df(self):
        return _pandas("compare_df()").DataFrame(self.compare_rows())

    def timeline(self):
        """The Chrome / Perfetto trace events of the iterations named in timeline_iterations."""
        return json.loads(self._out.timeline_json())

    def write(self, directory):
        """Writes the files `moesim run` / `moesim compare` writes (summary.json, iterations.csv,
        compare.csv, compare.json, experts.csv) into `directory`."""
        self._out.write(os.fspath(directory))

    def table(self):
        return self._out.summary_table()

    def __str__(self):
        return self.table()

    def __repr__(self):
        labels = ", ".join(r["label"] for r in self["results"])
        return f"<moesim.Result {self['scenario'].get('name')!r}: {labels}>"


def _run(scenario, comparison, policies, set, seed, jobs, convergence_band, expert_stats, timeline_iterations):
    s = load(scenario, set, seed)
    core = s._core
    if policies is not None:
        if not isinstance(policies, str):
            policies = ",".join(policies)
        core = core.with_policies(policies)
    if expert_stats == "auto":
        every, cap = 1, _core.auto_expert_stats_samples(core)
    elif isinstance(expert_stats, int) and not isinstance(expert_stats, bool):
        every, cap = expert_stats, 0
    else:
        raise _core.InputError(f"expert_stats: '{expert_stats}' is not 'auto' or a non-negative integer")
    out = _core.run(core, comparison, int(jobs), bool(convergence_band), every, cap, list(timeline_iterations))
    return Result(s, out)


def run(scenario, *, set=None, seed=None, jobs=1, convergence_band=False, expert_stats="auto",
        timeline_iterations=()):
    """Runs every policy of the scenario, as `moesim run` does. `scenario`: a YAML path, a dict or
    a Scenario; `set`: overrides ("key.path=value" strings or a dict); `seed`: replaces the
    scenario's. Returns a Result (summary.json as a dict)."""
    return _run(scenario, False, None, set, seed, jobs, convergence_band, expert_stats, timeline_iterations)


def compare(scenario, *, policies=None, set=None, seed=None, jobs=1, convergence_band=False,
            expert_stats="auto", timeline_iterations=()):
    """Compares policies, as `moesim compare` does: the scenario's, or `policies` in the syntax of
    --policies ("static,flexmoe:interval=10" or a list of such entries). Python policies (see
    register_policy) are named like the C++ ones. Returns a Result; result["results"] is
    compare.json."""
    return _run(scenario, True, policies, set, seed, jobs, convergence_band, expert_stats, timeline_iterations)


def policies():
    """(name, description) of every registered policy: the built-in ones, then Python ones."""
    return _core.policies()
