// Invariants every registered policy keeps, on random inputs: a new policy is covered by being
// registered. Shape: 2 nodes x 2 GPUs, 4 slots per GPU, 8 experts, 3 MoE layers (E/G = 2, so the
// policies that add shadow or copy slots get 2 of them).
#include <catch2/catch.hpp>

#include <random>

#include "policies/common.hpp"
#include "policies/registry.hpp"
#include "traces/cross_layer.hpp"

using namespace moesim;

namespace {

constexpr int kNodes = 2, kGpn = 2, kG = 4, kS = 4, kE = 8, kL = 3;
constexpr std::int64_t kTokens = 256;

struct World {
  ClusterSpec cluster;
  MoeModelSpec model;
  TrainingSpec training;
  PolicyContext ctx;
  World() {
    cluster.nodes = kNodes;
    cluster.gpus_per_node = kGpn;
    cluster.intra_node = IntraNode::NVSwitch;
    cluster.pcie_gbps = 32;
    cluster.nic_gbit = 200;
    cluster.nics_per_node = 2;
    cluster.nic_efficiency = 0.96;
    cluster.gpu.name = "test";
    cluster.gpu.peak_tflops = 312;
    cluster.gpu.gemm_efficiency = 0.7;
    cluster.gpu.hbm_gbps = 2000;
    cluster.gpu.nvlink_links = 12;
    cluster.gpu.nccl_nvlink_link_gbps = 20;
    model.layers = kL;
    model.hidden = 256;
    model.heads = 4;
    model.kv_heads = 4;
    model.head_dim = 64;
    model.ffn_hidden = 1024;
    model.expert_ffn_hidden = 1024;
    model.experts = kE;
    model.top_k = 2;
    model.vocab = 1000;
    model.seq_len = 128;
    model.micro_batch_per_gpu = 2;
    ctx.cluster = &cluster;
    ctx.model = &model;
    ctx.training = &training;
    ctx.gpus = kG;
    ctx.slots_per_gpu = kS;
    ctx.moe_layers = kL;
    ctx.experts = kE;
    ctx.tokens_per_gpu = kTokens;
    ctx.top_k = 2;
    ctx.expert_params = model.expert_params();
    ctx.expert_weight_bytes = ctx.expert_params * 2;
    ctx.expert_grad_bytes = ctx.expert_params * 2;
    ctx.expert_optimizer_bytes = ctx.expert_params * 12;
    ctx.seed = 7;
    // A cross-layer profile for the affinity placements (exflow, moetuner); the others ignore it.
    SyntheticTraceSpec spec;
    spec.seed = 7;
    pairs = synthetic_cross_layer(TraceShape{kL, 1, kE}, spec, 0.7);
    ctx.cross_layer = &pairs;
  }
  CrossLayerPairs pairs;
};

// Random skewed counts: each (layer, source) draws kTokens * k assignments with a hot expert
// that changes every few iterations.
void random_counts(std::mt19937_64& rng, int it, IterationCounts& c) {
  c.reset({kL, kG, kE});
  for (int l = 0; l < kL; ++l) {
    const int hot = static_cast<int>((it / 3 + l) % kE);
    for (int g = 0; g < kG; ++g) {
      std::int64_t left = kTokens * 2;
      for (int e = 0; e < kE; ++e) {
        std::int64_t n = e == kE - 1 ? left : std::min<std::int64_t>(left, static_cast<std::int64_t>(rng() % 40) + (e == hot ? 200 : 0));
        c.at(l, g, e) = n;
        left -= n;
      }
    }
  }
}

void check_placement(const std::string& name, const Placement& p) {
  INFO("policy " << name);
  REQUIRE(p.gpus == kG);
  REQUIRE(p.slots_per_gpu == kS);
  REQUIRE(p.expert_of_slot.size() == static_cast<std::size_t>(kL));
  for (const auto& layer : p.expert_of_slot) {
    REQUIRE(layer.size() == static_cast<std::size_t>(kG * kS));
    std::vector<int> replicas(kE, 0);
    for (int e : layer) {
      REQUIRE(e >= -1);
      REQUIRE(e < kE);
      if (e >= 0) replicas[e]++;
    }
    for (int e = 0; e < kE; ++e) REQUIRE(replicas[e] >= 1);
  }
}

}  // namespace

