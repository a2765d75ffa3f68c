// Tutel (Hwang et al., MLSys 2023, arXiv 2206.03382; github.com/microsoft/tutel): static expert
// placement with Tutel's adaptive capacity (x > 0 fixed and padded, x = 0 dropless at the needed
// maximum, x < 0 the needed maximum capped), a per-iteration switch of the MoE layer between
// data, expert and model parallelism (the adaptive degree r), and optionally the 2D hierarchical
// (2DH) all-to-all. The placement is static's (slot i holds expert i mod E), so an expert's
// `sharded` = G S / E holders are Tutel's sharded_count. What is
// reconstructed, and why, is in docs/policies-tutel.md.
#include "policies/tutel.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "policies/registry.hpp"

namespace moesim {
namespace tutel {

std::int64_t capacity(std::int64_t local_tokens, int top_k, int experts, double capacity_factor,
                      std::int64_t max_needed, std::int64_t alignment) {
  const std::int64_t per_expert = (local_tokens + experts - 1) / experts;  // samples_per_expert
  auto fixed = [&](double x) {
    return static_cast<std::int64_t>(top_k) * static_cast<std::int64_t>(x * static_cast<double>(per_expert));
  };
  std::int64_t cap = 0;
  if (capacity_factor > 0.0) cap = fixed(capacity_factor);
  else if (capacity_factor == 0.0) cap = max_needed;
  else cap = std::min(max_needed, fixed(-capacity_factor));
  if (alignment > 1 && cap % alignment != 0) cap += alignment - cap % alignment;
  return cap;
}

std::string mode_name(Mode m) {
  switch (m) {
    case Mode::data: return "data";
    case Mode::model: return "model";
    case Mode::expert: break;
  }
  return "expert";
}

ModeCost mode_costs(const ModeInputs& in) {
  const double E = in.experts, S = in.slots_per_gpu, r = in.sharded, G = in.gpus, L = in.layers;
  const double buffer_bytes = in.buffer_tokens * in.token_bytes;
  ModeCost c;
  c.expert_bytes = 4.0 * buffer_bytes * (1.0 - S / E) +
                   L * (r - 1.0) / r * S * (in.expert_weight_bytes + in.expert_grad_bytes);
  c.model_bytes = 4.0 * r * buffer_bytes * (1.0 - S / (E * r));
  c.data_bytes = L * (G - 1.0) / G * E * (in.expert_weight_bytes + in.expert_grad_bytes);
  return c;
}

Mode cheapest(const ModeCost& c) {
  Mode best = Mode::expert;
  double best_bytes = c.expert_bytes;
  if (c.model_bytes < best_bytes) {
    best = Mode::model;
    best_bytes = c.model_bytes;
  }
  if (c.data_bytes < best_bytes) best = Mode::data;
  return best;
}

}  // namespace tutel

namespace {

using tutel::Mode;

class TutelPolicy final : public Policy {
 public:
  TutelPolicy(const PolicyContext& ctx, Cfg& p) : Policy(ctx) {
    // source: tutel/impls/moe_layer.py, the gate's capacity_factor defaults to CAP_FACTOR or 1.0.
    capacity_factor_ = p.get_double("capacity_factor", 1.0, -1e6, 1e6);
    // source: moe_layer.py parallel_type 'adaptive:1' fixes r = 1 (expert); the switch is the
    // paper's point (section 3.2, adaptive_r per iteration), so moesim's default is auto.
    parallel_ = p.get_enum("parallel", "auto", {"auto", "expert", "model", "data"});
    // source: moe_layer.py use_2dh=False (2DH is opt-in; the README suggests it only at scale).
    use_2dh_ = p.get_bool("use_2dh", false);
    // source: moe_layer.py a2a_ffn_overlap_degree=1; in moesim it only aligns the capacity
    // (the overlap itself is the scenario's overlap.a2a_chunks).
    overlap_degree_ = p.get_int("a2a_ffn_overlap_degree", 1, 1, 1024);
    const int slots = ctx.gpus * ctx.slots_per_gpu;
    if (slots < ctx.experts || ctx.slots_per_gpu > ctx.experts) {
      p.fail("", fmt::format("tutel (static placement) needs at least one slot per expert and at most one slot per "
                             "expert on a GPU: {} GPUs x {} slots for {} experts",
                             ctx.gpus, ctx.slots_per_gpu, ctx.experts));
    }
    sharded_ = slots / ctx.experts;
    // Model mode shards every expert over the same number of holders (one compute share).
    model_ok_ = slots % ctx.experts == 0;
    if (!model_ok_ && parallel_ == "model") {
      p.fail("parallel", fmt::format("model needs every expert on the same number of holders: {} slots are not a "
                                     "multiple of {} experts", slots, ctx.experts));
    }
    replica_slots_.assign(static_cast<std::size_t>(ctx.experts), {});
    for (int slot = 0; slot < slots; ++slot) replica_slots_[static_cast<std::size_t>(slot % ctx.experts)].push_back(slot);
    // source: moe_layer.py routing(): alignment = sharded_count x a2a_ffn_overlap_degree, and
    // above 256 rounded up to a multiple of 128.
    alignment_ = static_cast<std::int64_t>(sharded_) * overlap_degree_;
    if (alignment_ > 256) alignment_ = (alignment_ + 127) / 128 * 128;
    mode_ = ran_mode_ = parallel_ == "model" ? Mode::model : parallel_ == "data" ? Mode::data : Mode::expert;
  }

