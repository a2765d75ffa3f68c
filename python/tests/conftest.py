"""Shared set-up of the Python tests: the package from this source tree, the CMake build folder
(MOESIM_BUILD_DIR, which the ctest sets; else build/), and small scenarios."""
import copy
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
BUILD = os.path.abspath(os.environ.get("MOESIM_BUILD_DIR", os.path.join(ROOT, "build")))
os.environ.setdefault("MOESIM_BUILD_DIR", BUILD)

# 4 single-GPU nodes, 2 MoE layers of 16 experts, 8 slots a GPU: 2 replicas of each expert, so
# static placement has 2 expert-parallel groups of 2 GPUs. A skewed trace so that capacity drops.
SMALL = {
    "name": "py-small",
    "seed": 5,
    "cluster": {"preset": "swiftmoe-cloud", "nodes": 4},
    "model": {"preset": "gpt-small-moe", "layers": 2},
    "placement": {"slots_per_gpu": 8},
    "training": {"optimizer_offload": True},
    "trace": {"kind": "synthetic", "skew": 1.2, "drift_sigma": 0.1},
    "run": {"max_iterations": 12, "stop_at_convergence": False},
    "policies": [
        {"name": "static", "label": "static-cf1", "capacity_factor": 1.0, "min_capacity": 2},
        {"name": "static", "label": "static-dropless", "drop_tokens": False},
        "symi",
    ],
}


@pytest.fixture
def small():
    return copy.deepcopy(SMALL)


@pytest.fixture(scope="session")
def moesim_binary():
    path = os.path.join(BUILD, "moesim")
    if not os.path.isfile(path):
        pytest.fail(f"{path} not built (set MOESIM_BUILD_DIR to the CMake build folder)")
    return path
