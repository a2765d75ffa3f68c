// Compute model speed: one lookup in a calibration profile (target < 100 ns per call, the
// roofline alongside for scale), and a CPU calibration of the GPT-Small MoE preset
// (target < 2 minutes on 2 cores).
#include <benchmark/benchmark.h>

#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "app/calibrate.hpp"
#include "models/profile.hpp"

using namespace moesim;

namespace {

struct Lookup {
  std::unique_ptr<ComputeModel> model;
  std::vector<double> tokens;  // tokens per expert, as a skewed trace produces them
  Lookup(const std::string& profile) {
    GpuProfile gpu;
    gpu.name = "h100";
    gpu.peak_tflops = 989;
    gpu.gemm_efficiency = 0.7;
    gpu.hbm_gbps = 3350;
    MoeModelSpec m;
    m.name = "gpt-small-moe";
    m.layers = 12;
    m.hidden = 768;
    m.heads = m.kv_heads = 12;
    m.head_dim = 64;
    m.ffn_hidden = m.expert_ffn_hidden = 3072;
    m.experts = 16;
    m.vocab = 50257;
    m.seq_len = 512;
    m.micro_batch_per_gpu = 4;
    model = make_compute_model(gpu, m, profile, false, nullptr);
    std::uint64_t x = 12345;
    for (int i = 0; i < 4096; ++i) {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
      tokens.push_back(static_cast<double>(1 + (x >> 33) % 4096));
    }
  }
};

}  // namespace

// The expert FFN's two GEMMs at varying tokens per expert: one call per iteration.
static void BM_ComputeLookup(benchmark::State& state, const std::string& profile) {
  Lookup l(profile);
  std::size_t i = 0;
  for (auto _ : state) {
    const double m = l.tokens[i++ & 4095];
    benchmark::DoNotOptimize(l.model->gemm_ns(m, (i & 1) ? 3072 : 768, (i & 1) ? 768 : 3072, 2));
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK_CAPTURE(BM_ComputeLookup, profile_h100_reference, std::string("h100-sxm-reference"));
BENCHMARK_CAPTURE(BM_ComputeLookup, roofline, std::string());

static void BM_CalibrateCpuGptSmall(benchmark::State& state) {
  const std::string out =
      (std::filesystem::temp_directory_path() / ("moesim_bench_profile_" + std::to_string(::getpid()) + ".yaml")).string();
  for (auto _ : state) {
    benchmark::DoNotOptimize(cmd_calibrate({"--backend", "cpu", "--model", "gpt-small-moe", "--out", out, "--quiet"}));
  }
  std::filesystem::remove(out);
}
BENCHMARK(BM_CalibrateCpuGptSmall)->Unit(benchmark::kSecond)->Iterations(1);
