// The CPU twin of the NCCL collectives (kernels/collectives.hpp): all-reduce (sum) and all-to-all
// over N in-memory ranks, a backend that times them, and the check of any backend against them.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/collectives.hpp"

namespace moesim::kernels {
namespace {

void check_ranks(const std::vector<const float*>& in, const std::vector<float*>& out) {
  if (in.empty()) throw std::invalid_argument("collective: no ranks");
  if (out.size() != in.size())
    throw std::invalid_argument(
        fmt::format("collective: {} input buffers but {} outputs", in.size(), out.size()));
}

std::size_t common_count(const std::vector<std::vector<float>>& in) {
  if (in.empty()) throw std::invalid_argument("collective: no ranks");
  for (std::size_t r = 1; r < in.size(); ++r)
    if (in[r].size() != in[0].size())
      throw std::invalid_argument(fmt::format("collective: rank {} has {} elements but rank 0 has {}", r,
                                              in[r].size(), in[0].size()));
  return in[0].size();
}

template <class F>
std::vector<std::vector<float>> apply(const std::vector<std::vector<float>>& in, F f) {
  const std::size_t count = common_count(in);
  std::vector<std::vector<float>> out(in.size(), std::vector<float>(count));
  std::vector<const float*> ip;
  std::vector<float*> op;
  for (std::size_t r = 0; r < in.size(); ++r) {
    ip.push_back(in[r].data());
    op.push_back(out[r].data());
  }
  f(ip, count, op);
  return out;
}

// Input element i of rank r for the checks: small integers, exact in bf16 (8 significant bits)
// and in fp32, and so are their sums over up to 32 ranks (|sum| <= 256) in any order.
float check_value(CollectiveOp op, std::size_t r, std::size_t i) {
  if (op == CollectiveOp::AllReduce) return static_cast<float>(static_cast<int>((r * 7 + i * 13) % 17) - 8);
  // All-to-all only moves values: a wider range (|x| <= 127) makes a misplaced block show.
  return static_cast<float>(static_cast<int>((r * 37 + i * 11) % 255) - 127);
}

std::string cpu_name() {
  std::ifstream f("/proc/cpuinfo");
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
  return "CPU";
}

class CpuCollectives final : public CollectiveBackend {
 public:
  explicit CpuCollectives(int ranks) : ranks_(ranks) {
    if (ranks < 1)
      throw std::invalid_argument(fmt::format("CPU collectives: ranks must be >= 1, found {}", ranks));
  }
  [[nodiscard]] std::string name() const override { return "cpu"; }
  [[nodiscard]] CollectiveDeviceInfo info() const override {
    CollectiveDeviceInfo d;
    d.name = cpu_name() + fmt::format(" ({} in-memory ranks)", ranks_);
    d.ranks = ranks_;
    return d;
  }
  [[nodiscard]] int ranks() const override { return ranks_; }
  // Host memory is not probed: 1 GiB per rank (send and receive) is the most the CPU sweep asks.
  [[nodiscard]] std::size_t max_bytes() const override { return std::size_t{512} << 20; }

  [[nodiscard]] std::vector<std::vector<float>> run(CollectiveOp op, CollectiveDtype,
                                                    const std::vector<std::vector<float>>& in) override {
    if (static_cast<int>(in.size()) != ranks_)
      throw std::invalid_argument(fmt::format("CPU collectives: {} buffers for {} ranks", in.size(), ranks_));
    return op == CollectiveOp::AllReduce ? all_reduce_sum(in) : all_to_all(in);
  }

  [[nodiscard]] std::vector<double> time(CollectiveOp op, CollectiveDtype, std::size_t bytes,
                                         const TimingOptions& opt) override {
    // fp32 buffers of `bytes`, a multiple of the ranks' block for all-to-all.
    std::size_t count = bytes / sizeof(float);
    if (op == CollectiveOp::AllToAll) count -= count % static_cast<std::size_t>(ranks_);
    std::vector<std::vector<float>> in(static_cast<std::size_t>(ranks_), std::vector<float>(count, 1.0f));
    std::vector<std::vector<float>> out(in.size(), std::vector<float>(count));
    std::vector<const float*> ip;
    std::vector<float*> outp;
    for (std::size_t r = 0; r < in.size(); ++r) {
      ip.push_back(in[r].data());
      outp.push_back(out[r].data());
    }
    auto call = [&] {
      if (op == CollectiveOp::AllReduce) {
        all_reduce_sum(ip, count, outp);
      } else {
        all_to_all(ip, count, outp);
      }
    };
    using clock = std::chrono::steady_clock;
    for (int i = 0; i < opt.warmup; ++i) call();
    std::vector<double> samples;
    const auto start = clock::now();
    const int reps = std::max(1, opt.reps);
    for (int i = 0; i < reps; ++i) {
      const auto t0 = clock::now();
      call();
      samples.push_back(std::max(1.0, std::chrono::duration<double, std::nano>(clock::now() - t0).count()));
      if (i + 1 >= opt.min_reps && std::chrono::duration<double>(clock::now() - start).count() > opt.budget_s)
        break;
    }
    volatile float sink = out.back().empty() ? 0.0f : out.back().back();
    (void)sink;
    return samples;
  }

