// CPU twin of every MoE kernel: the reference the CUDA kernels are checked against, and what
// `moesim calibrate --backend cpu` times when there is no GPU. GEMMs go through Eigen.
#include <Eigen/Core>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "kernels/kernels.hpp"

namespace moesim::kernels {
namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMap = Eigen::Map<const RowMat>;
using MutMap = Eigen::Map<RowMat>;

// Keeps the timed calls from being optimised away.
volatile float g_sink = 0.0f;

// c[m x n] = a[m x k] x b[k x n]. Large products are split by columns over the hardware
// threads: Eigen parallelises only under OpenMP, which the project does not build with.
void matmul(const float* a, const float* b, int m, int n, int k, float* c) {
  if (m <= 0 || n <= 0) return;
  ConstMap A(a, m, k);
  ConstMap B(b, k, n);
  MutMap C(c, m, n);
  if (k <= 0) {
    C.setZero();
    return;
  }
  const double flops = 2.0 * m * n * k;
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  // Below ~50 MFLOP a thread start costs more than it saves.
  const int threads = static_cast<int>(std::min<unsigned>(hw, static_cast<unsigned>(std::max(1, n / 64))));
  if (threads <= 1 || flops < 5e7) {
    C.noalias() = A * B;
    return;
  }
  const int chunk = ((n + threads - 1) / threads + 15) / 16 * 16;
  std::vector<std::thread> pool;
  for (int c0 = chunk; c0 < n; c0 += chunk) {
    const int w = std::min(chunk, n - c0);
    pool.emplace_back([&, c0, w] { C.middleCols(c0, w).noalias() = A * B.middleCols(c0, w); });
  }
  C.leftCols(std::min(chunk, n)).noalias() = A * B.leftCols(std::min(chunk, n));
  for (auto& t : pool) t.join();
}

std::string cpu_model_name() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "unknown CPU";
}

// Deterministic filler (xorshift), values in [-1, 1).
void fill(std::vector<float>& v, std::uint64_t seed) {
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
  for (float& f : v) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    f = static_cast<float>(static_cast<double>(x >> 11) * (2.0 / 9007199254740992.0) - 1.0);
  }
}

template <class F>
std::vector<double> time_calls(F&& call, const TimingOptions& opt) {
  using clock = std::chrono::steady_clock;
  for (int i = 0; i < opt.warmup; ++i) call();
  std::vector<double> samples;
  const auto start = clock::now();
  while (static_cast<int>(samples.size()) < std::max(1, opt.reps)) {
    const auto t0 = clock::now();
    call();
    const auto t1 = clock::now();
    samples.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count());
    const double spent = std::chrono::duration<double>(t1 - start).count();
    if (static_cast<int>(samples.size()) >= opt.min_reps && spent >= opt.budget_s) break;
  }
  return samples;
}

std::size_t sz(std::int64_t a) { return static_cast<std::size_t>(std::max<std::int64_t>(a, 0)); }

