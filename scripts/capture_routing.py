#!/usr/bin/env python3
"""Records the routing of a PyTorch Mixture-of-Experts model as a moesim trace.

Forward hooks on the model's routers count, per training iteration, MoE layer and source rank, the
(token, expert) assignments of the top-k choice, and write them in moesim's native CSV trace
format (docs/trace-format.md: `iteration,layer,src_gpu,expert,tokens`). Needs only torch.

    from capture_routing import RoutingCapture
    cap = RoutingCapture(model, num_experts=8, top_k=2, out="trace.csv", router_pattern=r"\\.gate$")
    for batch in loader:
        loss = model(batch).sum(); loss.backward(); optimizer.step()
        cap.step()                  # one iteration ends: its counts are written
    cap.close()                     # the file appears (written to a temporary name, then renamed)

- **Routers.** `routers=[module, ...]` in MoE-layer order, or `router_pattern`, a regular
  expression on `model.named_modules()` names (in model order). A router's output is either its
  logits (a tensor whose last dimension is the number of experts; the top `top_k` are taken, as
  Mixtral's and Switch's gates are followed by a top-k), or `expert_indices(output)` gives the
  selected experts (an integer tensor whose last dimension is top_k) for routers that choose
  themselves.
- **Sources.** Under torch.distributed each rank records its own tokens as source GPU = its rank
  into its own file (`out` with `.rank<r>` before the suffix); `python3 capture_routing.py merge
  trace.csv trace.rank*.csv` joins them. In one process, `sources=N` splits each batch's tokens
  (in order, `torch.tensor_split`) into N source GPUs, as N data-parallel ranks would see them.
- **Iterations.** Every forward pass until `step()` is one iteration (gradient-accumulation
  micro-batches add up). Recomputed forwards (activation checkpointing) would count twice: call
  `pause()` / `resume()` around them, or hook routers outside checkpointed regions.
"""
import argparse
import csv
import os
import re
import sys


def _rank_path(path, rank):
    root, ext = os.path.splitext(path)
    return f"{root}.rank{rank}{ext or '.csv'}"