TEST_CASE("every policy keeps the invariants on random inputs", "[policies][invariants]") {
  World w;
  for (const PolicyInfo& info : policy_registry()) {
    INFO("policy " << info.name);
    YAML::Node params = YAML::Load("{name: " + info.name + "}");
    Cfg cfg(params, "test.yaml", "policies[0]");
    std::unique_ptr<Policy> policy = make_policy(w.ctx, cfg);
    std::unique_ptr<Policy> twin = make_policy(w.ctx, cfg);
    Placement pl = policy->initial_placement();
    check_placement(info.name, pl);
    REQUIRE(twin->initial_placement().expert_of_slot == pl.expert_of_slot);
    std::mt19937_64 rng(2024);
    IterationCounts counts;
    const bool fungible = info.name == "oracle";  // the bound spreads tokens over all slots
    // Router-side policies (policies/router_model.hpp) send assignments to other experts than the
    // gate chose, take some out (null experts) and add quality-equivalent drops: per source they
    // never process more than it routed (expertchoice may: a token can get several experts).
    const bool redirects = policy->parameters().value("redirects", false);
    for (int it = 0; it < 40; ++it) {
      random_counts(rng, it, counts);
      for (int l = 0; l < kL; ++l) {
        LayerDispatch d, d2;
        policy->dispatch(l, counts.layer_ptr(l), pl, d);
        twin->dispatch(l, counts.layer_ptr(l), pl, d2);
        REQUIRE(d.accepted == d2.accepted);  // deterministic
        std::int64_t routed = 0, accepted = 0;
        for (int g = 0; g < kG; ++g)
          for (int e = 0; e < kE; ++e) routed += counts.at(l, g, e);
        for (std::size_t i = 0; i < d.accepted.size(); ++i) {
          REQUIRE(d.accepted[i] >= 0);
          REQUIRE(d.accepted[i] <= d.buffered[i]);
          accepted += d.accepted[i];
        }
        // Tokens conserved.
        REQUIRE(d.routed == routed);
        if (redirects) {
          REQUIRE(d.dropped >= 0);
          REQUIRE(accepted <= routed);
          REQUIRE(d.dropped <= routed);
          // A slot only takes tokens of the expert it holds.
          for (int g = 0; g < kG; ++g)
            for (int s = 0; s < kG * kS; ++s)
              if (d.accepted[static_cast<std::size_t>(g) * kG * kS + s] > 0) REQUIRE(pl.expert_of_slot[l][s] >= 0);
          continue;
        }
        REQUIRE(accepted + d.dropped == routed);
        if (!fungible) {
          // A slot only takes tokens of the expert it holds, and never more than were sent.
          for (int g = 0; g < kG; ++g) {
            std::vector<std::int64_t> per_expert(kE, 0);
            for (int s = 0; s < kG * kS; ++s) {
              const std::int64_t n = d.accepted[static_cast<std::size_t>(g) * kG * kS + s];
              if (n == 0) continue;
              const int e = pl.expert_of_slot[l][s];
              REQUIRE(e >= 0);
              per_expert[e] += n;
            }
            for (int e = 0; e < kE; ++e) REQUIRE(per_expert[e] <= counts.at(l, g, e));
          }
        }
      }
      PolicyDecision dec = policy->after_iteration(it, counts, pl);
      PolicyDecision dec2 = twin->after_iteration(it, counts, pl);
      REQUIRE(dec.new_placement == dec2.new_placement);
      const Placement next = dec.new_placement ? dec.placement : pl;
      check_placement(info.name, next);
      // Movement bytes are what the placement change implies: the weights of every slot whose
      // expert changed and that no GPU already holding it can fill locally, with or without the
      // optimizer state.
      double moved = 0.0;
      for (const Movement& m : dec.movements) {
        REQUIRE(m.transfer.bytes > 0.0);
        REQUIRE(!m.transfer.dst.host);
        moved += m.transfer.bytes;
      }
      if (!dec.movements.empty()) {
        double weights = 0.0, with_opt = 0.0;
        for (const Movement& m : placement_moves(w.ctx, pl, next, false, true)) weights += m.transfer.bytes;
        for (const Movement& m : placement_moves(w.ctx, pl, next, true, true)) with_opt += m.transfer.bytes;
        CHECK((moved == Approx(weights) || moved == Approx(with_opt)));
      }
      SyncPlan sp = policy->sync_plan(it, pl, next);
      for (const CollectiveOp& op : sp.pre_collectives) REQUIRE(op.bytes >= 0.0);
      if (!sp.gpu_optimizer_params.empty()) REQUIRE(sp.gpu_optimizer_params.size() == static_cast<std::size_t>(kG));
      if (!sp.host_optimizer_params.empty()) REQUIRE(sp.host_optimizer_params.size() == static_cast<std::size_t>(kNodes));
      (void)twin->sync_plan(it, pl, next);
      pl = next;
    }
  }
}
