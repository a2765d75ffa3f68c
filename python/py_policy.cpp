#include "python/py_policy.hpp"

#include <fmt/format.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "core/error.hpp"
#include "policies/capacity.hpp"
#include "policies/common.hpp"
#include "policies/registry.hpp"

namespace moesim::py {

const PolicyContext& PyContext::get() const {
  if (!live) throw PolicyError("this PolicyContext belongs to a run that has ended; use the one the policy was built with");
  return ctx;
}

Cfg& PyParams::get() const {
  if (cfg == nullptr) throw PolicyError("policy parameters can be read only in the policy's constructor");
  return *cfg;
}

namespace {

pyb::module_ types() { return pyb::module_::import("moesim._policy"); }

[[noreturn]] void bad(const char* what, const std::string& msg) { throw PolicyError(fmt::format("{}: {}", what, msg)); }

void check_endpoint(const Endpoint& e, const PolicyContext& ctx, const char* what) {
  const int n = e.host ? ctx.cluster->nodes : ctx.gpus;
  if (e.index < 0 || e.index >= n)
    bad(what, fmt::format("endpoint {} {} is out of range; allowed [0, {})", e.host ? "host" : "GPU", e.index, n));
}

void check_transfer(const Transfer& t, const PolicyContext& ctx, const char* what) {
  check_endpoint(t.src, ctx, what);
  check_endpoint(t.dst, ctx, what);
  if (!(t.bytes >= 0.0)) bad(what, fmt::format("transfer of {} bytes; allowed: >= 0", t.bytes));
}

void check_collectives(const std::vector<CollectiveOp>& ops, const PolicyContext& ctx, const char* what) {
  for (const CollectiveOp& op : ops) {
    if (!(op.bytes >= 0.0)) bad(what, fmt::format("collective '{}' of {} bytes; allowed: >= 0", op.what, op.bytes));
    for (std::size_t i = 0; i < op.gpus.size(); ++i) {
      if (op.gpus[i] < 0 || op.gpus[i] >= ctx.gpus || (i > 0 && op.gpus[i] <= op.gpus[i - 1]))
        bad(what, fmt::format("collective '{}': gpus must be sorted, distinct and in [0, {})", op.what, ctx.gpus));
    }
  }
}

void check_size(std::size_t got, std::size_t want, const char* what, const char* field) {
  if (got != want) bad(what, fmt::format("{} has {} entries; expected {}", field, got, want));
}

void check_sync_plan(const SyncPlan& p, const PolicyContext& ctx) {
  const char* what = "sync_plan";
  const auto gpus = static_cast<std::size_t>(ctx.gpus), nodes = static_cast<std::size_t>(ctx.cluster->nodes);
  check_size(p.gpu_optimizer_params.size(), gpus, what, "gpu_optimizer_params");
  check_size(p.host_optimizer_params.size(), nodes, what, "host_optimizer_params");
  check_size(p.d2h_bytes.size(), gpus, what, "d2h_bytes");
  check_size(p.h2d_bytes.size(), gpus, what, "h2d_bytes");
  if (!p.decision_ns.empty()) check_size(p.decision_ns.size(), gpus, what, "decision_ns");
  check_collectives(p.pre_collectives, ctx, what);
  check_collectives(p.grad_collectives, ctx, what);
  check_collectives(p.post_collectives, ctx, what);
  for (const Transfer& t : p.gradient_transfers) check_transfer(t, ctx, what);
  for (const Transfer& t : p.weight_transfers) check_transfer(t, ctx, what);
}

// Counts of one iteration as moesim._policy.IterationCounts (a flat list, [layer][src][expert]).
pyb::object counts_to_py(const IterationCounts& c) {
  return types().attr("IterationCounts")(c.shape.layers, c.shape.gpus, c.shape.experts, pyb::cast(c.counts));
}

std::vector<std::int64_t> int_list(const pyb::handle& obj, std::size_t size, const char* what, const char* field) {
  std::vector<std::int64_t> v;
  try {
    v = obj.cast<std::vector<std::int64_t>>();
  } catch (const pyb::cast_error&) {
    bad(what, fmt::format("{} must be a list of integers", field));
  }
  check_size(v.size(), size, what, field);
  for (const std::int64_t x : v)
    if (x < 0) bad(what, fmt::format("{} has {}; allowed: >= 0", field, x));
  return v;
}

class PythonPolicy final : public Policy {
 public:
  PythonPolicy(const PolicyContext& ctx, pyb::object instance, pyb::object ctx_obj)
      : Policy(ctx), instance_(std::move(instance)), ctx_obj_(std::move(ctx_obj)) {}

