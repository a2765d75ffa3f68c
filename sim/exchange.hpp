#pragma once
// The exchange algorithms a policy may pick per MoE layer (LayerDispatch::exchange), timed on
// the network model. Kept apart from the iteration loop, which only calls exchange_ns.
#include <vector>

#include "core/units.hpp"
#include "sim/network.hpp"
#include "sim/policy.hpp"

namespace moesim {

// The two stages of a two-level exchange of `bytes` (bytes[i * n + j] from gpus[i] to gpus[j],
// n = gpus.size(), gpus ascending). Stage 1 (intra): GPU (node a, local i) sends to its node's GPU
// of local index j everything it has for local index j of every node. Stage 2 (inter): GPU
// (a, j) sends to (b, j) the sum over the sources of node a of what they have for (b, j): one
// message per remote node instead of one per remote GPU. Where the forwarding GPU (a, j) is not
// a member of the group, the message goes straight to its destination in stage 2.
struct TwoLevelStages {
  std::vector<double> intra;  // [i * n + j]
  std::vector<double> inter;  // [i * n + j]
};
[[nodiscard]] TwoLevelStages two_level_stages(const std::vector<double>& bytes, const std::vector<int>& gpus,
                                              int gpus_per_node);

// The time of one exchange of `bytes` among `gpus` by `algorithm`: flat is one all-to-all-v;
// two_level is its two stages one after the other (each an all-to-all-v, each paying its own
// latency); none takes no time.
[[nodiscard]] TimeNs exchange_ns(const NetworkModel& network, ExchangeAlgorithm algorithm,
                                 const std::vector<double>& bytes, const std::vector<int>& gpus, int gpus_per_node);

}  // namespace moesim
