// FasterMoE dynamic shadowing (He et al., "FasterMoE: Modeling and Optimizing Training of
// Large-Scale Dynamic Pre-Trained Models", PPoPP 2022; policy of laekov/fastmoe,
// fmoe/fastermoe/shadow_policy.py). Static expert parallelism (E/G experts per GPU, no static
// replication, dropless all-to-all-v of the real counts) plus, in every iteration and every MoE
// layer, a set of "shadowed" hot experts whose parameters are broadcast to every GPU: each GPU
// then computes its own tokens of a shadowed expert, and the shadows' gradients are reduced back
// to the owner, which alone keeps the optimizer state.
//
// The shadow set follows FasterMoE's performance model. Per token: compute = 2 P / F (P = one
// expert's parameters, 4 a d^2 for a two-matrix FFN; F = GEMM FLOP/s), feature send =
// b d / BW_net; one expert's parameters: b P / BW_net (b = 4-byte elements, as FasterMoE's code).
// With B_i the (i+1)-th largest global expert count, shadowing the i hottest experts leaves the
// latency i * param_send + 3 * compute * B_i + 4 * send * B_i; experts are added while that
// improves.
//
// moesim's slots are fixed, so a GPU has E/G owner slots plus `shadow_slots` shadow slots. Shadow
// slot j of every GPU holds the layer's j-th hottest shadowed expert (empty on its owner, whose
// owner slot already holds it). A placement is fixed before its iteration's dispatch, so the set
// used in iteration t+1 is decided from the counts of iteration t (after_iteration). The
// broadcast of the shadows and the reduction of their gradients are charged in the iteration
// that uses them, as collectives of its sync plan, so after_iteration returns no movements.
#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include "policies/capacity.hpp"
#include "policies/common.hpp"
#include "policies/registry.hpp"

namespace moesim {
namespace {

class FasterMoePolicy final : public Policy {
 public:
  FasterMoePolicy(const PolicyContext& ctx, Cfg& p) : Policy(ctx) {
    const int E = ctx.experts, G = ctx.gpus;
    // Reconstruction: moesim's slot budget is fixed, so the number of experts shadowed per layer
    // is capped by the shadow slots every GPU reserves (FasterMoE itself has no cap). By default
    // every slot beyond experts / gpus holds shadows, so FasterMoE takes whatever slot budget the
    // comparison gives every policy; a smaller shadow_slots leaves the rest empty.
    const int spare = G > 0 ? ctx.slots_per_gpu - E / std::max(G, 1) : 0;
    shadow_slots_ = static_cast<int>(p.get_int("shadow_slots", std::max(spare, 0), 0, std::max(E, 1)));
    // source: FastMoE is dropless (all-to-all-v of the exact counts): 0 means no capacity. A
    // value > 0 applies DeepSpeed-MoE's per-(source, expert) capacity, without padding.
    capacity_factor_ = p.get_double("capacity_factor", 0.0, 0.0, 1e6);
    // source: DeepSpeed-MoE's default min_capacity (deepspeed/moe/layer.py); only with capacity_factor > 0.
    min_capacity_ = p.get_int("min_capacity", 4, 0, 1LL << 40);
    // source: laekov/fastmoe shadow_policy.py, `data_size = 4` (fp32 features and parameters).
    cost_element_bytes_ = p.get_double("cost_element_bytes", 4.0, 1.0, 8.0);
    // Reconstruction: moesim has no Reduce collective; NCCL's tuning model prices Reduce like
    // Broadcast (a pipelined chain, bus factor 1), so `broadcast` prices the reduce to the owner
    // exactly; `allreduce` is the conservative stand-in (about twice the time).
    reduce_as_ = p.get_enum("gradient_reduce_as", "broadcast", {"broadcast", "allreduce"});

    if (E < G || E % G != 0) {
      p.fail("", fmt::format("fastermoe places experts / gpus experts on every GPU (FastMoE's num_expert per "
                             "worker): the {} experts must be a multiple of the {} GPUs",
                             E, G));
    }
    base_slots_ = E / G;
    if (ctx.slots_per_gpu < base_slots_ + shadow_slots_) {
      std::string hint;
      if (ctx.slots_per_gpu >= base_slots_)
        hint = fmt::format(" or shadow_slots: {}", ctx.slots_per_gpu - base_slots_);
      p.fail(
          "shadow_slots",
          fmt::format(
              "fastermoe needs placement.slots_per_gpu >= experts / gpus + shadow_slots = {} / {} + {} = {}, "
              "but it is {}: FasterMoE has no static replication, the slots beyond experts / gpus hold "
              "the per-iteration shadows; set placement.slots_per_gpu: {}{}",
              E, G, shadow_slots_, base_slots_ + shadow_slots_, ctx.slots_per_gpu,
              base_slots_ + shadow_slots_, hint));
    }

    // FasterMoE's model inputs from the scenario: F = the GEMM throughput of the roofline, BW_net
    // = one GPU's share of the node's NICs (on one node: the intra-node link the tokens cross).
    const ClusterSpec& cl = *ctx.cluster;
    gemm_flops_ = cl.gpu.peak_tflops * 1e12 * cl.gpu.gemm_efficiency;
    net_bytes_per_s_ = (cl.nodes > 1 ? cl.nic_gbps() : cl.intra_gbps()) * 1e9;
    if (G > 1 && !(net_bytes_per_s_ > 0.0)) {
      p.fail("",
             "fastermoe's cost model needs the network bandwidth between GPUs: the cluster has none "
             "(set cluster.nic_gbit and nics_per_node, or an intra_node link on one node)");
    }
    if (!(gemm_flops_ > 0.0)) p.fail("", "fastermoe's cost model needs cluster.gpu.peak_tflops > 0");
    const double d = ctx.model->hidden;
    comp_s_ = 2.0 * ctx.expert_params / gemm_flops_;  // 4 a d^2 / F for two matrices
    send_s_ = net_bytes_per_s_ > 0.0 ? cost_element_bytes_ * d / net_bytes_per_s_ : 0.0;
    param_s_ = net_bytes_per_s_ > 0.0 ? cost_element_bytes_ * ctx.expert_params / net_bytes_per_s_ : 0.0;

    base_.gpus = G;
    base_.slots_per_gpu = ctx.slots_per_gpu;
    std::vector<int> layout(static_cast<std::size_t>(base_.num_slots()), -1);
    for (int g = 0; g < G; ++g)
      for (int s = 0; s < base_slots_; ++s)
        layout[static_cast<std::size_t>(g * ctx.slots_per_gpu + s)] = g * base_slots_ + s;
    base_.expert_of_slot.assign(static_cast<std::size_t>(ctx.moe_layers), layout);
  }

