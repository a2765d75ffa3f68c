#pragma once
// The network models behind one interface, so that a congestion-aware (flow-level) model can
// replace the analytical one without touching the iteration model.
#include <memory>
#include <string>
#include <vector>

#include "sim/cluster.hpp"
#include "sim/collectives.hpp"
#include "sim/units.hpp"

namespace moesim {

// A transfer endpoint: a GPU, or the host of a node.
struct Endpoint {
  bool host = false;
  int index = 0;  // GPU id, or node id when host
};

struct Transfer {
  Endpoint src;
  Endpoint dst;
  double bytes = 0.0;
};

class NetworkModel {
 public:
  virtual ~NetworkModel() = default;
  [[nodiscard]] virtual std::string name() const = 0;
  // All-to-all-v over all GPUs; bytes[src * G + dst] (diagonal ignored: it stays on the GPU).
  // Every participant leaves the exchange at the returned time after the last one entered.
  [[nodiscard]] virtual TimeNs all_to_all_v(const std::vector<double>& bytes) const = 0;
  // An NCCL collective over `gpus` (sorted, distinct), `bytes` per rank.
  [[nodiscard]] virtual CollectiveEstimate collective(Collective c, double bytes,
                                                      const std::vector<int>& gpus) const = 0;
  // Concurrent point-to-point transfers; returns each GPU's busy time (0 for uninvolved GPUs).
  [[nodiscard]] virtual std::vector<TimeNs> transfers(const std::vector<Transfer>& ts) const = 0;
};

// Per-GPU analytical model: a GPU's time is its busiest port's send or receive volume over the
// port bandwidth, plus one NCCL point-to-point message latency; no two flows are seen to share a
// link beyond that.
class AnalyticalNetwork final : public NetworkModel {
 public:
  explicit AnalyticalNetwork(const Cluster& cluster) : cluster_(cluster) {}
  [[nodiscard]] std::string name() const override { return "analytical"; }
  [[nodiscard]] TimeNs all_to_all_v(const std::vector<double>& bytes) const override;
  [[nodiscard]] CollectiveEstimate collective(Collective c, double bytes,
                                              const std::vector<int>& gpus) const override;
  [[nodiscard]] std::vector<TimeNs> transfers(const std::vector<Transfer>& ts) const override;
  // The group description NCCL's model needs for `gpus`.
  [[nodiscard]] CollectiveGroup group_of(const std::vector<int>& gpus) const;

 private:
  const Cluster& cluster_;
};

// Latency of one NCCL point-to-point message (Simple protocol): base latency plus the hop
// latency of the slowest port class used.
[[nodiscard]] TimeNs p2p_latency_ns(bool uses_intra, bool uses_nic, bool nvlink);

}  // namespace moesim