  ~PythonPolicy() override {
    // Python references are dropped with the GIL held; the run's context dies with the policy.
    const pyb::gil_scoped_acquire gil;
    ctx_obj_.cast<PyContext&>().live = false;
    instance_ = pyb::object();
    ctx_obj_ = pyb::object();
    placement_py_ = pyb::object();
  }
  PythonPolicy(const PythonPolicy&) = delete;
  PythonPolicy& operator=(const PythonPolicy&) = delete;

  [[nodiscard]] std::string name() const override {
    const pyb::gil_scoped_acquire gil;
    return pyb::str(instance_.attr("name")()).cast<std::string>();
  }

  [[nodiscard]] Placement initial_placement() override {
    const pyb::gil_scoped_acquire gil;
    return placement_from_py(instance_.attr("initial_placement")(), ctx_, "initial_placement");
  }

  void dispatch(int layer, const std::int64_t* counts, const Placement& placement, LayerDispatch& out) override {
    const pyb::gil_scoped_acquire gil;
    const std::size_t n = static_cast<std::size_t>(ctx_.gpus) * static_cast<std::size_t>(ctx_.experts);
    pyb::list c(n);
    for (std::size_t i = 0; i < n; ++i) c[i] = pyb::int_(counts[i]);
    pyb::object py_out = types().attr("LayerDispatch")();
    instance_.attr("dispatch")(layer, c, cached_placement(placement), py_out);
    const char* what = "dispatch";
    const int gpus = py_out.attr("gpus").cast<int>(), slots = py_out.attr("num_slots").cast<int>();
    if (gpus != placement.gpus || slots != placement.num_slots())
      bad(what, fmt::format("out.reset({}, {}) does not match the placement's {} GPUs and {} slots", gpus, slots,
                            placement.gpus, placement.num_slots()));
    out.gpus = gpus;
    out.num_slots = slots;
    const std::size_t cells = static_cast<std::size_t>(gpus) * static_cast<std::size_t>(slots);
    out.accepted = int_list(py_out.attr("accepted"), cells, what, "out.accepted");
    out.buffered = int_list(py_out.attr("buffered"), cells, what, "out.buffered");
    out.routed = py_out.attr("routed").cast<std::int64_t>();
    out.dropped = py_out.attr("dropped").cast<std::int64_t>();
  }

  [[nodiscard]] PolicyDecision after_iteration(int iteration, const IterationCounts& counts,
                                               const Placement& current) override {
    const pyb::gil_scoped_acquire gil;
    const pyb::object r = instance_.attr("after_iteration")(iteration, counts_to_py(counts), cached_placement(current));
    PolicyDecision d;
    if (r.is_none()) return d;
    const char* what = "after_iteration";
    if (!pyb::hasattr(r, "placement") || !pyb::hasattr(r, "movements"))
      bad(what, "must return None or a moesim.Decision");
    const pyb::object pl = r.attr("placement");
    if (!pl.is_none()) {
      d.new_placement = true;
      d.placement = placement_from_py(pl, ctx_, what);
    }
    for (const pyb::handle m : r.attr("movements")) {
      try {
        d.movements.push_back(m.cast<Movement>());
      } catch (const pyb::cast_error&) {
        bad(what, "Decision.movements must hold moesim.Movement objects");
      }
      check_transfer(d.movements.back().transfer, ctx_, what);
    }
    return d;
  }

  [[nodiscard]] SyncPlan sync_plan(int iteration, const Placement& current, const Placement& next) override {
    {
      const pyb::gil_scoped_acquire gil;
      const pyb::object r = instance_.attr("sync_plan")(iteration, cached_placement(current), placement_to_py(next));
      if (!r.is_none()) {
        SyncPlan p;
        try {
          p = r.cast<SyncPlan>();
        } catch (const pyb::cast_error&) {
          bad("sync_plan", "must return None or a moesim.SyncPlan");
        }
        check_sync_plan(p, ctx_);
        return p;
      }
    }
    return Policy::sync_plan(iteration, current, next);  // None: the C++ default
  }

  [[nodiscard]] nlohmann::json parameters() const override {
    const pyb::gil_scoped_acquire gil;
    const pyb::object p = instance_.attr("parameters")();
    try {
      return nlohmann::json::parse(pyb::module_::import("json").attr("dumps")(p).cast<std::string>());
    } catch (const pyb::error_already_set& e) {
      bad("parameters", fmt::format("must return a JSON-serialisable dict ({})", e.what()));
    }
  }

