// LAER-MoE / FSEP (fully sharded expert parallelism, ASPLOS 2026): every expert's parameters and
// optimizer state are sharded evenly over all GPUs; every iteration an all-to-all rebuilds whole
// replicas for the current layout from the shards and the gradients go back to them
// (policies/sharded.hpp), so re-laying the replicas out moves no optimizer state. A planner runs
// per layer per iteration on the counts of the last `load_window` iterations: candidate
// replica-count vectors (uniform, EPLB's heap on load per replica, small perturbations of it),
// each placed greedily (spread across the nodes holding fewest replicas of the expert, then onto
// the least-loaded GPU) and costed as comm_weight x sum(comm) + compute_weight x max(compute);
// the cheapest is the next iteration's layout.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <utility>

#include "policies/common.hpp"
#include "policies/registry.hpp"
#include "policies/sharded.hpp"

namespace moesim {
namespace {

class LaerPolicy final : public Policy {
 public:
  LaerPolicy(const PolicyContext& ctx, Cfg& p) : Policy(ctx) {
    // source: shared/reference/policies.md (LAER-MoE): the planner uses the last 5 iterations'
    // counts.
    load_window_ = p.get_int("load_window", 5, 1, 1 << 20);
    // Reconstruction: the reference says "small perturbations" of the heap candidate without a
    // number; 4 variants, each moving one replica (0: uniform and heap only).
    perturbations_ = static_cast<int>(p.get_int("perturbations", 4, 0, 1 << 20));
    // source: shared/reference/policies.md (LAER-MoE): cost 4 x sum(comm) + 3 x max(compute)
    // (4 token exchanges per assignment: dispatch and combine, forward and backward; 3: forward
    // plus a backward of twice its cost).
    m_.comm_weight = p.get_double("comm_weight", 4.0, 0.0, 1e9);
    m_.compute_weight = p.get_double("compute_weight", 3.0, 0.0, 1e9);
    // source: FSEP rebuilds replicas every iteration and keeps no full copy between iterations;
    // true adds a second rebuild for the backward pass (FSDP's reshard-after-forward). Default
    // false: reconstruction, the reference names one all-to-all per iteration.
    rematerialize_ = p.get_bool("rematerialize", false);
    // Reconstruction: LAER-MoE trains dropless MoE (0); > 0 caps each replica at
    // ceil(cf x k x tokens_per_gpu x G / (G S)) assignments summed over sources, as eplb.
    capacity_factor_ = p.get_double("capacity_factor", 0.0, 0.0, 1e6);
    const int slots = ctx.gpus * ctx.slots_per_gpu;
    if (slots < ctx.experts) {
      p.fail("", fmt::format("laer needs at least one slot per expert: {} slots ({} GPUs x {} slots) for {} experts",
                             slots, ctx.gpus, ctx.slots_per_gpu, ctx.experts));
    }
    if (capacity_factor_ > 0.0) {
      replica_capacity_ = static_cast<std::int64_t>(std::ceil(capacity_factor_ * ctx.top_k *
                                                              static_cast<double>(ctx.tokens_per_gpu) * ctx.gpus /
                                                              static_cast<double>(slots)));
    }
    const ClusterSpec& c = *ctx.cluster;
    m_.gpus_per_node = c.gpus_per_node;
    m_.nic_bps = c.nic_gbps() * 1e9;
    m_.intra_bps = c.intra_gbps() * 1e9;
    if (m_.intra_bps <= 0.0) m_.intra_bps = m_.nic_bps;
    if (m_.nic_bps <= 0.0) m_.nic_bps = m_.intra_bps;
    if (m_.nic_bps <= 0.0) m_.nic_bps = m_.intra_bps = 1e9;  // no links at all: only relative costs matter
    m_.flop_rate = c.gpu.peak_tflops * 1e12 * c.gpu.gemm_efficiency;
    if (m_.flop_rate <= 0.0) m_.flop_rate = 1e12;
    m_.flop_per_token = 2.0 * ctx.expert_params;
    m_.token_bytes = ctx.model != nullptr ? static_cast<double>(ctx.model->hidden) * dtype_bytes(ctx.model->dtype) : 0.0;
    shards_ = sharded::uniform_shards(ctx.moe_layers, ctx.experts, ctx.gpus);
  }

