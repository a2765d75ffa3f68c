"""Policies written in Python: the `Policy` base class and the plain types its methods see and
return, mirroring sim/policy.hpp. The C++ side (python/py_policy.cpp) copies every argument into
these types and checks every answer, so a policy may keep whatever it is given."""
from ._ext import core as _core


class Placement:
    """Which logical expert each GPU slot holds, per MoE layer: expert_of_slot[layer][slot], -1
    for an empty slot. Slot j lives on GPU j // slots_per_gpu."""

    __slots__ = ("gpus", "slots_per_gpu", "expert_of_slot")

    def __init__(self, gpus, slots_per_gpu, expert_of_slot):
        self.gpus = gpus
        self.slots_per_gpu = slots_per_gpu
        self.expert_of_slot = expert_of_slot

    def num_slots(self):
        return self.gpus * self.slots_per_gpu

    def gpu_of_slot(self, slot):
        return slot // self.slots_per_gpu

    def replicas(self, layer, expert):
        """Slots holding `expert` in `layer`, in slot order."""
        return [s for s, e in enumerate(self.expert_of_slot[layer]) if e == expert]

    def copy(self):
        return Placement(self.gpus, self.slots_per_gpu, [list(l) for l in self.expert_of_slot])

    def __eq__(self, other):
        return (isinstance(other, Placement) and self.gpus == other.gpus and
                self.slots_per_gpu == other.slots_per_gpu and self.expert_of_slot == other.expert_of_slot)

    def __repr__(self):
        return (f"Placement(gpus={self.gpus}, slots_per_gpu={self.slots_per_gpu}, "
                f"expert_of_slot={self.expert_of_slot!r})")


class LayerDispatch:
    """How one MoE layer's tokens were dispatched; index [src * num_slots + slot]. `accepted`: the
    assignments the replica in `slot` processes for source `src` (after capacity); `buffered`: the
    buffer sent and computed (padded to capacity where the policy pads); `routed`: assignments the
    gate routed; `dropped`: those capacity cut off."""

    __slots__ = ("gpus", "num_slots", "accepted", "buffered", "routed", "dropped")

    def __init__(self):
        self.reset(0, 0)

    def reset(self, gpus, num_slots):
        self.gpus = gpus
        self.num_slots = num_slots
        self.accepted = [0] * (gpus * num_slots)
        self.buffered = [0] * (gpus * num_slots)
        self.routed = 0
        self.dropped = 0


class IterationCounts:
    """Assignments routed in one iteration, flat: counts[(layer * gpus + src) * experts + expert]."""

    __slots__ = ("layers", "gpus", "experts", "counts")

    def __init__(self, layers, gpus, experts, counts):
        self.layers = layers
        self.gpus = gpus
        self.experts = experts
        self.counts = counts

    def at(self, layer, src, expert):
        return self.counts[(layer * self.gpus + src) * self.experts + expert]

    def layer(self, layer):
        """The [src][expert] matrix of one layer, flat (what dispatch() gets)."""
        n = self.gpus * self.experts
        return self.counts[layer * n:(layer + 1) * n]


class Decision:
    """What after_iteration returns: the next placement (None: unchanged) and the movements it
    costs (moesim.Movement; see moesim.placement_moves)."""

    __slots__ = ("placement", "movements")

    def __init__(self, placement=None, movements=()):
        self.placement = placement
        self.movements = list(movements)


class Policy:
    """An expert-placement policy (sim/policy.hpp). Subclass it, override initial_placement and
    dispatch (and after_iteration, sync_plan, parameters where needed), and register the class
    with moesim.register_policy(name, cls, description). One instance is built per pipeline stage
    of each run, with the stage's context and the scenario entry's parameters."""

    def __init__(self, ctx, params):
        # ctx: moesim.PolicyContext; params: moesim.PolicyParams, readable only in here. Any key
        # of the entry not read (besides name and label) is an error once this returns.
        self.ctx = ctx

    def name(self):
        return getattr(self, "_moesim_name", type(self).__name__)

    def initial_placement(self):
        """The Placement of the first iteration."""
        raise NotImplementedError(f"{type(self).__name__}.initial_placement")

    def dispatch(self, layer, counts, placement, out):
        """Dispatches one MoE layer: `counts` is the flat [src][expert] list of assignments
        (counts[src * experts + e]); call out.reset(placement.gpus, placement.num_slots()) and
        fill out.accepted, out.buffered, out.routed and out.dropped."""
        raise NotImplementedError(f"{type(self).__name__}.dispatch")

    def after_iteration(self, iteration, counts, current):
        """Called after each iteration with its IterationCounts; None keeps the placement, a
        Decision changes it."""
        return None

    def sync_plan(self, iteration, current, next):
        """How gradients and weights flow in `iteration`; None: the C++ default
        (moesim.default_sync_plan(ctx, current, False))."""
        return None

    def parameters(self):
        """Every parameter, defaults filled in (a JSON-serialisable dict, for summary.json)."""
        return {}


_registered = {}


def register_policy(name, cls, description=""):
    """Makes `cls` (a subclass of moesim.Policy) the policy `name`, usable in a scenario's
    `policies:` list and in compare(policies=...) beside the C++ ones. Names are unique for the
    life of the process: a taken one raises moesim.InputError."""
    if not (isinstance(cls, type) and issubclass(cls, Policy)):
        raise TypeError(f"register_policy: {cls!r} is not a subclass of moesim.Policy")
    _core.register_policy(name, str(description))  # checks the name; raises on a duplicate
    _registered[name] = cls


def _instantiate(name, ctx, params):
    # Called by the C++ registry entry of `name` (python/py_policy.cpp).
    cls = _registered[name]
    obj = cls.__new__(cls)
    obj._moesim_name = name
    obj.__init__(ctx, params)
    return obj
