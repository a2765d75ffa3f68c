#pragma once
// Shared by the network tests: a cluster preset resolved as a scenario would, both network models
// over it, and the file:line:col a config error should name.
#include <fmt/format.h>

#include <optional>
#include <string>
#include <vector>

#include "app/scenario.hpp"
#include "sim/flow_network.hpp"

namespace moesim::test {

inline ClusterSpec cluster_spec(const std::string& preset, int nodes) {
  return load_scenario_text(fmt::format("cluster: {{preset: {}, nodes: {}}}\nmodel: {{preset: mixtral-8x7b}}\n"
                                        "placement: {{slots_per_gpu: 8}}\npolicies: [static]\n",
                                        preset, nodes),
                            "<test>", {}, std::nullopt)
      .cluster;
}

// GPUs from .. to - 1: a collective's group.
inline std::vector<int> gpu_range(int from, int to) {
  std::vector<int> v;
  for (int g = from; g < to; ++g) v.push_back(g);
  return v;
}

// A cluster with both network models; all-to-all matrices are [src * G + dst].
struct World {
  Cluster cluster;
  AnalyticalNetwork analytical;
  FlowNetwork flow;
  explicit World(const ClusterSpec& s) : cluster(s), analytical(cluster), flow(cluster) {}
  [[nodiscard]] int gpus() const { return cluster.num_gpus(); }
  [[nodiscard]] std::vector<double> empty() const {
    return std::vector<double>(static_cast<std::size_t>(gpus()) * static_cast<std::size_t>(gpus()), 0.0);
  }
  double& at(std::vector<double>& m, int s, int d) const {
    return m[static_cast<std::size_t>(s) * static_cast<std::size_t>(gpus()) + static_cast<std::size_t>(d)];
  }
};

// "ORIGIN:LINE:COL" (1-based) of the first occurrence of `needle` in `text`; "" when absent.
inline std::string text_position(const std::string& text, const std::string& needle, const std::string& origin) {
  const auto at = text.find(needle);
  if (at == std::string::npos) return "";
  int line = 1;
  std::size_t line_start = 0;
  for (std::size_t i = 0; i < at; ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  return origin + ":" + std::to_string(line) + ":" + std::to_string(at - line_start + 1);
}

}  // namespace moesim::test