  [[nodiscard]] std::string name() const override { return "fastermoe"; }

  // Iteration 0 has no shadows: no counts have been seen yet.
  [[nodiscard]] Placement initial_placement() override { return base_; }

  // Each source sends an expert's tokens to the replica on its own GPU when there is one (a
  // shadow, or the owner itself), otherwise to the expert's first replica (its owner).
  void dispatch(int layer, const std::int64_t* counts, const Placement& pl, LayerDispatch& out) override {
    const int E = ctx_.experts, G = pl.gpus, slots = pl.num_slots();
    out.reset(G, slots);
    const auto replicas = expert_slots(pl, layer, E);
    const std::int64_t cap = capacity_factor_ > 0.0 ? deepspeed_capacity(ctx_.tokens_per_gpu, ctx_.top_k, E,
                                                                         capacity_factor_, min_capacity_)
                                                    : -1;
    for (int src = 0; src < G; ++src) {
      for (int e = 0; e < E; ++e) {
        const std::int64_t n = counts[static_cast<std::size_t>(src) * E + e];
        out.routed += n;
        const auto& reps = replicas[static_cast<std::size_t>(e)];
        if (reps.empty()) {
          out.dropped += n;
          continue;
        }
        int target = reps.front();
        for (int s : reps)
          if (pl.gpu_of_slot(s) == src) {
            target = s;
            break;
          }
        const std::int64_t acc = cap < 0 ? n : std::min(n, cap);
        const std::size_t idx = static_cast<std::size_t>(src) * slots + target;
        out.accepted[idx] += acc;
        out.buffered[idx] += acc;  // all-to-all-v of the real counts: no padding
        out.dropped += n - acc;
      }
    }
  }

  [[nodiscard]] PolicyDecision after_iteration(int, const IterationCounts& counts,
                                               const Placement& current) override {
    PolicyDecision dec;
    dec.placement = base_;
    const int S = ctx_.slots_per_gpu;
    for (int l = 0; l < ctx_.moe_layers; ++l) {
      const std::vector<int> shadows =
          choose_shadows(expert_loads(counts.layer_ptr(l), ctx_.gpus, ctx_.experts));
      auto& layout = dec.placement.expert_of_slot[static_cast<std::size_t>(l)];
      for (std::size_t j = 0; j < shadows.size(); ++j) {
        const int e = shadows[j];
        const int owner = e / base_slots_;
        for (int g = 0; g < ctx_.gpus; ++g)
          if (g != owner) layout[static_cast<std::size_t>(g * S + base_slots_) + j] = e;
      }
    }
    dec.new_placement = dec.placement.expert_of_slot != current.expert_of_slot;
    // No movements: the shadows' weights are broadcast (and their gradients reduced) inside the
    // iteration that uses them, see sync_plan.
    return dec;
  }

