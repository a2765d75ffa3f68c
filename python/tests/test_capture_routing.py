"""scripts/capture_routing.py on a tiny random MoE model (skipped where torch is not installed):
the counts it writes are the routers' top-k choices, and moesim replays the file."""
import csv
import os
import sys

import pytest

from conftest import ROOT

torch = pytest.importorskip("torch")
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from capture_routing import RoutingCapture, merge  # noqa: E402

import moesim  # noqa: E402

EXPERTS, TOP_K, DIM, TOKENS, SOURCES = 16, 1, 8, 48, 2


class MoeLayer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.gate = torch.nn.Linear(DIM, EXPERTS)
        self.experts = torch.nn.ModuleList(torch.nn.Linear(DIM, DIM) for _ in range(EXPERTS))

    def forward(self, x):
        choice = torch.topk(self.gate(x), TOP_K, dim=-1).indices[:, 0]
        return torch.stack([self.experts[int(e)](t) for t, e in zip(x, choice)])


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(MoeLayer(), torch.nn.Linear(DIM, DIM), MoeLayer())

    def forward(self, x):
        return self.layers(x)


def expected_counts(model, x):
    # The top-k of each gate, applied to what reaches it, split in SOURCES contiguous chunks.
    out = {}
    h = x
    moe = 0
    for layer in model.layers:
        if isinstance(layer, MoeLayer):
            idx = torch.topk(layer.gate(h), TOP_K, dim=-1).indices
            for src, chunk in enumerate(torch.tensor_split(idx, SOURCES)):
                for e, n in enumerate(torch.bincount(chunk.reshape(-1), minlength=EXPERTS).tolist()):
                    if n:
                        out[(moe, src, e)] = n
            moe += 1
        h = layer(h)
    return out


def test_capture_writes_the_routers_choices_and_moesim_replays_them(tmp_path):
    torch.manual_seed(0)
    model = Tiny()
    path = str(tmp_path / "trace.csv")
    cap = RoutingCapture(model, num_experts=EXPERTS, top_k=TOP_K, out=path, router_pattern=r"\.gate$",
                         sources=SOURCES)
    batches = [torch.randn(TOKENS, DIM) for _ in range(3)]
    want = []
    with torch.no_grad():
        for x in batches:
            cap.pause()  # the reference's own gate calls are not routing
            want.append(expected_counts(model, x))
            cap.resume()
            model(x)
            cap.step()
    assert not os.path.exists(path)  # published only on close
    cap.close()
    with open(path) as f:
        rows = list(csv.DictReader(f))
    got = [{} for _ in batches]
    for r in rows:
        got[int(r["iteration"])][(int(r["layer"]), int(r["src_gpu"]), int(r["expert"]))] = int(r["tokens"])
    assert got == want
    # Each source routed its TOKENS / SOURCES tokens, top-k each, in every MoE layer.
    for it in got:
        for layer in range(2):
            for src in range(SOURCES):
                assert sum(n for (l, s, _), n in it.items() if (l, s) == (layer, src)) == TOKENS // SOURCES * TOP_K

    scenario = {
        "name": "captured", "cluster": {"preset": "swiftmoe-cloud", "nodes": SOURCES},
        "model": {"preset": "gpt-small-moe", "layers": 2}, "placement": {"slots_per_gpu": 8},
        "training": {"optimizer_offload": True},
        "trace": {"kind": "csv", "path": path, "on_end": "stop"},
        "run": {"max_iterations": 3, "stop_at_convergence": False}, "policies": ["static"],
    }
    r = moesim.run(scenario)
    assert [x["tokens_routed"] for x in r.iterations()] == [2 * TOKENS * TOP_K] * 3


def test_merge_joins_ranks_by_iteration(tmp_path):
    model = Tiny()
    parts = []
    for rank in range(2):
        p = str(tmp_path / f"t.rank{rank}.csv")
        cap = RoutingCapture(routers=[model.layers[0].gate], num_experts=EXPERTS, top_k=TOP_K, out=p, rank=rank)
        with torch.no_grad():
            for _ in range(2):
                model(torch.randn(4, DIM))
                cap.step()
        parts.append(cap.close())
    merge(str(tmp_path / "t.csv"), parts)
    with open(tmp_path / "t.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == sorted(int(r["iteration"]) for r in rows)
    assert {int(r["src_gpu"]) for r in rows} == {0, 1}
    assert sum(int(r["tokens"]) for r in rows) == 2 * 2 * 4 * TOP_K
