#pragma once
// The network models behind one interface, so that a congestion-aware (flow-level) model can
// replace the analytical one without touching the iteration model.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/units.hpp"
#include "sim/cluster.hpp"
#include "sim/collectives.hpp"

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
  // The same inside a group: bytes[i * n + j] from gpus[i] to gpus[j], n = gpus.size() (an
  // expert-parallel group's exchange; other groups' concurrent exchanges are not seen).
  [[nodiscard]] virtual TimeNs all_to_all_v(const std::vector<double>& bytes,
                                            const std::vector<int>& gpus) const = 0;
  // An NCCL collective over `gpus` (sorted, distinct), `bytes` per rank.
  [[nodiscard]] virtual CollectiveEstimate collective(Collective c, double bytes,
                                                      const std::vector<int>& gpus) const = 0;
  // Concurrent point-to-point transfers; returns each GPU's busy time (0 for uninvolved GPUs).
  [[nodiscard]] virtual std::vector<TimeNs> transfers(const std::vector<Transfer>& ts) const = 0;
};

// How fast the rings of a collective over `gpus` run on the cluster as built, as a fraction (at
// most 1) of the rate per hop NCCL's model assumes from the spec (`intra_hop_gbps`,
// `inter_hop_gbps`), separately for the hops inside a node and those between nodes. The ring
// visits each node's participants in id order and crosses from a node to the next with the
// participants of the same index (each uses its own NIC share, as NCCL's rail-local channels do).
// All hops of a class run at once at one common rate (NCCL splits the data evenly over its
// channels), each spread evenly over its equal-cost paths; that rate is the most every directed
// link can carry. The pace is it over the assumed rate (between nodes, over the smaller of that
// and the hop's nominal port bandwidth, Cluster::port_gbps(Port)), so that an unmodified built shape
// gives exactly 1 while
// link factors, an explicit graph's links (two GPUs' rings through one NIC) and fat-tree uplinks
// narrower than the rings crossing them show. NCCL does not measure links, but the real ring runs
// at the pace of its slowest link; NCCL's own figure stays the ceiling.
struct RingPace {
  double intra = 1.0;
  double inter = 1.0;
};
[[nodiscard]] RingPace ring_pace(const Cluster& cluster, const std::vector<int>& gpus, double intra_hop_gbps,
                                 double inter_hop_gbps);

// Per-GPU analytical model: a GPU's time is its busiest port's send or receive volume over the
// port bandwidth, plus one NCCL point-to-point message latency; no two flows are seen to share a
// link beyond that, except an oversubscribed fat-tree leaf's uplinks, charged as one shared port
// (docs/network.md).
class AnalyticalNetwork final : public NetworkModel {
 public:
  explicit AnalyticalNetwork(const Cluster& cluster) : cluster_(cluster) {}
  [[nodiscard]] std::string name() const override { return "analytical"; }
  [[nodiscard]] TimeNs all_to_all_v(const std::vector<double>& bytes) const override;
  [[nodiscard]] TimeNs all_to_all_v(const std::vector<double>& bytes,
                                    const std::vector<int>& gpus) const override;
  [[nodiscard]] CollectiveEstimate collective(Collective c, double bytes,
                                              const std::vector<int>& gpus) const override;
  [[nodiscard]] std::vector<TimeNs> transfers(const std::vector<Transfer>& ts) const override;
  // The group description NCCL's model needs for `gpus`: the spec's figures, as NCCL sees the
  // hardware, scaled by ring_pace for the links as built.
  [[nodiscard]] CollectiveGroup group_of(const std::vector<int>& gpus) const;

 private:
  // Routes of the (member, member) pairs of a recent group, row-major, null until first used:
  // a layer's exchanges repeat over a few expert-parallel groups, and their 64 x 64 route look-ups
  // were the larger part of an exchange's cost at DeepSeek-V3's scale. Routes never move
  // (Cluster keeps them at stable addresses), so the pointers stay valid.
  struct GroupRoutes {
    std::vector<int> members;
    std::vector<const Route*> routes;
    std::uint64_t used = 0;
  };
  [[nodiscard]] std::vector<const Route*>& group_routes(const std::vector<int>& gpus) const;
  const Cluster& cluster_;
  mutable std::vector<GroupRoutes>
      group_routes_;  // at most 64 (a stage's groups times 16 stages), least recently used out
  mutable std::uint64_t group_routes_clock_ = 0;
};

