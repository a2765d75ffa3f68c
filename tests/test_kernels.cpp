// The MoE kernels: the CPU twin against straightforward loops, and the CUDA kernels against the
// CPU twin. Without a CUDA device the CUDA cases print "SKIPPED (no CUDA device): ..." and pass.
// The collectives: the CPU twin on hand-worked cases, and NCCL against the CPU twin.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "kernels/collectives.hpp"
#include "kernels/kernels.hpp"

using namespace moesim::kernels;

namespace {

std::vector<float> random_floats(std::size_t n, std::uint64_t seed, float scale = 1.0f) {
  std::vector<float> v(n);
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 7;
  for (float& f : v) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    f = scale * static_cast<float>(static_cast<double>(x >> 11) / 9007199254740992.0 * 2.0 - 1.0);
  }
  return v;
}

// Round to the nearest bf16 (ties to even), as the CUDA backend stores its operands.
float to_bf16(float f) {
  std::uint32_t u = 0;
  std::memcpy(&u, &f, sizeof u);
  u += 0x7FFFu + ((u >> 16) & 1u);
  u &= 0xFFFF0000u;
  std::memcpy(&f, &u, sizeof f);
  return f;
}
std::vector<float> bf16_rounded(std::vector<float> v) {
  for (float& f : v) f = to_bf16(f);
  return v;
}

// k distinct experts per token, drawn from a fixed pseudo-random sequence.
std::vector<int> random_choices(int tokens, int k, int experts, std::uint64_t seed) {
  std::vector<int> out;
  std::uint64_t x = seed + 1;
  for (int t = 0; t < tokens; ++t) {
    std::vector<int> chosen;
    while (static_cast<int>(chosen.size()) < k) {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
      const int e = static_cast<int>((x >> 33) % static_cast<std::uint64_t>(experts));
      if (std::find(chosen.begin(), chosen.end(), e) == chosen.end()) chosen.push_back(e);
    }
    out.insert(out.end(), chosen.begin(), chosen.end());
  }
  return out;
}

// c[m x n] = a[m x k] b[k x n], in double.
std::vector<double> naive_gemm(const float* a, const float* b, int m, int n, int k) {
  std::vector<double> c(static_cast<std::size_t>(m) * n, 0.0);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int p = 0; p < k; ++p) s += static_cast<double>(a[i * k + p]) * b[p * n + j];
      c[static_cast<std::size_t>(i) * n + j] = s;
    }
  return c;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

// The largest difference between `got` and `want`, relative to the largest |want|.
double rel_error(const std::vector<float>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  double e = 0;
  for (std::size_t i = 0; i < got.size(); ++i) e = std::max(e, std::abs(static_cast<double>(got[i]) - want[i]));
  return e / std::max(1e-30, max_abs(want));
}

}  // namespace

TEST_CASE("CPU gating: softmax probabilities and the k most probable experts", "[kernels]") {
  auto cpu = make_cpu_backend();
  const int tokens = 50, experts = 12, k = 3;
  std::vector<float> logits = random_floats(static_cast<std::size_t>(tokens) * experts, 1, 4.0f);
  logits[5] = logits[7] = 10.0f;  // token 0: a tie, which goes to the lower index
  std::vector<int> ex(static_cast<std::size_t>(tokens) * k);
  std::vector<float> w(ex.size());
  cpu->topk_gating(logits.data(), tokens, experts, k, ex.data(), w.data());
  for (int t = 0; t < tokens; ++t) {
    const float* l = &logits[static_cast<std::size_t>(t) * experts];
    double mx = *std::max_element(l, l + experts), sum = 0;
    for (int e = 0; e < experts; ++e) sum += std::exp(l[e] - mx);
    std::vector<int> order(experts);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return l[a] > l[b]; });
    for (int j = 0; j < k; ++j) {
      const auto i = static_cast<std::size_t>(t) * k + j;
      CHECK(ex[i] == order[j]);
      CHECK(w[i] == Approx(std::exp(l[order[j]] - mx) / sum).epsilon(1e-5));
    }
  }
  CHECK(ex[0] == 5);
  CHECK(ex[1] == 7);
}