 private:
  // The Python copy of the placement, remade only when it changed (dispatch sees the same one
  // for every layer of an iteration).
  const pyb::object& cached_placement(const Placement& p) {
    if (!placement_py_ || p.gpus != last_.gpus || p.slots_per_gpu != last_.slots_per_gpu ||
        p.expert_of_slot != last_.expert_of_slot) {
      last_ = p;
      placement_py_ = placement_to_py(p);
    }
    return placement_py_;
  }

  pyb::object instance_;
  pyb::object ctx_obj_;
  Placement last_;
  pyb::object placement_py_;
};

}  // namespace

Placement placement_from_py(const pyb::handle& obj, const PolicyContext& ctx, const char* what) {
  if (!pyb::hasattr(obj, "expert_of_slot") || !pyb::hasattr(obj, "gpus") || !pyb::hasattr(obj, "slots_per_gpu"))
    bad(what, "expected a moesim.Placement");
  Placement p;
  p.gpus = obj.attr("gpus").cast<int>();
  p.slots_per_gpu = obj.attr("slots_per_gpu").cast<int>();
  if (p.gpus != ctx.gpus || p.slots_per_gpu != ctx.slots_per_gpu)
    bad(what, fmt::format("placement of {} GPUs x {} slots; the policy context has {} x {}", p.gpus, p.slots_per_gpu,
                          ctx.gpus, ctx.slots_per_gpu));
  try {
    p.expert_of_slot = obj.attr("expert_of_slot").cast<std::vector<std::vector<int>>>();
  } catch (const pyb::cast_error&) {
    bad(what, "expert_of_slot must be a list (per MoE layer) of lists of integers (per slot)");
  }
  check_size(p.expert_of_slot.size(), static_cast<std::size_t>(ctx.moe_layers), what, "expert_of_slot");
  for (const std::vector<int>& layer : p.expert_of_slot) {
    check_size(layer.size(), static_cast<std::size_t>(p.num_slots()), what, "a layer of expert_of_slot");
    for (const int e : layer)
      if (e < -1 || e >= ctx.experts)
        bad(what, fmt::format("expert {} in expert_of_slot; allowed -1 (empty) or [0, {})", e, ctx.experts));
  }
  return p;
}

pyb::object placement_to_py(const Placement& p) {
  return types().attr("Placement")(p.gpus, p.slots_per_gpu, pyb::cast(p.expert_of_slot));
}

void register_python_policy(const std::string& name, const std::string& description) {
  PolicyInfo info;
  info.name = name;
  info.description = description;
  info.make = [name](const PolicyContext& ctx, Cfg& params) -> std::unique_ptr<Policy> {
    const pyb::gil_scoped_acquire gil;
    pyb::object ctx_obj = pyb::cast(PyContext{ctx});
    pyb::object params_obj = pyb::cast(PyParams{&params});
    pyb::object instance;
    try {
      instance = types().attr("_instantiate")(name, ctx_obj, params_obj);
    } catch (...) {
      params_obj.cast<PyParams&>().cfg = nullptr;
      ctx_obj.cast<PyContext&>().live = false;
      throw;
    }
    params_obj.cast<PyParams&>().cfg = nullptr;  // Cfg lives on the caller's stack
    return std::make_unique<PythonPolicy>(ctx, std::move(instance), std::move(ctx_obj));
  };
  register_policy(std::move(info));
}

void bind_policy_types(pyb::module_& m) {
  pyb::class_<PyContext>(m, "PolicyContext", "What a policy may look at (read-only; sim/policy.hpp PolicyContext)")
      .def_property_readonly("gpus", [](const PyContext& c) { return c.get().gpus; })
      .def_property_readonly("slots_per_gpu", [](const PyContext& c) { return c.get().slots_per_gpu; })
      .def_property_readonly("moe_layers", [](const PyContext& c) { return c.get().moe_layers; })
      .def_property_readonly("experts", [](const PyContext& c) { return c.get().experts; })
      .def_property_readonly("tokens_per_gpu", [](const PyContext& c) { return c.get().tokens_per_gpu; })
      .def_property_readonly("top_k", [](const PyContext& c) { return c.get().top_k; })
      .def_property_readonly("expert_params", [](const PyContext& c) { return c.get().expert_params; })
      .def_property_readonly("expert_weight_bytes", [](const PyContext& c) { return c.get().expert_weight_bytes; })
      .def_property_readonly("expert_grad_bytes", [](const PyContext& c) { return c.get().expert_grad_bytes; })
      .def_property_readonly("expert_optimizer_bytes",
                             [](const PyContext& c) { return c.get().expert_optimizer_bytes; })
      .def_property_readonly("seed", [](const PyContext& c) { return c.get().seed; })
      .def_property_readonly("nodes", [](const PyContext& c) { return c.get().cluster->nodes; })
      .def_property_readonly("gpus_per_node", [](const PyContext& c) { return c.get().cluster->gpus_per_node; })
      .def_property_readonly("optimizer_offload",
                             [](const PyContext& c) { return c.get().training->optimizer_offload; });

  // The reads of core/config.hpp Cfg: defaults, ranges and unknown keys behave as in C++ policies.
  pyb::class_<PyParams>(m, "PolicyParams", "A policy entry's parameters, read strictly (core/config.hpp Cfg)")
      .def("has", [](const PyParams& p, const std::string& k) { return p.get().has(k); })
      .def("get_double", [](const PyParams& p, const std::string& k, double def, double lo,
                            double hi) { return p.get().get_double(k, def, lo, hi); },
           pyb::arg("key"), pyb::arg("default"), pyb::arg("min"), pyb::arg("max"))
      .def("need_double", [](const PyParams& p, const std::string& k, double lo,
                             double hi) { return p.get().need_double(k, lo, hi); },
           pyb::arg("key"), pyb::arg("min"), pyb::arg("max"))
      .def("get_int", [](const PyParams& p, const std::string& k, std::int64_t def, std::int64_t lo,
                         std::int64_t hi) { return p.get().get_int(k, def, lo, hi); },
           pyb::arg("key"), pyb::arg("default"), pyb::arg("min"), pyb::arg("max"))
      .def("need_int", [](const PyParams& p, const std::string& k, std::int64_t lo,
                          std::int64_t hi) { return p.get().need_int(k, lo, hi); },
           pyb::arg("key"), pyb::arg("min"), pyb::arg("max"))
      .def("get_bool", [](const PyParams& p, const std::string& k, bool def) { return p.get().get_bool(k, def); },
           pyb::arg("key"), pyb::arg("default"))
      .def("get_string", [](const PyParams& p, const std::string& k,
                            const std::string& def) { return p.get().get_string(k, def); },
           pyb::arg("key"), pyb::arg("default"))
      .def("need_string", [](const PyParams& p, const std::string& k) { return p.get().need_string(k); })
      .def("get_enum", [](const PyParams& p, const std::string& k, const std::string& def,
                          const std::vector<std::string>& allowed) { return p.get().get_enum(k, def, allowed); },
           pyb::arg("key"), pyb::arg("default"), pyb::arg("allowed"))
      .def("get_int_list", [](const PyParams& p, const std::string& k, const std::vector<std::int64_t>& def,
                              std::int64_t lo, std::int64_t hi) { return p.get().get_int_list(k, def, lo, hi); },
           pyb::arg("key"), pyb::arg("default"), pyb::arg("min"), pyb::arg("max"))
      .def("get_double_list", [](const PyParams& p, const std::string& k, const std::vector<double>& def, double lo,
                                 double hi) { return p.get().get_double_list(k, def, lo, hi); },
           pyb::arg("key"), pyb::arg("default"), pyb::arg("min"), pyb::arg("max"))
      .def("fail", [](const PyParams& p, const std::string& k, const std::string& msg) { p.get().fail(k, msg); },
           pyb::arg("key"), pyb::arg("message"), "Raises InputError naming the file, line and key");

  pyb::class_<Endpoint>(m, "Endpoint", "A GPU (host=False, index = GPU) or the host of a node (index = node)")
      .def(pyb::init([](bool host, int index) { return Endpoint{host, index}; }), pyb::arg("host") = false,
           pyb::arg("index") = 0)
      .def_readwrite("host", &Endpoint::host)
      .def_readwrite("index", &Endpoint::index)
      .def("__repr__", [](const Endpoint& e) { return fmt::format("Endpoint(host={}, index={})", e.host ? "True" : "False", e.index); });
  pyb::class_<Transfer>(m, "Transfer")
      .def(pyb::init([](Endpoint src, Endpoint dst, double bytes) { return Transfer{src, dst, bytes}; }),
           pyb::arg("src"), pyb::arg("dst"), pyb::arg("bytes"))
      .def_readwrite("src", &Transfer::src)
      .def_readwrite("dst", &Transfer::dst)
      .def_readwrite("bytes", &Transfer::bytes);
  pyb::class_<Movement>(m, "Movement", "A data movement a decision requires (weights, optimizer state, ...)")
      .def(pyb::init([](Transfer t, bool blocking, std::string what) { return Movement{t, blocking, std::move(what)}; }),
           pyb::arg("transfer"), pyb::arg("blocking") = true, pyb::arg("what") = "")
      .def_readwrite("transfer", &Movement::transfer)
      .def_readwrite("blocking", &Movement::blocking)
      .def_readwrite("what", &Movement::what);
  pyb::enum_<Collective>(m, "Collective")
      .value("AllReduce", Collective::AllReduce)
      .value("AllGather", Collective::AllGather)
      .value("ReduceScatter", Collective::ReduceScatter)
      .value("Broadcast", Collective::Broadcast);
  pyb::class_<CollectiveOp>(m, "CollectiveOp")
      .def(pyb::init([](Collective kind, double bytes, std::vector<int> gpus, std::string what) {
             return CollectiveOp{kind, bytes, std::move(gpus), std::move(what)};
           }),
           pyb::arg("kind"), pyb::arg("bytes"), pyb::arg("gpus"), pyb::arg("what") = "")
      .def_readwrite("kind", &CollectiveOp::kind)
      .def_readwrite("bytes", &CollectiveOp::bytes)
      .def_readwrite("gpus", &CollectiveOp::gpus)
      .def_readwrite("what", &CollectiveOp::what);
  // Fields are copies: assign whole lists (plan.d2h_bytes = [...]), element writes do not stick.
  pyb::class_<SyncPlan>(m, "SyncPlan", "How gradients and weights flow in one iteration (sim/policy.hpp SyncPlan)")
      .def(pyb::init<>())
      .def_readwrite("pre_collectives", &SyncPlan::pre_collectives)
      .def_readwrite("replica_allreduce", &SyncPlan::replica_allreduce)
      .def_readwrite("copy_allreduce", &SyncPlan::copy_allreduce)
      .def_readwrite("grad_collectives", &SyncPlan::grad_collectives)
      .def_readwrite("gradient_transfers", &SyncPlan::gradient_transfers)
      .def_readwrite("gpu_optimizer_params", &SyncPlan::gpu_optimizer_params)
      .def_readwrite("host_optimizer_params", &SyncPlan::host_optimizer_params)
      .def_readwrite("d2h_bytes", &SyncPlan::d2h_bytes)
      .def_readwrite("h2d_bytes", &SyncPlan::h2d_bytes)
      .def_readwrite("post_collectives", &SyncPlan::post_collectives)
      .def_readwrite("weight_transfers", &SyncPlan::weight_transfers)
      .def_readwrite("decision_ns", &SyncPlan::decision_ns);

  m.def(
      "default_sync_plan",
      [](const PyContext& c, const pyb::handle& placement, bool shard) {
        const PolicyContext& ctx = c.get();
        return default_sync_plan(ctx, placement_from_py(placement, ctx, "default_sync_plan"), shard);
      },
      pyb::arg("ctx"), pyb::arg("placement"), pyb::arg("shard_over_replicas") = false,
      "The expert-data-parallel default (sim/policy.hpp default_sync_plan)");
  m.def(
      "placement_moves",
      [](const PyContext& c, const pyb::handle& from, const pyb::handle& to, bool with_optimizer, bool blocking) {
        const PolicyContext& ctx = c.get();
        return placement_moves(ctx, placement_from_py(from, ctx, "placement_moves"),
                               placement_from_py(to, ctx, "placement_moves"), with_optimizer, blocking);
      },
      pyb::arg("ctx"), pyb::arg("from_placement"), pyb::arg("to_placement"), pyb::arg("with_optimizer"),
      pyb::arg("blocking"), "The movements turning one placement into another (policies/common.hpp)");
  m.def("deepspeed_capacity", &deepspeed_capacity, pyb::arg("local_tokens"), pyb::arg("top_k"), pyb::arg("experts"),
        pyb::arg("capacity_factor"), pyb::arg("min_capacity"),
        "Per-source expert capacity, DeepSpeed-MoE's rule (policies/capacity.hpp)");
}

}  // namespace moesim::py