  [[nodiscard]] std::string name() const override { return "laer"; }

  // The uniform candidate on equal counts.
  [[nodiscard]] Placement initial_placement() override {
    const std::vector<double> flat(static_cast<std::size_t>(ctx_.gpus) * ctx_.experts, 1.0);
    Placement pl;
    pl.gpus = ctx_.gpus;
    pl.slots_per_gpu = ctx_.slots_per_gpu;
    pl.expert_of_slot.assign(static_cast<std::size_t>(ctx_.moe_layers),
                             sharded::laer_plan(flat, ctx_.gpus, ctx_.experts, ctx_.slots_per_gpu, 0, m_).layout);
    return pl;
  }

  void dispatch(int layer, const std::int64_t* counts, const Placement& pl, LayerDispatch& out) override {
    EvenDispatchOptions opt;
    opt.replica_capacity = replica_capacity_;
    dispatch_even(pl, layer, ctx_.experts, counts, opt, out);
  }

  [[nodiscard]] PolicyDecision after_iteration(int, const IterationCounts& counts, const Placement&) override {
    // Window of per-source counts: a running sum of the last load_window iterations.
    if (sum_.empty()) sum_.assign(counts.counts.size(), 0);
    window_.push_back(counts.counts);
    for (std::size_t i = 0; i < sum_.size(); ++i) sum_[i] += counts.counts[i];
    if (static_cast<std::int64_t>(window_.size()) > load_window_) {
      for (std::size_t i = 0; i < sum_.size(); ++i) sum_[i] -= window_.front()[i];
      window_.pop_front();
    }
    const auto n = static_cast<double>(window_.size());
    const std::size_t per_layer = static_cast<std::size_t>(ctx_.gpus) * ctx_.experts;
    PolicyDecision d;
    d.new_placement = true;
    d.placement.gpus = ctx_.gpus;
    d.placement.slots_per_gpu = ctx_.slots_per_gpu;
    d.placement.expert_of_slot.resize(static_cast<std::size_t>(ctx_.moe_layers));
    std::vector<double> mean(per_layer);
    for (int l = 0; l < ctx_.moe_layers; ++l) {
      for (std::size_t i = 0; i < per_layer; ++i) mean[i] = static_cast<double>(sum_[l * per_layer + i]) / n;
      d.placement.expert_of_slot[static_cast<std::size_t>(l)] =
          sharded::laer_plan(mean, ctx_.gpus, ctx_.experts, ctx_.slots_per_gpu, perturbations_, m_).layout;
    }
    return d;
  }

  [[nodiscard]] SyncPlan sync_plan(int, const Placement& current, const Placement& next) override {
    return sharded::sharded_sync_plan(ctx_, current, next, shards_, rematerialize_);
  }

  [[nodiscard]] nlohmann::json parameters() const override {
    return {{"load_window", load_window_},    {"perturbations", perturbations_},
            {"comm_weight", m_.comm_weight},  {"compute_weight", m_.compute_weight},
            {"rematerialize", rematerialize_}, {"capacity_factor", capacity_factor_},
            {"replica_capacity", replica_capacity_}};
  }

 private:
  std::int64_t load_window_ = 5;
  int perturbations_ = 4;
  bool rematerialize_ = false;
  double capacity_factor_ = 0.0;
  std::int64_t replica_capacity_ = -1;
  sharded::LaerCostModel m_;
  sharded::ShardMap shards_;
  std::deque<std::vector<std::int64_t>> window_;  // the last iterations' counts, oldest first
  std::vector<std::int64_t> sum_;                 // their sum
};

}  // namespace

PolicyInfo moesim_policy_laer() {
  return {"laer",
          "LAER-MoE / FSEP: experts fully sharded over all GPUs, replicas rebuilt by an all-to-all every iteration "
          "for a per-layer plan chosen among candidate replica counts by 4 x sum(comm) + 3 x max(compute) "
          "(ASPLOS 2026)",
          [](const PolicyContext& ctx, Cfg& p) -> std::unique_ptr<Policy> {
            return std::make_unique<LaerPolicy>(ctx, p);
          }};
}

}  // namespace moesim