 private:
  int ranks_;
};

}  // namespace

void all_reduce_sum(const std::vector<const float*>& in, std::size_t count, const std::vector<float*>& out) {
  check_ranks(in, out);
  // Rank 0's input first, then each further rank's added in order (a fixed order: deterministic).
  // The sum is built apart and then copied, so an output may alias an input.
  std::vector<float> sum(in[0], in[0] + count);
  for (std::size_t r = 1; r < in.size(); ++r) {
    const float* x = in[r];
    for (std::size_t i = 0; i < count; ++i) sum[i] += x[i];
  }
  for (float* o : out)
    if (count > 0) std::memcpy(o, sum.data(), count * sizeof(float));
}

void all_to_all(const std::vector<const float*>& in, std::size_t count, const std::vector<float*>& out) {
  check_ranks(in, out);
  const std::size_t n = in.size();
  if (count % n != 0)
    throw std::invalid_argument(
        fmt::format("all_to_all: {} elements per rank is not a multiple of the {} ranks", count, n));
  const std::size_t block = count / n;
  for (std::size_t r = 0; r < n; ++r)
    for (std::size_t s = 0; s < n; ++s)
      if (block > 0) std::memcpy(out[r] + s * block, in[s] + r * block, block * sizeof(float));
}

std::vector<std::vector<float>> all_reduce_sum(const std::vector<std::vector<float>>& in) {
  return apply(in, [](const auto& i, std::size_t c, const auto& o) { all_reduce_sum(i, c, o); });
}

std::vector<std::vector<float>> all_to_all(const std::vector<std::vector<float>>& in) {
  return apply(in, [](const auto& i, std::size_t c, const auto& o) { all_to_all(i, c, o); });
}

double collective_bus_gbps(CollectiveOp op, double bytes, double time_ns, int ranks) {
  if (ranks <= 1 || !(time_ns > 0)) return 0.0;
  const double algbw_gbps = bytes / time_ns;  // bytes per ns = GB/s
  const double n = ranks;
  return op == CollectiveOp::AllReduce ? algbw_gbps * 2.0 * (n - 1) / n : algbw_gbps * (n - 1) / n;
}

std::unique_ptr<CollectiveBackend> make_cpu_collectives(int ranks) {
  return std::make_unique<CpuCollectives>(ranks);
}

CollectiveCheck check_collective(CollectiveBackend& b, CollectiveOp op, CollectiveDtype dtype,
                                 std::size_t elements_per_rank) {
  const auto n = static_cast<std::size_t>(b.ranks());
  std::size_t count = elements_per_rank;
  if (op == CollectiveOp::AllToAll) count -= count % n;
  std::vector<std::vector<float>> in(n, std::vector<float>(count));
  for (std::size_t r = 0; r < n; ++r)
    for (std::size_t i = 0; i < count; ++i) in[r][i] = check_value(op, r, i);
  const auto want = op == CollectiveOp::AllReduce ? all_reduce_sum(in) : all_to_all(in);
  const auto got = b.run(op, dtype, in);
  CollectiveCheck c;
  if (got.size() != n) {
    c.mismatches = 1;
    c.first = fmt::format("{} returned {} buffers for {} ranks", b.name(), got.size(), n);
    return c;
  }
  for (std::size_t r = 0; r < n; ++r) {
    if (got[r].size() != count) {
      ++c.mismatches;
      if (c.first.empty())
        c.first = fmt::format("rank {}: {} elements, expected {}", r, got[r].size(), count);
      continue;
    }
    for (std::size_t i = 0; i < count; ++i) {
      ++c.elements;
      if (got[r][i] != want[r][i]) {
        if (c.mismatches == 0)
          c.first = fmt::format("rank {} element {}: {} gave {}, the CPU twin {}", r, i, b.name(), got[r][i],
                                want[r][i]);
        ++c.mismatches;
      }
    }
  }
  return c;
}

}  // namespace moesim::kernels
