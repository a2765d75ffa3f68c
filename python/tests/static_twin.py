"""policies/static.cpp written again in Python, line for line: static expert parallelism with
DeepSpeed-MoE capacity dropping (or dropless padding). Its results must equal the C++ policy's."""
import math

import moesim


class PyStatic(moesim.Policy):
    def __init__(self, ctx, p):
        super().__init__(ctx, p)
        self.capacity_factor = p.get_double("capacity_factor", 1.0, 0.0, 1e6)
        self.min_capacity = p.get_int("min_capacity", 4, 0, 1 << 40)
        self.drop_tokens = p.get_bool("drop_tokens", True)
        self.shard_optimizer = p.get_bool("shard_optimizer", True)
        if self.drop_tokens and self.capacity_factor <= 0.0:
            p.fail("capacity_factor", "must be > 0 when drop_tokens is true (use drop_tokens: false for dropless)")
        slots = ctx.gpus * ctx.slots_per_gpu
        if slots < ctx.experts:
            p.fail("", f"static placement needs at least one slot per expert: {slots} slots for {ctx.experts} experts")
        if ctx.slots_per_gpu > ctx.experts:
            p.fail("", "static placement would hold an expert twice on one GPU")
        self.replicas = slots // ctx.experts
        self.extra_replicas = slots % ctx.experts
        whole_groups = self.extra_replicas == 0 and ctx.experts % ctx.slots_per_gpu == 0
        self.group_gpus = ctx.gpus // self.replicas if whole_groups else ctx.gpus
        self.replica_slots = [[] for _ in range(ctx.experts)]
        for slot in range(slots):
            self.replica_slots[slot % ctx.experts].append(slot)

    def initial_placement(self):
        ctx = self.ctx
        slots = ctx.gpus * ctx.slots_per_gpu
        layout = [slot % ctx.experts for slot in range(slots)]
        return moesim.Placement(ctx.gpus, ctx.slots_per_gpu, [list(layout) for _ in range(ctx.moe_layers)])

    def capacity(self):
        # policies/capacity.hpp deepspeed_capacity, in the same floating-point order.
        ctx = self.ctx
        raw = float(ctx.top_k) * float(ctx.tokens_per_gpu) / float(ctx.experts) * self.capacity_factor
        return max(int(math.ceil(raw)), self.min_capacity)

    def dispatch(self, layer, counts, pl, out):
        E, G, slots = self.ctx.experts, pl.gpus, pl.num_slots()
        out.reset(pl.gpus, slots)
        cap = self.capacity()
        for group in range(G // self.group_gpus):
            first = group * self.group_gpus
            sources = range(first, first + self.group_gpus)
            if not self.drop_tokens:
                cap = max(counts[src * E + e] for src in sources for e in range(E))
            for src in sources:
                for e in range(E):
                    n = counts[src * E + e]
                    reps = self.replica_slots[e]
                    idx = src * slots + reps[src * len(reps) // G]
                    acc = min(n, cap)
                    out.accepted[idx] = acc
                    out.buffered[idx] = cap
                    out.routed += n
                    out.dropped += n - acc

    def sync_plan(self, iteration, current, next):
        return moesim.default_sync_plan(self.ctx, current, self.shard_optimizer)

    def parameters(self):
        return {"capacity_factor": self.capacity_factor, "shard_optimizer": self.shard_optimizer,
                "min_capacity": self.min_capacity, "drop_tokens": self.drop_tokens,
                "replicas_per_expert": self.replicas, "experts_with_extra_replica": self.extra_replicas,
                "expert_parallel_group_gpus": self.group_gpus}


def register():
    """Registers PyStatic as "py-static" once per process."""
    if "py-static" not in dict(moesim.policies()):
        moesim.register_policy("py-static", PyStatic, "policies/static.cpp in Python (the twin test)")
