#include "app/validate_dispatch.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <numeric>

#include "app/scenario.hpp"
#include "core/error.hpp"
#include "sim/layout.hpp"
#include "sim/network.hpp"

namespace moesim {
namespace {

// source: deepseek-ai/DeepEP docs/legacy.md, "Normal kernels with NVLink and RDMA forwarding"
// (V1, H800 with ~160 GB/s NVLink and one CX7 400 Gb/s NIC per GPU; 4096 tokens, hidden 7168,
// top-4 groups, top-8 experts, FP8 dispatch, BF16 combine). Bottleneck bandwidth in GB/s.
struct DeepEpFigure {
  int ep;
  double dispatch_gbps;
  double combine_gbps;
};
constexpr DeepEpFigure kDeepEp[] = {{8, 153, 158}, {16, 43, 43}, {32, 58, 57}, {64, 51, 50}};

constexpr int kTokens = 4096, kHidden = 7168, kTopK = 8, kExperts = 256, kGroupsLimit = 4;

}  // namespace

std::vector<DispatchValidationRow> dispatch_validation_rows(const std::string& preset) {
  std::vector<DispatchValidationRow> rows;
  for (const DeepEpFigure& f : kDeepEp) {
    const std::string text = fmt::format(
        "cluster: {{preset: {}, nodes: {}}}\nmodel: {{preset: deepseek-v3}}\nplacement: {{slots_per_gpu: {}}}\n"
        "policies: [static]\n",
        preset, std::max(1, f.ep / 8), kExperts / f.ep);
    const Scenario s = load_scenario_text(text, "--cluster", {}, std::nullopt);
    if (s.cluster.gpus_per_node != 8)
      throw InputError(fmt::format("moesim validate dispatch: --cluster {} has {} GPUs per node; DeepEP's shape needs 8",
                                   preset, s.cluster.gpus_per_node));
    Cluster cluster(s.cluster);
    AnalyticalNetwork net(cluster);
    const int ep = f.ep, nodes = std::max(1, ep / 8);
    std::vector<int> gpus(static_cast<std::size_t>(ep));
    std::iota(gpus.begin(), gpus.end(), 0);
    // Uniform routing: every rank sends T k / ep copies to each rank (256 / ep experts each).
    const double copies = static_cast<double>(kTokens) * kTopK / ep;
    std::vector<double> a(static_cast<std::size_t>(ep) * ep, copies);
    const int limit = nodes > 1 ? std::min(nodes, kGroupsLimit) : 0;
    // What DeepEP's test counts per rank: across nodes every (token, node) pair it reaches, its own
    // node included; in one node every token a rank receives, its own included.
    const double per_gpu = kTokens * (1.0 - std::pow(1.0 - 1.0 / ep, kTopK));
    const double per_node = 1.0 - std::pow(1.0 - 1.0 / nodes, kTopK);
    const double reached = std::min(nodes * per_node, nodes > 1 ? static_cast<double>(limit) : 1.0);
    const double counted_tokens = nodes > 1 ? kTokens * reached : per_gpu * ep;
    for (bool combine : {false, true}) {
      const double token_bytes = combine ? kHidden * 2.0 : dispatch_token_bytes(kHidden, 2, true);
      const std::vector<double> bytes = hierarchical_exchange(a, gpus, 8, kTopK, token_bytes, limit);
      const TimeNs t = net.all_to_all_v(bytes, gpus);
      DispatchValidationRow r;
      r.ep = ep;
      r.nodes = nodes;
      r.combine = combine;
      r.time_us = static_cast<double>(t) / 1e3;
      // DeepEP scales its BF16 count by (1 + 4 / 128) / 2 for FP8: the FP8 token size here.
      r.counted_bytes = counted_tokens * token_bytes;
      r.logical_gbps = r.counted_bytes / static_cast<double>(t);
      r.bottleneck = nodes > 1 ? "RDMA" : "NVL";
      r.published_gbps = combine ? f.combine_gbps : f.dispatch_gbps;
      r.error_pct = 100.0 * (r.logical_gbps - r.published_gbps) / r.published_gbps;
      rows.push_back(r);
    }
  }
  return rows;
}

int cmd_validate_dispatch(const std::vector<std::string>& args) {
  std::string preset = "deepseek-h800";
  for (std::size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--cluster" && i + 1 < args.size()) preset = args[++i];
    else throw InputError(fmt::format("moesim validate dispatch: unknown option '{}'; allowed: --cluster PRESET", args[i]));
  }
  std::cout << fmt::format("DeepEP's normal-kernel shape on {} (4096 tokens/rank, hidden 7168, top-8 of 256, "
                           "<= 4 nodes/token, FP8 dispatch, BF16 combine)\n",
                           preset);
  std::cout << fmt::format("{:<9} {:>4} {:>6} {:>10} {:>12} {:>14} {:>10} {:>9}\n", "call", "ep", "nodes", "time_us",
                           "counted_MB", "logical_gbps", "published", "error_%");
  for (const DispatchValidationRow& r : dispatch_validation_rows(preset))
    std::cout << fmt::format("{:<9} {:>4} {:>6} {:>10.1f} {:>12.2f} {:>9.1f} {:<4} {:>10.0f} {:>+9.1f}\n",
                             r.combine ? "combine" : "dispatch", r.ep, r.nodes, r.time_us, r.counted_bytes / 1e6,
                             r.logical_gbps, r.bottleneck, r.published_gbps, r.error_pct);
  std::cout << "source: deepseek-ai/DeepEP docs/legacy.md (V1 normal kernels, H800 + CX7 400 Gb/s)\n";
  return 0;
}

}  // namespace moesim
