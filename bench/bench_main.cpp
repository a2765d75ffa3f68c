// Benchmarks: `build/moesim_bench` (Google Benchmark). Figures are reported in the notes, never
// asserted by unit tests.
#include <benchmark/benchmark.h>

#include <string>

#include "app/runner.hpp"
#include "sim/engine.hpp"

using namespace moesim;

// Raw engine throughput: a steady population of `range(0)` pending events, each handler
// rescheduling itself a pseudo-random delay later. Reports events/s.
static void BM_EngineEvents(benchmark::State& state) {
  const int population = static_cast<int>(state.range(0));
  const std::uint64_t total = 1'000'000;
  for (auto _ : state) {
    Engine e;
    std::uint64_t remaining = total;
    std::uint64_t x = 88172645463325252ULL;
    std::function<void(Engine&)> h = [&](Engine& en) {
      if (remaining == 0) return;
      --remaining;
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      en.schedule_in(static_cast<TimeNs>(x % 1000), h);
    };
    for (int i = 0; i < population; ++i) e.schedule_at(i, h);
    benchmark::DoNotOptimize(e.run());
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * (total + population)));
  state.counters["events_per_s"] = benchmark::Counter(static_cast<double>(state.iterations() * (total + population)),
                                                      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_EngineEvents)->Arg(16)->Arg(1024)->Arg(65536)->Unit(benchmark::kMillisecond);

// The SwiftMoE paper scenario (16 GPUs, 12 MoE layers, 16 experts x 4 slots) for 2,000
// iterations with `static`, trace generation and every output row included.
static void BM_SwiftMoeStatic2000(benchmark::State& state) {
  Scenario s = load_scenario(std::string(MOESIM_SOURCE_DIR) + "/scenarios/swiftmoe-gpt-small.yaml",
                             {"run.max_iterations=2000", "run.stop_at_convergence=false"}, std::nullopt);
  s.policies = parse_policy_specs("static:capacity_factor=1.0:min_capacity=2");
  std::uint64_t events = 0;
  for (auto _ : state) {
    auto r = run_scenario(s);
    events = r.at(0).events;
    benchmark::DoNotOptimize(r);
  }
  state.counters["events"] = static_cast<double>(events);
  state.counters["iterations_per_s"] = benchmark::Counter(2000.0 * static_cast<double>(state.iterations()),
                                                          benchmark::Counter::kIsRate);
}
BENCHMARK(BM_SwiftMoeStatic2000)->Unit(benchmark::kMillisecond)->Iterations(3);

BENCHMARK_MAIN();
