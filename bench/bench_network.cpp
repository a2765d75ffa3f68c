// Network model speed: one all-to-all-v over 256 GPUs (32 DGX-H100 nodes), flow-level and
// analytical, for a uniform matrix (1 MiB per GPU pair) and a skewed one from the synthetic
// trace (one expert per GPU, Zipf(1) popularity). Targets: flow <= 100 ms, analytical <= 1 ms.
// The same on the dgx-h100-fat-tree preset (32 nodes on a rail-optimised 2:1 fat tree with 8
// spines: each message between leaves is split over 8 equal-cost paths).
#include <benchmark/benchmark.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "app/scenario.hpp"
#include "sim/flow_network.hpp"
#include "traces/trace.hpp"

using namespace moesim;

namespace {

struct NetWorld {
  Scenario s;
  std::unique_ptr<Cluster> cluster;
  std::unique_ptr<AnalyticalNetwork> analytical;
  std::unique_ptr<FlowNetwork> flow;
  std::vector<double> uniform, skewed, balanced;
  explicit NetWorld(const std::string& cluster_yaml) {
    s = load_scenario_text(
        "cluster: " + cluster_yaml +
            "\nmodel: {preset: mixtral-8x7b}\nplacement: {slots_per_gpu: 1}\npolicies: [static]\n",
        "<bench>", {}, std::nullopt);
    cluster = std::make_unique<Cluster>(s.cluster);
    analytical = std::make_unique<AnalyticalNetwork>(*cluster);
    flow = std::make_unique<FlowNetwork>(*cluster);
    const int g = cluster->num_gpus();
    const auto n = static_cast<std::size_t>(g);
    uniform.assign(n * n, 0.0);
    for (std::size_t a = 0; a < n; ++a)
      for (std::size_t b = 0; b < n; ++b)
        if (a != b) uniform[a * n + b] = 1 << 20;
    skewed = dispatch(1.0);
    balanced = dispatch(0.0);
    // Routes are computed on first use; the benchmarks time the steady state.
    (void)analytical->all_to_all_v(uniform);
    (void)flow->all_to_all_v(uniform);
  }
  [[nodiscard]] std::vector<double> dispatch(double skew) const;
};

// Dispatch of one layer: GPU g hosts expert g; each GPU's tokens pick experts by Zipf(skew)
// popularity (multinomial counts, so no two pairs carry quite the same bytes).
std::vector<double> NetWorld::dispatch(double skew) const {
  const int g = cluster->num_gpus();
  const auto n = static_cast<std::size_t>(g);
  const TraceShape shape{1, g, g};
  SyntheticTraceSpec spec;
  spec.tokens_per_gpu = s.model.tokens_per_gpu();
  spec.top_k = s.model.top_k;
  spec.skew = skew;
  auto trace = make_synthetic_trace(shape, spec);
  IterationCounts counts;
  counts.reset(shape);
  trace->next(counts);
  const double token_bytes = static_cast<double>(s.model.hidden) * dtype_bytes(s.model.dtype);
  std::vector<double> m(n * n, 0.0);
  for (int a = 0; a < g; ++a)
    for (int b = 0; b < g; ++b)
      if (a != b) m[static_cast<std::size_t>(a) * n + static_cast<std::size_t>(b)] = static_cast<double>(counts.at(0, a, b)) * token_bytes;
  return m;
}

NetWorld& world() {
  static NetWorld w("{preset: dgx-h100, nodes: 32}");
  return w;
}
NetWorld& fat_tree_world() {
  static NetWorld w("{preset: dgx-h100-fat-tree}");
  return w;
}

void run(benchmark::State& state, NetWorld& w, bool is_flow, const std::vector<double>& bytes) {
  const NetworkModel& net = is_flow ? static_cast<const NetworkModel&>(*w.flow) : *w.analytical;
  TimeNs t = 0;
  for (auto _ : state) {
    t = net.all_to_all_v(bytes);
    benchmark::DoNotOptimize(t);
  }
  state.counters["simulated_ms"] = ns_to_ms(t);
  if (is_flow) {
    const auto& st = w.flow->last_run();
    state.counters["flows"] = static_cast<double>(st.flows);
    state.counters["events"] = static_cast<double>(st.events);
    state.counters["resolved"] = static_cast<double>(st.resolved);
  }
  state.counters["analytical_ms"] = ns_to_ms(w.analytical->all_to_all_v(bytes));
}

void BM_A2A_Flow_Uniform(benchmark::State& state) { run(state, world(), true, world().uniform); }
void BM_A2A_Flow_Skewed(benchmark::State& state) { run(state, world(), true, world().skewed); }
// Outside the targets: a near-uniform random matrix keeps every link full at nearly
// equal shares, so each batch of ends re-shares almost every flow (see docs/network.md).
void BM_A2A_Flow_Balanced(benchmark::State& state) { run(state, world(), true, world().balanced); }
void BM_A2A_Analytical_Uniform(benchmark::State& state) { run(state, world(), false, world().uniform); }
void BM_A2A_Analytical_Skewed(benchmark::State& state) { run(state, world(), false, world().skewed); }
void BM_A2A_FatTree_Flow_Uniform(benchmark::State& state) {
  run(state, fat_tree_world(), true, fat_tree_world().uniform);
}
void BM_A2A_FatTree_Flow_Skewed(benchmark::State& state) {
  run(state, fat_tree_world(), true, fat_tree_world().skewed);
}
void BM_A2A_FatTree_Analytical_Uniform(benchmark::State& state) {
  run(state, fat_tree_world(), false, fat_tree_world().uniform);
}
void BM_A2A_FatTree_Analytical_Skewed(benchmark::State& state) {
  run(state, fat_tree_world(), false, fat_tree_world().skewed);
}

}  // namespace

BENCHMARK(BM_A2A_Flow_Uniform)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_A2A_Flow_Skewed)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_A2A_Flow_Balanced)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_A2A_Analytical_Uniform)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_A2A_Analytical_Skewed)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_A2A_FatTree_Flow_Uniform)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_A2A_FatTree_Flow_Skewed)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_A2A_FatTree_Analytical_Uniform)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_A2A_FatTree_Analytical_Skewed)->Unit(benchmark::kMillisecond);
