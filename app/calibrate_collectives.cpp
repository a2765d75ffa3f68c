// `moesim calibrate --collectives`: NCCL all-reduce and all-to-all checked against the CPU twin and
// timed over sizes, and the table that sets them beside the simulator's network model.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <iostream>

#include "app/calibrate.hpp"
#include "app/calibrate_internal.hpp"
#include "core/config.hpp"
#include "core/error.hpp"
#include "models/specs.hpp"
#include "sim/network.hpp"

namespace moesim {

namespace calibrate_internal {

std::string utc_now() {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// ---------------------------------------------------------------------------------------------
// Collectives.

std::string default_cluster_for(const std::string& device) {
  for (const char* hopper : {"H100", "H200", "H800", "GH200"})
    if (device.find(hopper) != std::string::npos) return "dgx-h100";
  for (const char* ampere : {"A100", "A800"})
    if (device.find(ampere) != std::string::npos) return "dgx-a100";
  return "";
}

namespace {

// The sizes swept: powers of two from 1 MiB (or `max` when smaller) up to `max`.
std::vector<std::size_t> collective_sizes(std::size_t max) {
  std::vector<std::size_t> out;
  for (std::size_t b = std::min<std::size_t>(std::size_t{1} << 20, max); b <= max; b *= 2) out.push_back(b);
  return out;
}

}  // namespace

// Checks the backend against the CPU twin, then times both collectives over the sizes.
CollectiveRun run_collectives(kernels::CollectiveBackend& b, const Options& o,
                              const kernels::TimingOptions& timing) {
  using kernels::CollectiveOp;
  const kernels::CollectiveDeviceInfo info = b.info();
  const int n = b.ranks();
  const auto dtype =
      o.collective_dtype == "fp32" ? kernels::CollectiveDtype::F32 : kernels::CollectiveDtype::BF16;
  CollectiveRun run;
  run.library = info.nccl.empty() ? "CPU twin" : "NCCL " + info.nccl;
  if (!o.quiet)
    std::cout << fmt::format("collectives: {} on {} {} ({}){}\n", run.library, n,
                             b.name() == "nccl" ? "GPU(s)" : "ranks", info.name,
                             info.driver.empty() ? "" : ", driver " + info.driver);
  // Correctness first: every element of both collectives against the CPU twin, in both dtypes.
  for (CollectiveOp op : {CollectiveOp::AllReduce, CollectiveOp::AllToAll}) {
    for (auto dt : {kernels::CollectiveDtype::BF16, kernels::CollectiveDtype::F32}) {
      const kernels::CollectiveCheck c = kernels::check_collective(b, op, dt, std::size_t{1} << 18);
      if (c.mismatches > 0)
        throw std::runtime_error(
            fmt::format("{} {} on {} ranks differs from the CPU twin in {} of {} elements; first: {}",
                        to_string(op), to_string(dt), n, c.mismatches, c.elements, c.first));
      if (!o.quiet)
        std::cout << fmt::format("  check {} {}: {} elements over {} rank(s) equal to the CPU twin's\n",
                                 to_string(op), to_string(dt), c.elements, n);
    }
  }
  if (n < 2) {
    std::cout << fmt::format(
        "collective calibration needs at least 2 GPUs; found {}: no collectives section written\n", n);
    return run;
  }
  CollectiveProfile& sec = run.section;
  sec.present = true;
  sec.backend = b.name();
  sec.device = info.name;
  sec.gpus = n;
  sec.nccl = info.nccl;
  sec.dtype = b.name() == "cpu" ? "fp32" : o.collective_dtype;  // the twin adds floats
  sec.date = utc_now();
  sec.warmup = timing.warmup;
  sec.reps = timing.reps;
  sec.budget_s = timing.budget_s;
  sec.method =
      b.name() == "nccl"
          ? "measured: one process, one communicator per GPU (ncclCommInitAll), one stream per GPU, every "
            "rank's call in one ncclGroupStart/End; all-reduce: ncclAllReduce sum, out of place; all-to-all: "
            "ncclSend + ncclRecv of bytes/gpus to and from every rank; calls queued back to back between "
            "CUDA events after warm-up, a call's time the longest rank's"
          : "measured: the CPU twin (kernels/cpu_collectives.cpp) over in-memory ranks, fp32, wall clock";
  const std::size_t max = std::min(static_cast<std::size_t>(o.max_bytes), b.max_bytes());
  const std::vector<std::size_t> sizes = collective_sizes(max);
  if (sizes.empty())
    throw std::runtime_error(fmt::format("collectives: no size fits the free memory ({} bytes)", max));
  for (CollectiveOp op : {CollectiveOp::AllReduce, CollectiveOp::AllToAll}) {
    CollectiveSeries s;
    s.collective = to_string(op);
    for (std::size_t bytes : sizes) {
      const kernels::SampleStats st = kernels::sample_stats(b.time(op, dtype, bytes, timing));
      CollectivePoint q;
      q.bytes = static_cast<double>(bytes);
      q.median_ns = std::max(1.0, std::round(st.median * 10.0) / 10.0);
      q.p10_ns = std::clamp(std::round(st.p10 * 10.0) / 10.0, 1.0, q.median_ns);
      q.p90_ns = std::max(std::round(st.p90 * 10.0) / 10.0, q.median_ns);
      q.busbw_gbps =
          std::round(collective_busbw_gbps(s.collective, q.bytes, q.median_ns, n) * 1000.0) / 1000.0;
      if (!o.quiet)
        std::cout << fmt::format("  {:<10} {:>10} bytes  {:>12.1f} us  busbw {:>8.2f} GB/s\n", s.collective,
                                 bytes, q.median_ns / 1e3, q.busbw_gbps);
      s.points.push_back(q);
    }
    sec.series.push_back(std::move(s));
  }
  run.measured = true;
  return run;
}

}  // namespace calibrate_internal

CollectivePrediction predict_collective(const std::string& preset, const std::string& collective,
                                        double bytes, int gpus) {
  if (gpus < 2) return {};
  YAML::Node n;
  n["preset"] = preset;
  n["nodes"] = 1;
  n["gpus_per_node"] = gpus;
  const Cluster cluster(load_cluster(Cfg(n, "--cluster", "")));
  const AnalyticalNetwork net(cluster);
  CollectivePrediction p;
  if (collective == "all_reduce") {
    std::vector<int> all(static_cast<std::size_t>(gpus));
    for (int g = 0; g < gpus; ++g) all[static_cast<std::size_t>(g)] = g;
    p.time_ns = static_cast<double>(net.collective(Collective::AllReduce, bytes, all).time_ns);
  } else if (collective == "all_to_all") {
    // bytes / gpus from every GPU to every other (the block a rank keeps stays on the GPU).
    const auto g = static_cast<std::size_t>(gpus);
    std::vector<double> m(g * g, bytes / gpus);
    for (std::size_t i = 0; i < g; ++i) m[i * g + i] = 0;
    p.time_ns = static_cast<double>(net.all_to_all_v(m));
  } else {
    throw InputError(
        fmt::format("collective '{}' is not allowed; allowed: all_reduce, all_to_all", collective));
  }
  p.busbw_gbps = collective_busbw_gbps(collective, bytes, p.time_ns, gpus);
  return p;
}

std::string collective_comparison(const CollectiveProfile& c, const std::string& preset) {
  std::string out = fmt::format(
      "measured ({} x {}, {}) against the simulator's analytical network model on {} with {} GPUs on one "
      "node\n",
      c.gpus, c.device, c.nccl.empty() ? c.backend : "NCCL " + c.nccl, preset, c.gpus);
  out += fmt::format("{:<11} {:>11} {:>12} {:>12} {:>14} {:>14} {:>8}\n", "collective", "size_bytes",
                     "measured_us", "model_us", "measured_busbw", "model_busbw", "diff_%");
  for (const auto& s : c.series) {
    for (const auto& q : s.points) {
      const CollectivePrediction p = predict_collective(preset, s.collective, q.bytes, c.gpus);
      const std::string diff =
          p.busbw_gbps > 0 ? fmt::format("{:+.1f}", 100.0 * (p.busbw_gbps - q.busbw_gbps) / q.busbw_gbps)
                           : "-";
      out += fmt::format("{:<11} {:>11} {:>12.1f} {:>12.1f} {:>14.2f} {:>14.2f} {:>8}\n", s.collective,
                         q.bytes, q.median_ns / 1e3, p.time_ns / 1e3, q.busbw_gbps, p.busbw_gbps, diff);
    }
  }
  out +=
      "busbw in GB/s as nccl-tests defines it (doc/PERFORMANCE.md): all-reduce algbw x 2(n-1)/n, all-to-all "
      "algbw x (n-1)/n; diff_% = (model - measured) / measured\n";
  return out;
}

}  // namespace moesim