class CpuBackend final : public KernelBackend {
 public:
  [[nodiscard]] std::string name() const override { return "cpu"; }
  [[nodiscard]] DeviceInfo device() const override {
    DeviceInfo d;
    d.name = cpu_model_name() + " (" + std::to_string(std::max(1u, std::thread::hardware_concurrency())) + " threads)";
    d.toolkit = std::string("g++ ") + __VERSION__;
    d.library = "Eigen " + std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) + "." +
                std::to_string(EIGEN_MINOR_VERSION);
    return d;
  }

  void topk_gating(const float* logits, int tokens, int experts, int k, int* expert_out,
                   float* weight_out) override {
    if (k < 1 || k > experts) throw std::invalid_argument("topk_gating: k must be in 1..experts");
    std::vector<float> p(sz(experts));
    std::vector<int> idx(sz(experts));
    for (int t = 0; t < tokens; ++t) {
      const float* l = logits + static_cast<std::size_t>(t) * experts;
      const float mx = *std::max_element(l, l + experts);
      float sum = 0.0f;
      for (int e = 0; e < experts; ++e) sum += (p[e] = std::exp(l[e] - mx));
      for (int e = 0; e < experts; ++e) p[e] /= sum;
      std::iota(idx.begin(), idx.end(), 0);
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                        [&](int a, int b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
      for (int j = 0; j < k; ++j) {
        expert_out[static_cast<std::size_t>(t) * k + j] = idx[j];
        weight_out[static_cast<std::size_t>(t) * k + j] = p[idx[j]];
      }
    }
  }

  void permute(const float* x, int tokens, int hidden, const int* expert, int k, int experts, float* rows,
               int* offsets, int* position) override {
    const std::size_t entries = static_cast<std::size_t>(tokens) * k;
    std::vector<int> cursor(sz(experts) + 1, 0);
    for (std::size_t i = 0; i < entries; ++i) {
      if (expert[i] < 0 || expert[i] >= experts) throw std::invalid_argument("permute: expert index out of range");
      ++cursor[expert[i] + 1];
    }
    for (int e = 0; e < experts; ++e) cursor[e + 1] += cursor[e];
    std::copy(cursor.begin(), cursor.end(), offsets);
    // Counting sort, stable in (token, slot) order.
    for (std::size_t i = 0; i < entries; ++i) {
      const int r = cursor[expert[i]]++;
      position[i] = r;
      std::memcpy(rows + static_cast<std::size_t>(r) * hidden, x + (i / k) * hidden, sizeof(float) * sz(hidden));
    }
  }

  void unpermute(const float* rows, const int* position, const float* weight, int tokens, int hidden, int k,
                 float* out) override {
    for (int t = 0; t < tokens; ++t) {
      float* o = out + static_cast<std::size_t>(t) * hidden;
      std::fill(o, o + hidden, 0.0f);
      for (int j = 0; j < k; ++j) {
        const std::size_t i = static_cast<std::size_t>(t) * k + j;
        const float w = weight[i];
        const float* r = rows + static_cast<std::size_t>(position[i]) * hidden;
        for (int h = 0; h < hidden; ++h) o[h] += w * r[h];
      }
    }
  }

  // The CPU has one implementation; `impl` only matters on the GPU.
  void grouped_gemm(const float* a, const int* offsets, int experts, const float* w, int n, int kdim, float* c,
                    GroupedImpl /*impl*/) override {
    for (int e = 0; e < experts; ++e) {
      const int rows = offsets[e + 1] - offsets[e];
      if (rows <= 0) continue;
      matmul(a + static_cast<std::size_t>(offsets[e]) * kdim, w + static_cast<std::size_t>(e) * kdim * n, rows, n,
             kdim, c + static_cast<std::size_t>(offsets[e]) * n);
    }
  }

  void gemm(const float* a, const float* b, int batch, int m, int n, int kdim, float* c) override {
    for (int i = 0; i < batch; ++i) {
      matmul(a + static_cast<std::size_t>(i) * m * kdim, b + static_cast<std::size_t>(i) * kdim * n, m, n, kdim,
             c + static_cast<std::size_t>(i) * m * n);
    }
  }

  [[nodiscard]] std::vector<double> time(const KernelShape& s, const TimingOptions& opt) override {
    const int m = static_cast<int>(s.m), n = static_cast<int>(s.n), k = static_cast<int>(s.k);
    const int batch = static_cast<int>(std::max<std::int64_t>(1, s.batch));
    switch (s.kernel) {
      case Kernel::Gating: {
        std::vector<float> logits(sz(s.m * s.n)), w(sz(s.m * s.k));
        std::vector<int> e(sz(s.m * s.k));
        fill(logits, 1);
        return time_calls([&] { topk_gating(logits.data(), m, n, k, e.data(), w.data()); g_sink = w[0]; }, opt);
      }
      case Kernel::Permute: {
        std::vector<float> x(sz(s.m * s.n)), rows(sz(s.m * s.k * s.n));
        std::vector<int> ex = spread_choices(m, k, batch), offsets(sz(batch) + 1), pos(sz(s.m * s.k));
        fill(x, 2);
        return time_calls(
            [&] { permute(x.data(), m, n, ex.data(), k, batch, rows.data(), offsets.data(), pos.data()); g_sink = rows[0]; },
            opt);
      }
      case Kernel::Unpermute: {
        std::vector<float> rows(sz(s.m * s.k * s.n)), w(sz(s.m * s.k), 1.0f / static_cast<float>(std::max(1, k))),
            out(sz(s.m * s.n));
        std::vector<int> pos(sz(s.m * s.k));
        std::iota(pos.begin(), pos.end(), 0);
        fill(rows, 3);
        return time_calls([&] { unpermute(rows.data(), pos.data(), w.data(), m, n, k, out.data()); g_sink = out[0]; },
                          opt);
      }
      case Kernel::GroupedGemm:
      case Kernel::GroupedGemmCustom: {
        std::vector<float> a(sz(batch * s.m * s.k)), w(sz(batch * s.k * s.n)), c(sz(batch * s.m * s.n));
        std::vector<int> offsets(sz(batch) + 1);
        for (int e = 0; e <= batch; ++e) offsets[e] = e * m;
        fill(a, 4);
        fill(w, 5);
        return time_calls([&] { grouped_gemm(a.data(), offsets.data(), batch, w.data(), n, k, c.data(), GroupedImpl::Grouped); g_sink = c[0]; },
                          opt);
      }
      case Kernel::Gemm:
      case Kernel::BatchedGemm: {
        std::vector<float> a(sz(batch * s.m * s.k)), b(sz(batch * s.k * s.n)), c(sz(batch * s.m * s.n));
        fill(a, 6);
        fill(b, 7);
        return time_calls([&] { gemm(a.data(), b.data(), batch, m, n, k, c.data()); g_sink = c[0]; }, opt);
      }
      case Kernel::Stream: {
        std::vector<char> src(sz(s.m / 2), 1), dst(sz(s.m / 2));
        return time_calls([&] { std::memcpy(dst.data(), src.data(), src.size()); g_sink = dst.empty() ? 0.0f : dst.back(); },
                          opt);
      }
    }
    throw std::invalid_argument("time: unknown kernel");
  }

 private:
  // k distinct experts per token, spread evenly: what a balanced router produces.
  static std::vector<int> spread_choices(int tokens, int k, int experts) {
    std::vector<int> e(static_cast<std::size_t>(tokens) * k);
    for (int t = 0; t < tokens; ++t)
      for (int j = 0; j < k; ++j) e[static_cast<std::size_t>(t) * k + j] = (t * k + j) % experts;
    return e;
  }
};

}  // namespace

std::unique_ptr<KernelBackend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace moesim::kernels
