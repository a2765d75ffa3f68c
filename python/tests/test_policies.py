"""Policies written in Python: registration, use beside the C++ ones, the twin of policies/static.cpp,
and the errors a misbehaving policy gets."""
import pytest

import moesim
import static_twin

static_twin.register()


def strip_names(rows):
    return [{k: v for k, v in r.items() if k != "label"} for r in rows]


def iterations_of(result, label):
    return [r for r in result.iterations() if r["label"] == label]


@pytest.mark.parametrize("params", [
    {"capacity_factor": 1.0, "min_capacity": 2},  # drops
    {"capacity_factor": 1.25},
    {"drop_tokens": False},                       # dropless, padded to the group's largest count
])
def test_python_twin_equals_the_cpp_static_policy(small, params):
    small["policies"] = [dict(name="static", label="cpp", **params), dict(name="py-static", label="py", **params)]
    r = moesim.compare(small)
    cpp, py = r["results"]
    assert cpp["iterations_run"] == py["iterations_run"] == 12
    # Every figure, iteration by iteration: times, drops, bytes, memory.
    a, b = iterations_of(r, "cpp"), iterations_of(r, "py")
    assert len(a) == 12
    assert strip_names(a) == strip_names(b)
    skip = {"label", "policy"}
    assert {k: v for k, v in cpp.items() if k not in skip} == {k: v for k, v in py.items() if k not in skip}
    assert r["scenario"]["policies"][0]["parameters"] == r["scenario"]["policies"][1]["parameters"]
    assert py["policy"] == "py-static"
    if params.get("capacity_factor") == 1.0:
        assert cpp["drop_rate"] > 0  # the capacity rule decided something
    if params.get("drop_tokens") is False:
        assert all(x["tokens_dropped"] == 0 for x in b)


@pytest.mark.parametrize("params", [{"capacity_factor": 1.0, "min_capacity": 2}, {"drop_tokens": False}])
def test_python_twin_with_spare_slots(small, params):
    # 4 GPUs x 5 slots for 16 experts: 4 spare slots hold extra replicas of experts 0-3.
    small["placement"]["slots_per_gpu"] = 5
    small["policies"] = [dict(name="static", label="cpp", **params), dict(name="py-static", label="py", **params)]
    r = moesim.compare(small)
    cpp, py = r["results"]
    assert strip_names(iterations_of(r, "cpp")) == strip_names(iterations_of(r, "py"))
    assert r["scenario"]["policies"][0]["parameters"] == r["scenario"]["policies"][1]["parameters"]
    assert r["scenario"]["policies"][0]["parameters"]["experts_with_extra_replica"] == 4
    assert cpp["max_filled_slots"] == py["max_filled_slots"] == 20


def test_python_twin_under_pipeline_stages(small):
    # Two pipeline stages: one Python instance per stage, each with its stage's MoE layers.
    small["model"]["layers"] = 4
    small["parallelism"] = {"pipeline": 2}
    small["placement"]["slots_per_gpu"] = 16
    small["policies"] = [{"name": "static", "label": "cpp", "min_capacity": 2},
                         {"name": "py-static", "label": "py", "min_capacity": 2}]
    small["run"]["max_iterations"] = 5
    r = moesim.compare(small)
    assert strip_names(iterations_of(r, "cpp")) == strip_names(iterations_of(r, "py"))
    assert len(iterations_of(r, "py")) == 5


def test_python_policy_in_compare_beside_cpp_ones_with_threads(small):
    small["policies"] = ["static", "py-static", "symi", {"name": "py-static", "label": "py-cf2", "capacity_factor": 2}]
    one = moesim.compare(small)
    many = moesim.compare(small, jobs=4)  # Python policies on worker threads, taking the GIL per call
    assert [x["label"] for x in one["results"]] == ["static", "py-static", "symi", "py-cf2"]
    assert dict(one) == dict(many)
    assert one.iterations() == many.iterations()
    assert "py-static" in dict(moesim.policies())
    # By name in --policies syntax too.
    r = moesim.compare(small, policies="py-static:capacity_factor=2")
    assert r["results"][0]["mean_iteration_ns"] == one["results"][3]["mean_iteration_ns"]