// What a set of concurrent messages puts on each GPU's ports (send and receive volume per port
// class) and on each binding (oversubscribed) leaf uplink bundle, and the time that takes: the
// AnalyticalNetwork's model and, without the bundles per GPU, the FlowNetwork's lower bound.
class PortLoad {
 public:
  // `per_gpu`: also keep what each GPU's messages used (gpu_latency, gpu_time with bundles);
  // an exchange timed as a whole does not need it.
  PortLoad(const Cluster& cluster, bool per_gpu);
  // A load of one exchange among `gpus` only (per_gpu off): its arrays are that group's, not
  // the cluster's (an expert-parallel group of 64 among 2,048 GPUs); add_member adds to it.
  PortLoad(const Cluster& cluster, std::span<const int> gpus);
  // A message from the group's s-th GPU to its d-th (s != d), as add.
  void add_member(std::size_t s, std::size_t d, double bytes);
  // add_member(s, d, bytes[s * n + d]) for every s != d with bytes > 0, in row-major order
  // (n = the group's size): one exchange's matrix in one pass.
  void add_members(const std::vector<double>& bytes);
  // The same with a cache of the group's routes (routes[s * n + d]: Cluster::route of that pair,
  // or null until a message of the pair first needs it, when it is looked up and kept).
  void add_members(const std::vector<double>& bytes, std::vector<const Route*>& routes);
  // A GPU-to-GPU message along Cluster::route (src != dst). Both ends are marked as using the
  // route's source port class for the latency.
  void add(int src_gpu, int dst_gpu, double bytes);
  // A copy between a GPU and its host over the GPU's host port (no latency class).
  void add_host_copy(int gpu, bool to_host, double bytes);
  // The busiest port of `gpu` (send or receive volume over the GPU's port bandwidth); with
  // `bundles`, also the busiest bundle any of its messages crossed.
  [[nodiscard]] TimeNs gpu_time(int gpu, bool bundles) const;
  // The largest gpu_time over all GPUs and every bundle.
  [[nodiscard]] TimeNs max_time() const;
  // NCCL point-to-point latency of the port classes `gpu` used, plus the switch-to-switch link
  // latency of its longest route (Route::fabric_latency_ns).
  [[nodiscard]] TimeNs gpu_latency(int gpu) const;
  // The same over every message (one exchange).
  [[nodiscard]] TimeNs exchange_latency() const;

 private:
  [[nodiscard]] TimeNs bundle_time(int directed_bundle) const;
  // add_members' pass; `routes` (n x n, may be null) caches the pairs' routes.
  void add_members_with(const std::vector<double>& bytes, const Route** routes);
  // Adds to the ports of entries s and d of send_ / recv_ (GPUs src and dst).
  void add_at(std::size_t s, std::size_t d, int src_gpu, int dst_gpu, double bytes);
  // The busiest port of entry e (GPU `gpu`).
  [[nodiscard]] TimeNs port_time(std::size_t e, int gpu) const;
  const Cluster& cluster_;
  std::span<const int> members_;      // a group's load: the GPU of each entry (empty: entry = GPU)
  std::vector<double> send_, recv_;   // [gpu * kNumPorts + port]
  std::vector<double> bundle_bytes_;  // [2 b]: leaving leaf b; [2 b + 1]: entering it
  std::vector<char> gpu_bundles_;     // [gpu * 2 bundles + directed bundle]: crossed by its messages
  std::vector<char> intra_, nic_;
  std::vector<double> fabric_ns_;
  bool per_gpu_ = true;
  bool any_intra_ = false, any_nic_ = false;
  double any_fabric_ns_ = 0.0;
};

// Latency of one NCCL point-to-point message (Simple protocol): base latency plus the hop
// latency of the slowest port class used.
[[nodiscard]] TimeNs p2p_latency_ns(bool uses_intra, bool uses_nic, bool nvlink);

}  // namespace moesim
