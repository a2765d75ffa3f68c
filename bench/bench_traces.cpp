// Trace statistics throughput and synthetic generator speed. Run e.g.
//   build/moesim_bench --benchmark_filter='TraceStats|Synthetic'
// (BM_BinaryTraceStream, reading a 1 GB binary trace, is in bench_scale.cpp)
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <vector>

#include "traces/stats.hpp"
#include "traces/trace.hpp"

using namespace moesim;

namespace {

// DeepSeek-V3's MoE shape on 256 GPUs: 58 layers x 256 GPUs x 256 experts of int64 counts, 30.4 MB
// per iteration. A few distinct iterations, so consecutive updates see different loads.
struct BigIterations {
  TraceShape shape{58, 256, 256};
  std::vector<IterationCounts> its;
  BigIterations() {
    SyntheticTraceSpec spec;
    spec.tokens_per_gpu = 4096;
    spec.top_k = 8;
    spec.skew = 1.0;
    auto t = make_synthetic_trace(shape, spec);
    its.resize(4);
    for (auto& it : its) t->next(it);
  }
  [[nodiscard]] std::int64_t bytes() const {
    return static_cast<std::int64_t>(its[0].counts.size() * sizeof(std::int64_t));
  }
};

BigIterations& big() {
  static BigIterations b;
  return b;
}

// Replays the iterations above through the TraceSource interface, copying each into the
// caller's buffer as a reader would.
class MemoryTrace final : public TraceSource {
 public:
  explicit MemoryTrace(const BigIterations& b) : b_(b) {}
  [[nodiscard]] TraceShape shape() const override { return b_.shape; }
  bool next(IterationCounts& out) override {
    out = b_.its[pos_++ % b_.its.size()];
    return true;
  }
  void rewind() override { pos_ = 0; }
  [[nodiscard]] std::string describe() const override { return "memory"; }

 private:
  const BigIterations& b_;
  std::size_t pos_ = 0;
};

}  // namespace

// The statistics update alone: bytes of counts consumed per second.
static void BM_TraceStatsUpdate(benchmark::State& state) {
  BigIterations& b = big();
  TraceStatsOptions o;
  o.hot_k = 8;
  TraceStats stats(b.shape, o);
  std::size_t i = 0;
  for (auto _ : state) {
    stats.add(b.its[i++ % b.its.size()]);
  }
  benchmark::DoNotOptimize(stats.report());
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * b.bytes());
}
BENCHMARK(BM_TraceStatsUpdate)->Unit(benchmark::kMillisecond);

// Through the TraceSource interface, including the copy a reader makes into the iteration buffer.
static void BM_TraceStatsStream(benchmark::State& state) {
  BigIterations& b = big();
  MemoryTrace src(b);
  TraceStatsOptions o;
  o.hot_k = 8;
  TraceStats stats(b.shape, o);
  IterationCounts it;
  for (auto _ : state) {
    src.next(it);
    stats.add(it);
  }
  benchmark::DoNotOptimize(stats.report());
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * b.bytes());
}
BENCHMARK(BM_TraceStatsStream)->Unit(benchmark::kMillisecond);

// Generator iterations per second for each preset at its calibration shape and batch.
static void BM_SyntheticPreset(benchmark::State& state, const std::string& name) {
  const SyntheticPreset* p = find_synthetic_preset(name);
  if (p == nullptr) {
    state.SkipWithError("unknown preset");
    return;
  }
  auto t = make_synthetic_trace(p->shape, p->spec);
  IterationCounts it;
  for (auto _ : state) {
    t->next(it);
    benchmark::DoNotOptimize(it.counts.data());
  }
  state.counters["iterations_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK_CAPTURE(BM_SyntheticPreset, gpt_small_16e, std::string("gpt-small-16e"))
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_SyntheticPreset, qwen3_128e, std::string("qwen3-128e"))->Unit(benchmark::kMillisecond);

// The synthetic trace of scenarios/deepseek-v3-2048.yaml as its run draws it: one trace of
// 58 MoE layers x 128 source GPUs (a pipeline stage's) x 256 experts, 4096 x 120 tokens per GPU
// (120 micro-batches), top-8, Zipf 0.55, drift_sigma 0.1: 1.9 M binomial draws an iteration.
// Target (issue 13): <= 10 ms an iteration, of the 50 ms the whole simulated iteration may take.
static void BM_SyntheticTrace_DeepSeekV3_2048(benchmark::State& state) {
  SyntheticTraceSpec spec;
  spec.tokens_per_gpu = 4096 * 120;
  spec.top_k = 8;
  spec.skew = 0.55;
  spec.drift_sigma = 0.1;
  auto t = make_synthetic_trace(TraceShape{58, 128, 256}, spec);
  IterationCounts it;
  for (auto _ : state) {
    t->next(it);
    benchmark::DoNotOptimize(it.counts.data());
  }
}
BENCHMARK(BM_SyntheticTrace_DeepSeekV3_2048)->Unit(benchmark::kMillisecond);
