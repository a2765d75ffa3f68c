// Policy decision time at scale, and the SwiftMoE comparison with every policy.
#include <benchmark/benchmark.h>

#include <memory>
#include <string>
#include <vector>

#include "app/runner.hpp"
#include "policies/common.hpp"
#include "policies/eplb.hpp"
#include "policies/registry.hpp"

using namespace moesim;

namespace {

// 256 experts x 58 MoE layers (DeepSeek-V3's shape) on 2,048 GPUs (256 DGX-H100 nodes), 2 slots
// per GPU (16 replicas per expert on average).
struct ScaleWorld {
  Scenario s;
  PolicyContext ctx;
  IterationCounts counts;
  ScaleWorld() {
    s = load_scenario_text(
        "cluster: {preset: dgx-h100, nodes: 256}\nmodel: {preset: deepseek-v3, micro_batch_per_gpu: 1}\n"
        "placement: {slots_per_gpu: 2}\ntraining: {optimizer_offload: true}\npolicies: [static]\n",
        "<bench>", {}, std::nullopt);
    ctx.cluster = &s.cluster;
    ctx.model = &s.model;
    ctx.training = &s.training;
    ctx.gpus = s.cluster.num_gpus();
    ctx.slots_per_gpu = s.slots_per_gpu;
    ctx.moe_layers = s.model.num_moe_layers();
    ctx.experts = s.model.experts;
    ctx.tokens_per_gpu = s.model.tokens_per_gpu();
    ctx.top_k = s.model.top_k;
    ctx.expert_params = s.model.expert_params();
    ctx.expert_weight_bytes = ctx.expert_params * 2;
    ctx.expert_grad_bytes = ctx.expert_params * 2;
    ctx.expert_optimizer_bytes = ctx.expert_params * 12;
    const TraceShape shape{ctx.moe_layers, ctx.gpus, ctx.experts};
    SyntheticTraceSpec spec;
    spec.tokens_per_gpu = ctx.tokens_per_gpu;
    spec.top_k = ctx.top_k;
    spec.skew = 1.0;
    auto trace = make_synthetic_trace(shape, spec);
    counts.reset(shape);
    trace->next(counts);
  }
};

ScaleWorld& world() {
  static ScaleWorld w;
  return w;
}

std::unique_ptr<Policy> build(benchmark::State& state, const std::string& spec) {
  try {
    YAML::Node n = YAML::Load(spec);
    Cfg c(n, "<bench>", "policy");
    return make_policy(world().ctx, c);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return nullptr;
  }
}

// after_iteration: the placement decision from one iteration's counts, per MoE layer.
void BM_PolicyDecision(benchmark::State& state, const std::string& spec) {
  ScaleWorld& w = world();
  auto policy = build(state, spec);
  if (!policy) return;
  const Placement pl = policy->initial_placement();
  int it = 0;
  for (auto _ : state) {
    PolicyDecision d = policy->after_iteration(it++, w.counts, pl);
    benchmark::DoNotOptimize(d);
  }
  // Seconds per layer decision (printed with an SI prefix: 650u = 0.65 ms).
  state.counters["s_per_layer"] = benchmark::Counter(static_cast<double>(state.iterations()) * w.ctx.moe_layers,
                                                     benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

// sync_plan: building the iteration's gradient and weight flows, per MoE layer.
void BM_PolicySyncPlan(benchmark::State& state, const std::string& spec) {
  ScaleWorld& w = world();
  auto policy = build(state, spec);
  if (!policy) return;
  const Placement pl = policy->initial_placement();
  for (auto _ : state) {
    SyncPlan sp = policy->sync_plan(0, pl, pl);
    benchmark::DoNotOptimize(sp);
  }
  state.counters["s_per_layer"] = benchmark::Counter(static_cast<double>(state.iterations()) * w.ctx.moe_layers,
                                                     benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

// The EPLB planner alone on one layer (the scale world's first layer's loads): 256 experts on
// 2,048 GPUs x 2 slots, with the global policy or the hierarchical one (8 groups on 8 nodes).
void BM_EplbPlan(benchmark::State& state, int groups, int nodes) {
  ScaleWorld& w = world();
  const auto loads = expert_loads(w.counts.layer_ptr(0), w.ctx.gpus, w.ctx.experts);
  std::vector<double> weight(loads.size());
  for (std::size_t e = 0; e < loads.size(); ++e) weight[e] = static_cast<double>(loads[e]);
  const int slots = w.ctx.gpus * w.ctx.slots_per_gpu;
  eplb::Planner planner;
  for (auto _ : state) {
    const eplb::LayerPlan& plan = planner.rebalance(weight, slots, groups, nodes, w.ctx.gpus);
    benchmark::DoNotOptimize(plan.phy2log.data());
  }
}

// Every policy of the SwiftMoE scenario, each until it converges.
void BM_SwiftMoeAllPolicies(benchmark::State& state) {
  Scenario s = load_scenario(std::string(MOESIM_SOURCE_DIR) + "/scenarios/swiftmoe-gpt-small.yaml", {}, std::nullopt);
  std::int64_t iterations = 0;
  for (auto _ : state) {
    auto r = run_scenario(s);
    iterations = 0;
    for (const auto& p : r) iterations += p.iterations_run;
    benchmark::DoNotOptimize(r);
  }
  state.counters["policies"] = static_cast<double>(s.policies.size());
  state.counters["simulated_iterations"] = static_cast<double>(iterations);
}

}  // namespace

BENCHMARK_CAPTURE(BM_PolicyDecision, static, std::string("{name: static}"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PolicyDecision, symi, std::string("{name: symi}"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PolicyDecision, eplb, std::string("{name: eplb, interval: 1}"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PolicyDecision, flexmoe, std::string("{name: flexmoe, interval: 1}"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PolicyDecision, smartmoe, std::string("{name: smartmoe, interval: 1}"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PolicyDecision, lazarus, std::string("{name: lazarus, interval: 1}"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PolicyDecision, prophet, std::string("{name: prophet}"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PolicyDecision, oracle, std::string("{name: oracle}"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PolicySyncPlan, static, std::string("{name: static}"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_PolicySyncPlan, symi, std::string("{name: symi}"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_EplbPlan, global, 1, 1)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_EplbPlan, hierarchical, 8, 8)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SwiftMoeAllPolicies)->Unit(benchmark::kMillisecond)->Iterations(2);