TEST_CASE("CPU permutation groups rows by expert, and the inverse restores every token exactly", "[kernels]") {
  auto cpu = make_cpu_backend();
  const int tokens = 37, hidden = 5, k = 2, experts = 4;
  const std::vector<float> x = random_floats(static_cast<std::size_t>(tokens) * hidden, 2);
  const std::vector<int> ex = random_choices(tokens, k, experts, 3);
  std::vector<float> rows(static_cast<std::size_t>(tokens) * k * hidden);
  std::vector<int> offsets(experts + 1), position(static_cast<std::size_t>(tokens) * k);
  cpu->permute(x.data(), tokens, hidden, ex.data(), k, experts, rows.data(), offsets.data(), position.data());
  // Reference: each expert's entries in (token, slot) order.
  int r = 0;
  for (int e = 0; e < experts; ++e) {
    CHECK(offsets[e] == r);
    for (int i = 0; i < tokens * k; ++i) {
      if (ex[i] != e) continue;
      CHECK(position[i] == r);
      for (int h = 0; h < hidden; ++h) CHECK(rows[static_cast<std::size_t>(r) * hidden + h] == x[(i / k) * hidden + h]);
      ++r;
    }
  }
  CHECK(offsets[experts] == tokens * k);
  // Combining with weights 1/2 undoes the dispatch bit for bit (x/2 + x/2 == x in float).
  std::vector<float> half(static_cast<std::size_t>(tokens) * k, 0.5f), back(x.size());
  cpu->unpermute(rows.data(), position.data(), half.data(), tokens, hidden, k, back.data());
  CHECK(back == x);
  // General weights: the weighted sum of the token's rows.
  const std::vector<float> wt = random_floats(half.size(), 4);
  cpu->unpermute(rows.data(), position.data(), wt.data(), tokens, hidden, k, back.data());
  for (int t = 0; t < tokens; ++t)
    for (int h = 0; h < hidden; ++h) {
      float want = 0;
      for (int j = 0; j < k; ++j) want += wt[t * k + j] * x[t * hidden + h];
      CHECK(back[t * hidden + h] == Approx(want).margin(1e-6));
    }
}

TEST_CASE("CPU grouped GEMM matches a naive product per expert, empty experts included", "[kernels]") {
  auto cpu = make_cpu_backend();
  const int n = 23, kdim = 19;
  const std::vector<int> offsets = {0, 5, 5, 22, 150};  // expert 1 has no rows
  const int experts = 4, rows = offsets.back();
  const std::vector<float> a = random_floats(static_cast<std::size_t>(rows) * kdim, 5);
  const std::vector<float> w = random_floats(static_cast<std::size_t>(experts) * kdim * n, 6);
  std::vector<float> c(static_cast<std::size_t>(rows) * n, -1.0f);
  cpu->grouped_gemm(a.data(), offsets.data(), experts, w.data(), n, kdim, c.data(), GroupedImpl::Grouped);
  std::vector<double> want;
  for (int e = 0; e < experts; ++e) {
    const int m = offsets[e + 1] - offsets[e];
    auto part = naive_gemm(&a[static_cast<std::size_t>(offsets[e]) * kdim], &w[static_cast<std::size_t>(e) * kdim * n], m, n, kdim);
    want.insert(want.end(), part.begin(), part.end());
  }
  CHECK(rel_error(c, want) < 1e-5);
}

TEST_CASE("CPU dense and batched GEMMs match a naive product (large enough to use threads)", "[kernels]") {
  auto cpu = make_cpu_backend();
  const int batch = 3, m = 7, n = 9, kdim = 11;
  const auto a = random_floats(static_cast<std::size_t>(batch) * m * kdim, 7);
  const auto b = random_floats(static_cast<std::size_t>(batch) * kdim * n, 8);
  std::vector<float> c(static_cast<std::size_t>(batch) * m * n);
  cpu->gemm(a.data(), b.data(), batch, m, n, kdim, c.data());
  std::vector<double> want;
  for (int i = 0; i < batch; ++i) {
    auto p = naive_gemm(&a[static_cast<std::size_t>(i) * m * kdim], &b[static_cast<std::size_t>(i) * kdim * n], m, n, kdim);
    want.insert(want.end(), p.begin(), p.end());
  }
  CHECK(rel_error(c, want) < 1e-5);
  // 2 x 96 x 1000 x 300 = 58 MFLOP: split over the threads.
  const int M = 96, N = 1000, K = 300;
  const auto A = random_floats(static_cast<std::size_t>(M) * K, 9), B = random_floats(static_cast<std::size_t>(K) * N, 10);
  std::vector<float> C(static_cast<std::size_t>(M) * N);
  cpu->gemm(A.data(), B.data(), 1, M, N, K, C.data());
  CHECK(rel_error(C, naive_gemm(A.data(), B.data(), M, N, K)) < 1e-5);
}

