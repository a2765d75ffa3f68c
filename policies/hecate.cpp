// Hecate / FSSDP (fully sharded sparse data parallelism): expert parameters and optimizer state
// are fully sharded over the GPUs and never form replicas of their own; each iteration a sparse
// all-gather materialises the replicas the placement needs and a sparse reduce-scatter returns
// their gradients to the shard owners (policies/sharded.hpp). The placement of iteration t+1 comes
// from the expert loads averaged over the last `load_window` iterations: replica counts in
// proportion to load, the replicas spread across nodes first, then onto the least-loaded GPU.
// Heterogeneous sharding: every `reshard_interval` iterations each expert's shards are re-laid
// over the GPUs that hold its replicas (hot experts over many owners), which moves optimizer state;
// between re-shardings the placement changes every iteration and moves none.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "policies/common.hpp"
#include "policies/registry.hpp"
#include "policies/sharded.hpp"
#include "policies/symi.hpp"

namespace moesim {
namespace {

class HecatePolicy final : public Policy {
 public:
  HecatePolicy(const PolicyContext& ctx, Cfg& p) : Policy(ctx) {
    // source: shared/reference/policies.md (Hecate / FSSDP): replicas by load averaged over the
    // last 5 iterations.
    load_window_ = p.get_int("load_window", 5, 1, 1 << 20);
    // source: shared/reference/policies.md (Hecate / FSSDP): re-sharding every 100 iterations.
    reshard_interval_ = p.get_int("reshard_interval", 100, 1, 1LL << 40);
    // source: the Hecate paper's heterogeneous sharding (shards laid out unevenly by load); the
    // rule (an expert's shards split evenly over its replicas' GPUs) is a reconstruction.
    // `uniform`: every expert split 1/G over all GPUs, never re-sharded.
    sharding_ = p.get_enum("sharding", "heterogeneous", {"heterogeneous", "uniform"});
    // source: the Hecate paper's re-materialisation (replicas freed after the forward pass and
    // gathered again for the backward pass); charged as a second sparse all-gather.
    rematerialize_ = p.get_bool("rematerialize", true);
    // Reconstruction: re-sharding's optimizer-state moves on the critical path of the next
    // iteration (false: in the background).
    reshard_blocking_ = p.get_bool("reshard_blocking", true);
    // Reconstruction: FSSDP trains dropless MoE (0); > 0 caps each replica at
    // ceil(cf x k x tokens_per_gpu x G / (G S)) assignments summed over sources, as eplb.
    capacity_factor_ = p.get_double("capacity_factor", 0.0, 0.0, 1e6);
    const int slots = ctx.gpus * ctx.slots_per_gpu;
    if (slots < ctx.experts) {
      p.fail("", fmt::format("hecate needs at least one slot per expert: {} slots ({} GPUs x {} slots) for {} experts",
                             slots, ctx.gpus, ctx.slots_per_gpu, ctx.experts));
    }
    if (capacity_factor_ > 0.0) {
      replica_capacity_ = static_cast<std::int64_t>(std::ceil(capacity_factor_ * ctx.top_k *
                                                              static_cast<double>(ctx.tokens_per_gpu) * ctx.gpus /
                                                              static_cast<double>(slots)));
    }
    history_.resize(static_cast<std::size_t>(ctx.moe_layers));
  }

  [[nodiscard]] std::string name() const override { return "hecate"; }

  [[nodiscard]] Placement initial_placement() override {
    Placement pl = placement_from([](int, int) { return 1.0; });
    shards_ = heterogeneous() ? sharded::replica_shards(pl, ctx_.experts)
                              : sharded::uniform_shards(ctx_.moe_layers, ctx_.experts, ctx_.gpus);
    use_previous_ = false;
    return pl;
  }

  void dispatch(int layer, const std::int64_t* counts, const Placement& pl, LayerDispatch& out) override {
    EvenDispatchOptions opt;
    opt.replica_capacity = replica_capacity_;
    dispatch_even(pl, layer, ctx_.experts, counts, opt, out);
  }

