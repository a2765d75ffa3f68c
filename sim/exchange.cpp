#include "sim/exchange.hpp"

#include <algorithm>

namespace moesim {

TwoLevelStages two_level_stages(const std::vector<double>& bytes, const std::vector<int>& gpus, int gpus_per_node) {
  const std::size_t n = gpus.size();
  TwoLevelStages out{std::vector<double>(n * n, 0.0), std::vector<double>(n * n, 0.0)};
  auto index_of = [&](int gpu) -> std::size_t {
    const auto it = std::lower_bound(gpus.begin(), gpus.end(), gpu);
    return it != gpus.end() && *it == gpu ? static_cast<std::size_t>(it - gpus.begin()) : n;
  };
  for (std::size_t i = 0; i < n; ++i) {
    const int node = gpus[i] / gpus_per_node;
    for (std::size_t j = 0; j < n; ++j) {
      const double b = bytes[i * n + j];
      if (b <= 0.0 || i == j) continue;
      if (gpus[j] / gpus_per_node == node) {
        out.intra[i * n + j] += b;  // same node: stage 1 delivers it
        continue;
      }
      // The GPU of this node with the destination's local index aggregates for the remote node.
      const std::size_t peer = index_of(node * gpus_per_node + gpus[j] % gpus_per_node);
      if (peer == n) {
        out.inter[i * n + j] += b;
        continue;
      }
      if (peer != i) out.intra[i * n + peer] += b;
      out.inter[peer * n + j] += b;
    }
  }
  return out;
}

TimeNs exchange_ns(const NetworkModel& network, ExchangeAlgorithm algorithm, const std::vector<double>& bytes,
                   const std::vector<int>& gpus, int gpus_per_node) {
  switch (algorithm) {
    case ExchangeAlgorithm::none:
      return 0;
    case ExchangeAlgorithm::two_level: {
      const TwoLevelStages st = two_level_stages(bytes, gpus, gpus_per_node);
      return network.all_to_all_v(st.intra, gpus) + network.all_to_all_v(st.inter, gpus);
    }
    case ExchangeAlgorithm::flat:
      break;
  }
  return network.all_to_all_v(bytes, gpus);
}

}  // namespace moesim