TEST_CASE("CPU timing gives positive samples for every kernel", "[kernels]") {
  auto cpu = make_cpu_backend();
  TimingOptions opt;
  opt.warmup = 1;
  opt.reps = 4;
  opt.min_reps = 2;
  opt.budget_s = 10;
  const KernelShape shapes[] = {{Kernel::Gating, 64, 8, 2, 1},       {Kernel::Permute, 64, 32, 2, 8},
                                {Kernel::Unpermute, 64, 32, 2, 1},   {Kernel::GroupedGemm, 16, 32, 24, 3},
                                {Kernel::GroupedGemmCustom, 16, 32, 24, 3}, {Kernel::Gemm, 16, 32, 24, 1},
                                {Kernel::BatchedGemm, 16, 16, 8, 4}, {Kernel::Stream, 1 << 16, 0, 0, 1}};
  for (const auto& s : shapes) {
    INFO(to_string(s.kernel));
    const auto samples = cpu->time(s, opt);
    CHECK(samples.size() == 4);
    for (double x : samples) CHECK(x >= 0);
  }
  // The budget stops early, but never below min_reps.
  opt.budget_s = 0;
  CHECK(cpu->time(shapes[5], opt).size() == 2);
  CHECK_FALSE(cpu->device().name.empty());
}

TEST_CASE("Timing statistics: median and percentiles between order statistics", "[kernels]") {
  // Sorted: 10 20 30 40 50 60 70 80 90 100 110; p10 at position 1.0 -> 20, median at 5 -> 60,
  // p90 at 9.0 -> 100.
  const SampleStats s = sample_stats({110, 10, 30, 20, 50, 40, 70, 60, 90, 80, 100});
  CHECK(s.median == 60);
  CHECK(s.p10 == 20);
  CHECK(s.p90 == 100);
  // Two samples: p10 = 1 + 0.1 x (3 - 1) = 1.2.
  CHECK(sample_stats({3, 1}).p10 == Approx(1.2));
  CHECK(sample_stats({}).median == 0);
}

