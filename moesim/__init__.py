"""moesim from Python: which expert-placement policy trains this MoE model fastest on this cluster?

    import moesim
    result = moesim.compare("scenarios/quickstart.yaml", set={"run.max_iterations": 200})
    print(result)                      # the command line's table
    result["results"][0]["mean_iteration_ns"]   # compare.json's fields

Policies can be written in Python (moesim.Policy, moesim.register_policy). See docs/python.md.
"""
from ._ext import core as _core
from ._api import Result, Scenario, compare, load, policies, run
from ._policy import Decision, IterationCounts, LayerDispatch, Placement, Policy, register_policy

InputError = _core.InputError
PolicyError = _core.PolicyError
PolicyContext = _core.PolicyContext
PolicyParams = _core.PolicyParams
Endpoint = _core.Endpoint
Transfer = _core.Transfer
Movement = _core.Movement
Collective = _core.Collective
CollectiveOp = _core.CollectiveOp
SyncPlan = _core.SyncPlan
default_sync_plan = _core.default_sync_plan
placement_moves = _core.placement_moves
deepspeed_capacity = _core.deepspeed_capacity

__all__ = [
    "Collective", "CollectiveOp", "Decision", "Endpoint", "InputError", "IterationCounts", "LayerDispatch",
    "Movement", "Placement", "Policy", "PolicyContext", "PolicyError", "PolicyParams", "Result", "Scenario",
    "SyncPlan", "Transfer", "compare", "default_sync_plan", "deepspeed_capacity", "load", "placement_moves",
    "policies", "register_policy", "run",
]