  [[nodiscard]] std::string name() const override { return "tutel"; }

  [[nodiscard]] Placement initial_placement() override {
    Placement pl;
    pl.gpus = ctx_.gpus;
    pl.slots_per_gpu = ctx_.slots_per_gpu;
    std::vector<int> layout(static_cast<std::size_t>(pl.num_slots()));
    for (int slot = 0; slot < pl.num_slots(); ++slot) layout[static_cast<std::size_t>(slot)] = slot % ctx_.experts;
    pl.expert_of_slot.assign(static_cast<std::size_t>(ctx_.moe_layers), layout);
    return pl;
  }

  [[nodiscard]] std::int64_t layer_capacity(const std::int64_t* counts, int gpus) const {
    // x <= 0 needs the largest count of any source for any expert (Tutel all-reduces it, MAX).
    std::int64_t need = 0;
    const auto cells = static_cast<std::size_t>(gpus) * static_cast<std::size_t>(ctx_.experts);
    for (std::size_t i = 0; i < cells; ++i) need = std::max(need, counts[i]);
    return tutel::capacity(ctx_.tokens_per_gpu, ctx_.top_k, ctx_.experts, capacity_factor_, need, alignment_);
  }

  void dispatch(int /*layer*/, const std::int64_t* counts, const Placement& pl, LayerDispatch& out) override {
    const int E = ctx_.experts, G = pl.gpus, slots = pl.num_slots(), r = sharded_;
    out.reset(G, slots);
    const std::int64_t cap = layer_capacity(counts, G);
    for (int src = 0; src < G; ++src) {
      for (int e = 0; e < E; ++e) {
        const std::vector<int>& reps = replica_slots_[static_cast<std::size_t>(e)];
        const std::int64_t n = counts[static_cast<std::size_t>(src) * E + e];
        const std::int64_t acc = std::min(n, cap);
        out.routed += n;
        out.dropped += n - acc;
        const std::size_t row = static_cast<std::size_t>(src) * slots;
        if (mode_ == Mode::model) {
          // Every holder gets the whole padded buffer and computes 1/r of the width; the accepted
          // assignments are split over them for the books (each counts once).
          for (int k = 0; k < r; ++k) {
            const std::size_t idx = row + static_cast<std::size_t>(reps[static_cast<std::size_t>(k)]);
            out.buffered[idx] = cap;
            out.accepted[idx] = acc / r + (k < acc % r ? 1 : 0);
          }
        } else {
          // Expert and data mode: static's rule, source src to replica floor(src r_e / G) of the
          // expert's r_e, its own group's copy under whole groups.
          const auto r_e = static_cast<std::int64_t>(reps.size());
          const std::size_t idx =
              row + static_cast<std::size_t>(reps[static_cast<std::size_t>(static_cast<std::int64_t>(src) * r_e / G)]);
          out.buffered[idx] = cap;  // padded buffer, whatever the real load
          out.accepted[idx] = acc;
        }
      }
    }
    out.exchange = mode_ == Mode::data ? ExchangeAlgorithm::none
                   : use_2dh_          ? ExchangeAlgorithm::two_level
                                       : ExchangeAlgorithm::flat;
    out.compute_share = mode_ == Mode::model ? 1.0 / r : 1.0;
  }