TEST_CASE("CUDA kernels match the CPU twin (SKIPPED without a CUDA device)", "[kernels][cuda]") {
  std::string why;
  auto gpu = make_cuda_backend(&why);
  if (!gpu) {
    CHECK(why.rfind("no CUDA device", 0) == 0);
    WARN("SKIPPED (no CUDA device): CUDA kernels vs CPU: " << why);
    return;
  }
  auto cpu = make_cpu_backend();
  INFO("device: " << gpu->device().name << ", " << gpu->device().library);

  SECTION("gating") {
    const int tokens = 300, experts = 64, k = 8;
    // Logits a multiple of 1/64 apart: no near-ties for expf's rounding to reorder.
    std::vector<float> logits(static_cast<std::size_t>(tokens) * experts);
    for (std::size_t i = 0; i < logits.size(); ++i)
      logits[i] = static_cast<float>((i * 7919) % 1021) / 64.0f - 8.0f;
    std::vector<int> eg(static_cast<std::size_t>(tokens) * k), ec(eg.size());
    std::vector<float> wg(eg.size()), wc(eg.size());
    gpu->topk_gating(logits.data(), tokens, experts, k, eg.data(), wg.data());
    cpu->topk_gating(logits.data(), tokens, experts, k, ec.data(), wc.data());
    CHECK(eg == ec);
    for (std::size_t i = 0; i < wg.size(); ++i) CHECK(wg[i] == Approx(wc[i]).epsilon(1e-4));
  }
  SECTION("permutation and its inverse") {
    const int tokens = 1000, hidden = 136, k = 4, experts = 32;
    const auto x = bf16_rounded(random_floats(static_cast<std::size_t>(tokens) * hidden, 11));
    const auto ex = random_choices(tokens, k, experts, 12);
    std::vector<float> rg(static_cast<std::size_t>(tokens) * k * hidden), rc(rg.size());
    std::vector<int> og(experts + 1), oc(og.size()), pg(static_cast<std::size_t>(tokens) * k), pc(pg.size());
    gpu->permute(x.data(), tokens, hidden, ex.data(), k, experts, rg.data(), og.data(), pg.data());
    cpu->permute(x.data(), tokens, hidden, ex.data(), k, experts, rc.data(), oc.data(), pc.data());
    CHECK(og == oc);
    CHECK(pg == pc);
    CHECK(rg == rc);  // copies of bf16 values: exact
    std::vector<float> half(pg.size(), 0.25f), bg(x.size()), bc(x.size());
    gpu->unpermute(rg.data(), pg.data(), half.data(), tokens, hidden, k, bg.data());
    cpu->unpermute(rc.data(), pc.data(), half.data(), tokens, hidden, k, bc.data());
    CHECK(bg == x);  // four quarters of a bf16 value sum to it exactly, and it is representable
    CHECK(bc == x);
  }
  SECTION("grouped GEMM: cuBLAS grouped, cuBLAS per expert, the hand-written kernel") {
    // Rows of whole 16-byte runs (the hand-written kernel's vector loads) and odd ones.
    const auto [n, kdim] = GENERATE(std::make_pair(200, 136), std::make_pair(30, 19));
    const std::vector<int> offsets = {0, 1, 1, 70, 200, 333};
    const int experts = 5, rows = offsets.back();
    const auto a = bf16_rounded(random_floats(static_cast<std::size_t>(rows) * kdim, 13));
    const auto w = bf16_rounded(random_floats(static_cast<std::size_t>(experts) * kdim * n, 14));
    std::vector<float> cc(static_cast<std::size_t>(rows) * n);
    cpu->grouped_gemm(a.data(), offsets.data(), experts, w.data(), n, kdim, cc.data(), GroupedImpl::Grouped);
    const std::vector<double> want(cc.begin(), cc.end());
    for (GroupedImpl impl : {GroupedImpl::Grouped, GroupedImpl::PerExpert, GroupedImpl::Custom}) {
      INFO("implementation " << static_cast<int>(impl));
      std::vector<float> cg(cc.size(), -7.0f);
      gpu->grouped_gemm(a.data(), offsets.data(), experts, w.data(), n, kdim, cg.data(), impl);
      // bf16 output: 2^-8 relative rounding of each element, against the largest element.
      CHECK(rel_error(cg, want) < 1e-2);
    }
  }
  SECTION("dense and batched GEMM") {
    const int batch = 3, m = 77, n = 96, kdim = 64;
    const auto a = bf16_rounded(random_floats(static_cast<std::size_t>(batch) * m * kdim, 15));
    const auto b = bf16_rounded(random_floats(static_cast<std::size_t>(batch) * kdim * n, 16));
    std::vector<float> cc(static_cast<std::size_t>(batch) * m * n), cg(cc.size());
    cpu->gemm(a.data(), b.data(), batch, m, n, kdim, cc.data());
    gpu->gemm(a.data(), b.data(), batch, m, n, kdim, cg.data());
    CHECK(rel_error(cg, std::vector<double>(cc.begin(), cc.end())) < 1e-2);
    cpu->gemm(a.data(), b.data(), 1, m, n, kdim, cc.data());
    gpu->gemm(a.data(), b.data(), 1, m, n, kdim, cg.data());
    CHECK(rel_error(std::vector<float>(cg.begin(), cg.begin() + m * n),
                    std::vector<double>(cc.begin(), cc.begin() + m * n)) < 1e-2);
  }
  SECTION("timing") {
    TimingOptions opt;
    opt.warmup = 2;
    opt.reps = 5;
    for (const KernelShape& s : {KernelShape{Kernel::GroupedGemm, 64, 256, 128, 4},
                                 KernelShape{Kernel::GroupedGemmCustom, 64, 256, 128, 4},
                                 KernelShape{Kernel::Gating, 1024, 64, 8, 1},
                                 KernelShape{Kernel::Permute, 1024, 256, 8, 64},
                                 KernelShape{Kernel::Unpermute, 1024, 256, 8, 1},
                                 KernelShape{Kernel::BatchedGemm, 128, 128, 64, 8},
                                 KernelShape{Kernel::Stream, 1 << 24, 0, 0, 1}}) {
      INFO(to_string(s.kernel));
      const auto samples = gpu->time(s, opt);
      CHECK(samples.size() == 5);
      for (double x : samples) CHECK(x > 0);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Collectives.

namespace {

// A backend that returns the CPU twin's answer with one element changed: the check must see it.
class OffByOne final : public CollectiveBackend {
 public:
  explicit OffByOne(int ranks) : twin_(make_cpu_collectives(ranks)) {}
  [[nodiscard]] std::string name() const override { return "off-by-one"; }
  [[nodiscard]] CollectiveDeviceInfo info() const override { return twin_->info(); }
  [[nodiscard]] int ranks() const override { return twin_->ranks(); }
  [[nodiscard]] std::size_t max_bytes() const override { return twin_->max_bytes(); }
  [[nodiscard]] std::vector<std::vector<float>> run(CollectiveOp op, CollectiveDtype dt,
                                                    const std::vector<std::vector<float>>& in) override {
    auto out = twin_->run(op, dt, in);
    out.back()[5] += 1.0f;
    return out;
  }
  [[nodiscard]] std::vector<double> time(CollectiveOp, CollectiveDtype, std::size_t,
                                         const TimingOptions&) override {
    return {};
  }

 private:
  std::unique_ptr<CollectiveBackend> twin_;
};

}  // namespace

TEST_CASE("CPU all-reduce: every rank gets the element-wise sum (hand-worked)", "[kernels][collectives]") {
  const auto out = all_reduce_sum({{1, 2}, {10, 20}, {100, 200}});
  REQUIRE(out.size() == 3);
  for (const auto& r : out) CHECK(r == std::vector<float>{111, 222});
  // One rank: a copy.
  CHECK(all_reduce_sum({{3, -4, 5}}) == std::vector<std::vector<float>>{{3, -4, 5}});
  // Summed in rank order: 1e8 + 1 - 1e8 is 0 in float, where (1e8 - 1e8) + 1 would be 1.
  CHECK(all_reduce_sum({{1e8f}, {1.0f}, {-1e8f}})[0][0] == 0.0f);
  // In place: outputs may be the inputs.
  std::vector<float> a = {1, 2}, b = {3, 4};
  all_reduce_sum({a.data(), b.data()}, 2, {a.data(), b.data()});
  CHECK(a == std::vector<float>{4, 6});
  CHECK(b == std::vector<float>{4, 6});
  CHECK_THROWS_WITH(all_reduce_sum({{1, 2}, {1}}), Catch::Contains("rank 1 has 1 elements but rank 0 has 2"));
  CHECK_THROWS(all_reduce_sum(std::vector<std::vector<float>>{}));
}

TEST_CASE("CPU all-to-all: block s of rank r's output is block r of rank s's input (hand-worked)",
          "[kernels][collectives]") {
  // Two ranks, blocks of two elements.
  const auto two = all_to_all({{0, 1, 2, 3}, {10, 11, 12, 13}});
  CHECK(two == std::vector<std::vector<float>>{{0, 1, 10, 11}, {2, 3, 12, 13}});
  // Three ranks, blocks of one: a transpose.
  const auto three = all_to_all({{0, 1, 2}, {10, 11, 12}, {20, 21, 22}});
  CHECK(three == std::vector<std::vector<float>>{{0, 10, 20}, {1, 11, 21}, {2, 12, 22}});
  // Twice is the identity.
  const std::vector<std::vector<float>> x = {
      {1, 2, 3, 4, 5, 6}, {7, 8, 9, 10, 11, 12}, {13, 14, 15, 16, 17, 18}};
  CHECK(all_to_all(all_to_all(x)) == x);
  CHECK_THROWS_WITH(all_to_all({{1, 2, 3}, {4, 5, 6}}), Catch::Contains("not a multiple of the 2 ranks"));
}

TEST_CASE("Bus bandwidth as nccl-tests defines it", "[kernels][collectives]") {
  // 1 GB in 1 ms: algbw 1000 GB/s; 8 ranks: all-reduce x 2*7/8, all-to-all x 7/8.
  CHECK(collective_bus_gbps(CollectiveOp::AllReduce, 1e9, 1e6, 8) == Approx(1750.0));
  CHECK(collective_bus_gbps(CollectiveOp::AllToAll, 1e9, 1e6, 8) == Approx(875.0));
  CHECK(collective_bus_gbps(CollectiveOp::AllReduce, 1e9, 1e6, 2) == Approx(1000.0));
  CHECK(collective_bus_gbps(CollectiveOp::AllToAll, 1e9, 1e6, 2) == Approx(500.0));
  CHECK(collective_bus_gbps(CollectiveOp::AllReduce, 1e9, 1e6, 1) == 0.0);
  CHECK(collective_bus_gbps(CollectiveOp::AllReduce, 1e9, 0.0, 4) == 0.0);
}

TEST_CASE("Collective check: the CPU backend passes, a wrong element is found", "[kernels][collectives]") {
  auto cpu = make_cpu_collectives(3);
  CHECK(cpu->ranks() == 3);
  for (CollectiveOp op : {CollectiveOp::AllReduce, CollectiveOp::AllToAll}) {
    const CollectiveCheck c = check_collective(*cpu, op, CollectiveDtype::BF16, 1000);
    CHECK(c.mismatches == 0);
    CHECK(c.elements == 3 * (op == CollectiveOp::AllReduce ? 1000 : 999));
    CHECK(c.first.empty());
  }
  OffByOne bad(3);
  const CollectiveCheck c = check_collective(bad, CollectiveOp::AllReduce, CollectiveDtype::F32, 64);
  CHECK(c.mismatches == 1);
  CHECK_THAT(c.first, Catch::Contains("rank 2 element 5") && Catch::Contains("off-by-one"));
  TimingOptions opt;
  opt.warmup = 1;
  opt.reps = 4;
  for (CollectiveOp op : {CollectiveOp::AllReduce, CollectiveOp::AllToAll}) {
    const auto samples = cpu->time(op, CollectiveDtype::F32, std::size_t{1} << 16, opt);
    CHECK(samples.size() == 4);
    for (double x : samples) CHECK(x > 0);
  }
  CHECK_THROWS(make_cpu_collectives(0));
}

TEST_CASE("NCCL collectives match the CPU twin (SKIPPED without a CUDA device)", "[kernels][cuda][collectives]") {
  std::string why;
  auto nccl = make_nccl_collectives(0, &why);
  if (!nccl) {
    CHECK_FALSE(why.empty());
    WARN("SKIPPED (no CUDA device or no NCCL): NCCL collectives vs CPU: " << why);
    return;
  }
  const CollectiveDeviceInfo info = nccl->info();
  INFO("NCCL " << info.nccl << " on " << info.ranks << " x " << info.name);
  CHECK(info.ranks == nccl->ranks());
  CHECK(info.ranks >= 1);
  CHECK_FALSE(info.nccl.empty());
  CHECK(nccl->max_bytes() > (std::size_t{1} << 20));
  for (CollectiveOp op : {CollectiveOp::AllReduce, CollectiveOp::AllToAll}) {
    for (CollectiveDtype dt : {CollectiveDtype::BF16, CollectiveDtype::F32}) {
      INFO(to_string(op) << " " << to_string(dt));
      const CollectiveCheck c = check_collective(*nccl, op, dt, 100003);
      CHECK(c.mismatches == 0);
      CHECK(c.first.empty());
      CHECK(c.elements > 0);
    }
    TimingOptions opt;
    opt.warmup = 2;
    opt.reps = 5;
    const auto samples = nccl->time(op, CollectiveDtype::BF16, std::size_t{1} << 20, opt);
    CHECK(samples.size() == 5);
    for (double x : samples) CHECK(x > 0);
  }
}