def test_registry_keeps_the_builtin_order_then_python_ones():
    names = [n for n, _ in moesim.policies()]
    assert names[:9] == ["static", "eplb", "symi", "fastermoe", "oracle", "flexmoe", "smartmoe", "lazarus",
                         "prophet"]
    assert names.index("py-static") >= 9


def test_registration_errors():
    with pytest.raises(moesim.InputError, match="already registered"):
        moesim.register_policy("py-static", static_twin.PyStatic, "again")
    with pytest.raises(moesim.InputError, match="built-in"):
        moesim.register_policy("static", static_twin.PyStatic)
    with pytest.raises(moesim.InputError, match="not allowed"):
        moesim.register_policy("a,b", static_twin.PyStatic)
    with pytest.raises(TypeError):
        moesim.register_policy("not-a-policy", dict)


def test_unknown_parameter_of_a_python_policy_is_an_input_error(small):
    small["policies"] = [{"name": "py-static", "capacity_factr": 2}]
    with pytest.raises(moesim.InputError, match="capacity_factr"):
        moesim.compare(small)
    small["policies"] = [{"name": "py-static", "capacity_factor": -1}]
    with pytest.raises(moesim.InputError, match=r"policies\[0\].*capacity_factor"):
        moesim.compare(small)


class OneExpertEverywhere(static_twin.PyStatic):
    def initial_placement(self):
        pl = super().initial_placement()
        pl.expert_of_slot[0][0] = 99  # no such expert
        return pl


class ShortDispatch(static_twin.PyStatic):
    def dispatch(self, layer, counts, pl, out):
        super().dispatch(layer, counts, pl, out)
        out.accepted = out.accepted[:-1]


class Raises(static_twin.PyStatic):
    def after_iteration(self, iteration, counts, current):
        if iteration == 2:
            raise KeyError("from the policy")
        return None


class Moves(static_twin.PyStatic):
    # Swaps the experts of slots 0 (GPU 0) and 8 (GPU 1) of layer 0 after iteration 1: a decision
    # whose movements the C++ helper works out.
    def after_iteration(self, iteration, counts, current):
        if iteration != 1:
            return None
        nxt = current.copy()
        layer = nxt.expert_of_slot[0]
        layer[0], layer[8] = layer[8], layer[0]
        return moesim.Decision(nxt, moesim.placement_moves(self.ctx, current, nxt, True, True))


for name, cls in [("py-bad-placement", OneExpertEverywhere), ("py-short-dispatch", ShortDispatch),
                  ("py-raises", Raises), ("py-moves", Moves)]:
    if name not in dict(moesim.policies()):
        moesim.register_policy(name, cls)


def test_a_policy_answer_the_simulator_cannot_use_is_a_policy_error(small):
    small["policies"] = ["py-bad-placement"]
    with pytest.raises(moesim.PolicyError, match="initial_placement: expert 99"):
        moesim.compare(small)
    small["policies"] = ["py-short-dispatch"]
    with pytest.raises(moesim.PolicyError, match="out.accepted has 127 entries; expected 128"):
        moesim.compare(small)


def test_an_exception_in_a_policy_reaches_the_caller_as_itself(small):
    small["policies"] = ["static", "py-raises"]
    for jobs in (1, 2):
        with pytest.raises(KeyError, match="from the policy"):
            moesim.compare(small, jobs=jobs)


def test_a_python_decision_moves_weights(small):
    small["policies"] = [{"name": "py-static", "label": "still"}, {"name": "py-moves", "label": "moves"}]
    r = moesim.compare(small)
    still, moves = iterations_of(r, "still"), iterations_of(r, "moves")
    assert all(x["moved_bytes"] == 0 for x in still)
    # The swap after iteration 1 moves two experts' weights and optimizer state, charged in
    # iteration 2.
    assert [x["moved_bytes"] > 0 for x in moves][:4] == [False, False, True, False]
    assert moves[1]["iteration_ns"] == still[1]["iteration_ns"]