  // The owners keep every expert's optimizer state; each shadowed expert of `current` costs a
  // broadcast of its weights from the owner and a reduction of its gradients to the owner, over
  // the GPUs that hold it (all of them).
  [[nodiscard]] SyncPlan sync_plan(int, const Placement& current, const Placement&) override {
    // A function of `current` alone (the rest is fixed at construction), and the shadows often
    // stay for many iterations: the last plan is returned while they do.
    if (!plan_of_.expert_of_slot.empty() && plan_of_.slots_per_gpu == current.slots_per_gpu &&
        plan_of_.expert_of_slot == current.expert_of_slot)
      return last_plan_;
    last_plan_ = build_sync_plan(current);
    plan_of_ = current;
    return last_plan_;
  }

  [[nodiscard]] SyncPlan build_sync_plan(const Placement& current) const {
    SyncPlan plan = default_sync_plan(ctx_, base_, false);
    plan.replica_allreduce = false;
    const Collective reduce_kind = reduce_as_ == "allreduce" ? Collective::AllReduce : Collective::Broadcast;
    for (int l = 0; l < static_cast<int>(current.expert_of_slot.size()); ++l) {
      const auto slots_of = expert_slots(current, l, ctx_.experts);
      for (int e = 0; e < ctx_.experts; ++e) {
        std::vector<int> gpus;
        for (int s : slots_of[static_cast<std::size_t>(e)]) gpus.push_back(current.gpu_of_slot(s));
        std::sort(gpus.begin(), gpus.end());
        gpus.erase(std::unique(gpus.begin(), gpus.end()), gpus.end());
        if (gpus.size() < 2) continue;
        plan.pre_collectives.push_back(
            {Collective::Broadcast, ctx_.expert_weight_bytes, gpus,
             fmt::format("layer {} expert {} shadow weights (broadcast from owner)", l, e)});
        plan.grad_collectives.push_back(
            {reduce_kind, ctx_.expert_grad_bytes, gpus,
             fmt::format("layer {} expert {} shadow gradients (reduce to owner)", l, e)});
      }
    }
    return plan;
  }

  [[nodiscard]] nlohmann::json parameters() const override {
    return {{"shadow_slots", shadow_slots_},        {"capacity_factor", capacity_factor_},
            {"min_capacity", min_capacity_},        {"cost_element_bytes", cost_element_bytes_},
            {"gradient_reduce_as", reduce_as_},     {"experts_per_gpu", base_slots_},
            {"model_gemm_flops", gemm_flops_},      {"model_net_bytes_per_s", net_bytes_per_s_},
            {"model_compute_s_per_token", comp_s_}, {"model_send_s_per_token", send_s_},
            {"model_param_send_s", param_s_}};
  }

 private:
  // FasterMoE's greedy: experts by load descending (ties to the lower index); shadow the i
  // hottest while i * param_send + (3 compute + 4 send) * B_i keeps decreasing.
  [[nodiscard]] std::vector<int> choose_shadows(const std::vector<std::int64_t>& load) const {
    const int E = static_cast<int>(load.size());
    std::vector<int> order(static_cast<std::size_t>(E));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      return load[static_cast<std::size_t>(a)] > load[static_cast<std::size_t>(b)];
    });
    const double per_token = 3.0 * comp_s_ + 4.0 * send_s_;
    auto latency = [&](int i) {
      const std::int64_t b = i < E ? load[static_cast<std::size_t>(order[static_cast<std::size_t>(i)])] : 0;
      return static_cast<double>(i) * param_s_ + per_token * static_cast<double>(b);
    };
    double best = latency(0);
    int n = 0;
    for (int i = 1; i <= std::min(shadow_slots_, E); ++i) {
      const double lat = latency(i);
      if (!(lat < best)) break;
      best = lat;
      n = i;
    }
    return {order.begin(), order.begin() + n};
  }

  int shadow_slots_ = 2;
  int base_slots_ = 1;
  double capacity_factor_ = 0.0;
  std::int64_t min_capacity_ = 4;
  double cost_element_bytes_ = 4.0;
  std::string reduce_as_ = "broadcast";
  double gemm_flops_ = 0.0;
  double net_bytes_per_s_ = 0.0;
  double comp_s_ = 0.0;
  double send_s_ = 0.0;
  double param_s_ = 0.0;
  Placement base_;
  Placement plan_of_;  // the placement last_plan_ is sync_plan's of
  SyncPlan last_plan_;
};

}  // namespace

PolicyInfo moesim_policy_fastermoe() {
  return {
      "fastermoe",
      "FasterMoE dynamic shadowing: static EP, hot experts broadcast to every GPU per iteration by a cost "
      "model (He et al., PPoPP 2022)",
      [](const PolicyContext& ctx, Cfg& p) -> std::unique_ptr<Policy> {
        return std::make_unique<FasterMoePolicy>(ctx, p);
      }};
}

}  // namespace moesim