  // The switch: the next iteration runs in the mode that moves the fewest bytes for this one's
  // counts (Tutel chooses r per iteration once the routing is known; moesim decides one
  // iteration ahead, as the policies' interface does).
  [[nodiscard]] PolicyDecision after_iteration(int, const IterationCounts& counts, const Placement&) override {
    ran_mode_ = mode_;
    if (parallel_ != "auto") return {};
    tutel::ModeInputs in;  // one source's buffer rows, summed over the layers
    for (int l = 0; l < ctx_.moe_layers; ++l)
      in.buffer_tokens += static_cast<double>(ctx_.experts) *
                          static_cast<double>(layer_capacity(counts.layer_ptr(l), counts.shape.gpus));
    in.token_bytes = static_cast<double>(ctx_.model->hidden) * dtype_bytes(ctx_.model->dtype);
    in.experts = ctx_.experts;
    in.slots_per_gpu = ctx_.slots_per_gpu;
    in.sharded = sharded_;
    in.gpus = ctx_.gpus;
    in.layers = ctx_.moe_layers;
    in.expert_weight_bytes = ctx_.expert_weight_bytes;
    in.expert_grad_bytes = ctx_.expert_grad_bytes;
    tutel::ModeCost cost = tutel::mode_costs(in);
    if (!model_ok_) cost.model_bytes = std::numeric_limits<double>::infinity();
    mode_ = tutel::cheapest(cost);
    return {};
  }

  [[nodiscard]] SyncPlan sync_plan(int, const Placement& current, const Placement&) override {
    // Tutel stores an expert as shards over its holders (experts/ffn.py), each owning 1/sharded
    // of the optimizer state. Expert mode gathers the shards before the experts run and
    // reduce-scatters the gradients after: ZeRO over the holders, as default_sync_plan shards.
    SyncPlan plan = default_sync_plan(ctx_, current, true);
    if (ran_mode_ == Mode::expert) return plan;
    // Model and data mode: the shards compute apart and need no reduction among themselves.
    plan.grad_collectives.clear();
    plan.post_collectives.clear();
    plan.replica_allreduce = false;
    if (ran_mode_ == Mode::data) {
      // experts/ffn.py, r = 0: every GPU all-gathers every expert (zero_gather over the group)
      // and the backward reduce-scatters the gradients; charged at the step (reconstruction).
      std::vector<int> all(static_cast<std::size_t>(ctx_.gpus));
      for (int g = 0; g < ctx_.gpus; ++g) all[static_cast<std::size_t>(g)] = g;
      for (int l = 0; l < ctx_.moe_layers; ++l) {
        plan.grad_collectives.push_back(
            {Collective::ReduceScatter, ctx_.experts * ctx_.expert_grad_bytes, all, "tutel data-parallel expert gradients"});
        plan.post_collectives.push_back(
            {Collective::AllGather, ctx_.experts * ctx_.expert_weight_bytes, all, "tutel data-parallel expert weights"});
      }
    }
    return plan;
  }

  [[nodiscard]] nlohmann::json parameters() const override {
    return {{"capacity_factor", capacity_factor_},
            {"parallel", parallel_},
            {"use_2dh", use_2dh_},
            {"a2a_ffn_overlap_degree", overlap_degree_},
            {"sharded_count", sharded_},
            {"capacity_alignment", alignment_},
            {"model_mode_possible", model_ok_}};
  }

 private:
  double capacity_factor_ = 1.0;
  std::string parallel_ = "auto";
  bool use_2dh_ = false;
  std::int64_t overlap_degree_ = 1;
  int sharded_ = 1;  // holders of each expert, floor(G S / E) (Tutel's sharded_count)
  bool model_ok_ = true;  // every expert has `sharded` holders (G S a multiple of E)
  std::vector<std::vector<int>> replica_slots_;  // [expert] -> its slots, ascending
  std::int64_t alignment_ = 1;
  Mode mode_ = Mode::expert;      // of the iteration being dispatched
  Mode ran_mode_ = Mode::expert;  // of the iteration after_iteration last closed
};

}  // namespace

PolicyInfo moesim_policy_tutel() {
  return {"tutel",
          "Tutel: adaptive capacity, per-iteration switch of data / expert / model parallelism, optional 2DH "
          "all-to-all (Hwang et al., MLSys 2023)",
          [](const PolicyContext& ctx, Cfg& p) -> std::unique_ptr<Policy> {
            return std::make_unique<TutelPolicy>(ctx, p);
          }};
}

}  // namespace moesim