class RoutingCapture:
    HEADER = "iteration,layer,src_gpu,expert,tokens\n"

    def __init__(self, model=None, *, num_experts, top_k, out, routers=None, router_pattern=None,
                 expert_indices=None, sources=1, rank=None):
        import torch

        self._torch = torch
        if routers is None:
            if model is None or router_pattern is None:
                raise ValueError("give routers=[...] or model and router_pattern")
            rx = re.compile(router_pattern)
            routers = [m for name, m in model.named_modules() if rx.search(name)]
        if not routers:
            raise ValueError(f"no router matched {router_pattern!r}")
        if num_experts < 1 or top_k < 1 or top_k > num_experts or sources < 1:
            raise ValueError(f"need 1 <= top_k ({top_k}) <= num_experts ({num_experts}) and sources ({sources}) >= 1")
        self.num_experts, self.top_k, self.sources = num_experts, top_k, sources
        self._indices = expert_indices
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if rank is None:
            rank = torch.distributed.get_rank() if distributed else 0
        if distributed and sources != 1:
            raise ValueError("sources splits one process's batch; under torch.distributed each rank is one source")
        self.rank = rank
        self.path = _rank_path(out, rank) if distributed else out
        self._tmp = self.path + ".part"
        self._file = open(self._tmp, "w", newline="")
        self._file.write(self.HEADER)
        self.iteration = 0
        self._paused = False
        # [layer][source] -> counts per expert (a CPU int64 tensor), summed until step().
        self._counts = [[torch.zeros(num_experts, dtype=torch.int64) for _ in range(sources)] for _ in routers]
        self._handles = [r.register_forward_hook(self._hook(layer)) for layer, r in enumerate(routers)]

    def _selected(self, output):
        if self._indices is not None:
            idx = self._indices(output)
        else:
            logits = output[0] if isinstance(output, (tuple, list)) else output
            if logits.shape[-1] != self.num_experts:
                raise ValueError(f"router output's last dimension is {logits.shape[-1]}, not num_experts "
                                 f"{self.num_experts}; pass expert_indices= for routers that choose themselves")
            idx = self._torch.topk(logits.detach(), self.top_k, dim=-1).indices
        if idx.shape[-1] != self.top_k:
            raise ValueError(f"expert indices have {idx.shape[-1]} choices a token, not top_k {self.top_k}")
        return idx.reshape(-1, self.top_k)  # [tokens, k], tokens in batch order

    def _hook(self, layer):
        def hook(module, inputs, output):
            if self._paused:
                return
            idx = self._selected(output)
            chunks = self._torch.tensor_split(idx, self.sources, dim=0)
            for src, chunk in enumerate(chunks):
                counts = self._torch.bincount(chunk.reshape(-1).to("cpu", self._torch.int64),
                                              minlength=self.num_experts)
                if counts.numel() > self.num_experts:
                    raise ValueError(f"expert index {int(chunk.max())} >= num_experts {self.num_experts}")
                self._counts[layer][src] += counts
        return hook

    def pause(self):
        self._paused = True

    def resume(self):
        self._paused = False

    def step(self):
        """Ends the iteration: writes its rows (nonzero counts; a zero row if nothing was routed,
        since every iteration of a trace has at least one row) and starts the next."""
        src_base = self.rank if self.sources == 1 else 0
        w = self._file.write
        wrote = False
        for layer, per_src in enumerate(self._counts):
            for src, counts in enumerate(per_src):
                for e, n in enumerate(counts.tolist()):
                    if n:
                        w(f"{self.iteration},{layer},{src_base + src},{e},{n}\n")
                        wrote = True
                counts.zero_()
        if not wrote:
            w(f"{self.iteration},0,{src_base},0,0\n")
        self.iteration += 1

    def close(self):
        """Removes the hooks and publishes the file (only iterations ended by step() are in it)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        if self._file is not None:
            self._file.close()
            self._file = None
            if self.iteration == 0:
                os.remove(self._tmp)
                raise ValueError("no iteration was recorded (call step() after each one)")
            os.replace(self._tmp, self.path)
        return self.path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.close()
        else:  # an error mid-run: no half-written trace
            for h in self._handles:
                h.remove()
            if self._file is not None:
                self._file.close()
                os.remove(self._tmp)
                self._file = None
        return False


def merge(out, parts):
    """Joins per-rank files into one trace: rows grouped by iteration, each rank's rows as written.
    Every part must hold the same iterations."""
    rows = {}
    iterations = None
    for part in parts:
        with open(part, newline="") as f:
            reader = csv.reader(line for line in f if line.strip() and not line.lstrip().startswith("#"))
            header = next(reader)
            if ",".join(h.strip() for h in header) + "\n" != RoutingCapture.HEADER:
                raise ValueError(f"{part}:1: not a moesim CSV trace header")
            seen = set()
            for row in reader:
                it = int(row[0])
                seen.add(it)
                rows.setdefault(it, []).append(",".join(row))
        if iterations is None:
            iterations = seen
        elif seen != iterations:
            raise ValueError(f"{part}: holds iterations {min(seen)}..{max(seen)}, the first part "
                             f"{min(iterations)}..{max(iterations)}: ranks must record the same steps")
    tmp = out + ".part"
    with open(tmp, "w") as f:
        f.write(RoutingCapture.HEADER)
        for it in sorted(rows):
            f.write("\n".join(rows[it]) + "\n")
    os.replace(tmp, out)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("merge", help="join per-rank traces (OUT PART...)")
    m.add_argument("out")
    m.add_argument("parts", nargs="+")
    args = p.parse_args(argv)
    try:
        merge(args.out, args.parts)
    except (OSError, ValueError) as e:
        print(f"capture_routing.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