  [[nodiscard]] PolicyDecision after_iteration(int iteration, const IterationCounts& counts,
                                               const Placement&) override {
    record_loads(ctx_, counts, load_window_, history_);
    PolicyDecision d;
    d.new_placement = true;
    d.placement = placement_from([this](int l, int e) {
      double sum = 0.0;
      for (const auto& v : history_[static_cast<std::size_t>(l)]) sum += static_cast<double>(v[e]);
      return sum / static_cast<double>(history_[static_cast<std::size_t>(l)].size());
    });
    // This iteration's gradients and the next one's replicas use the owners it ran with; a
    // re-shard then moves the updated state to the new owners before the next iteration.
    use_previous_ = false;
    if (heterogeneous() && (static_cast<std::int64_t>(iteration) + 1) % reshard_interval_ == 0) {
      sharded::ShardMap next = sharded::replica_shards(d.placement, ctx_.experts);
      d.movements = sharded::reshard_moves(ctx_, shards_, next, reshard_blocking_);
      previous_ = std::move(shards_);
      shards_ = std::move(next);
      use_previous_ = true;
    }
    return d;
  }

  [[nodiscard]] SyncPlan sync_plan(int, const Placement& current, const Placement& next) override {
    return sharded::sharded_sync_plan(ctx_, current, next, use_previous_ ? previous_ : shards_, rematerialize_);
  }

  [[nodiscard]] nlohmann::json parameters() const override {
    return {{"load_window", load_window_},         {"reshard_interval", reshard_interval_},
            {"sharding", sharding_},               {"rematerialize", rematerialize_},
            {"reshard_blocking", reshard_blocking_}, {"capacity_factor", capacity_factor_},
            {"replica_capacity", replica_capacity_}};
  }

 private:
  [[nodiscard]] bool heterogeneous() const { return sharding_ == "heterogeneous"; }

  // Replica counts in proportion to `load(layer, expert)`, at least one each (the largest
  // remainder rule of policies/symi.hpp; reconstruction: the Hecate paper's exact rounding was not
  // available), spread across nodes first, then onto the least-loaded GPU.
  template <class Load>
  [[nodiscard]] Placement placement_from(Load&& load) const {
    Placement pl;
    pl.gpus = ctx_.gpus;
    pl.slots_per_gpu = ctx_.slots_per_gpu;
    pl.expert_of_slot.resize(static_cast<std::size_t>(ctx_.moe_layers));
    std::vector<double> w(static_cast<std::size_t>(ctx_.experts));
    for (int l = 0; l < ctx_.moe_layers; ++l) {
      for (int e = 0; e < ctx_.experts; ++e) w[e] = load(l, e);
      const std::vector<int> count = symi_replica_counts(w, pl.num_slots());
      pl.expert_of_slot[l] =
          sharded::spread_placement(w, count, ctx_.gpus, ctx_.slots_per_gpu, ctx_.cluster->gpus_per_node);
    }
    return pl;
  }

  std::int64_t load_window_ = 5;
  std::int64_t reshard_interval_ = 100;
  std::string sharding_ = "heterogeneous";
  bool rematerialize_ = true;
  bool reshard_blocking_ = true;
  double capacity_factor_ = 0.0;
  std::int64_t replica_capacity_ = -1;
  LoadHistory history_;
  sharded::ShardMap shards_;    // owners from the next iteration on
  sharded::ShardMap previous_;  // the owners before the re-shard the last decision made
  bool use_previous_ = false;   // that decision re-sharded: its iteration's sync uses previous_
};

}  // namespace

PolicyInfo moesim_policy_hecate() {
  return {"hecate",
          "Hecate / FSSDP: experts fully sharded, replicas materialised each iteration by a sparse all-gather and "
          "reduced back by a sparse reduce-scatter, placed by windowed load across nodes first; heterogeneous "
          "re-sharding every 100 iterations",
          [](const PolicyContext& ctx, Cfg& p) -> std::unique_ptr<Policy> {
            return std::make_unique<HecatePolicy>(ctx, p);
          }};
}

}  // namespace moesim
