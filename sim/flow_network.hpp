#pragma once
// Flow-level network model: every message is a fluid flow along its route in the cluster graph,
// and the flows share each link max-min fairly (sim/maxmin.hpp), re-shared whenever flows end
// (ends that fall within a small window of each other are retired together; see below).
// Unlike AnalyticalNetwork it sees two flows meet on a link other than their own GPU's port:
// senders converging on one receiver, or a hot GPU's NIC holding back flows that then leave
// their other links idle.
//
// Links: each undirected cluster edge is two directed links, one per direction, each of the
// edge's per-direction bandwidth (full duplex, as NVLink, PCIe and NICs are). Switch, host and
// fabric vertices forward without limit; a GPU's NIC edge is its share of the node's NICs, as in
// Cluster. Routes are Cluster's lowest-latency paths; a message with several equal-cost paths
// (ECMP: a fat tree with several spines) is split evenly over them, one fluid sub-flow per path,
// like NCCL's several channels and queue pairs spread over the fabric's paths, and ends when its
// last part does.
//
// Where the paths of a message differ only in the uplinks of fat-tree leaves, and each of those
// leaves' uplinks all have the same bandwidth, the parts are not simulated one by one: every
// message that crosses a leaf's uplinks uses all of them evenly, so the spines are
// interchangeable, the max-min allocation (unique) gives every part of a message the same rate,
// and the leaf's uplinks act as one link of their summed bandwidth in each direction. The
// message is then one flow over that "bundle" link: the same result with one flow instead of
// one per spine. A link factor on one uplink breaks the symmetry; every message is then split
// into parts.
//
// Timing rule, the same as AnalyticalNetwork's so the two compare exactly: all flows start
// together, the bandwidth phase ends when the last flow ends (rounded up to the ns, as
// transfer_ns), and one NCCL point-to-point latency (p2p_latency_ns of the port classes used)
// is added. NCCL's per-hop latencies are inside that figure; the graph's edge latencies only
// pick the route, so they are not added a second time. The fluid result is never below the
// analytical per-port bound in exact arithmetic (a port carries its GPU's whole volume at most
// at its bandwidth, an oversubscribed leaf's uplinks the whole volume leaving the leaf); the
// returned time is clamped to that bound so that event-loop rounding, a fraction of a
// nanosecond, cannot make it the faster of the two. Switch-to-switch link latencies (fat-tree
// uplinks, explicit graphs) are added as in the analytical model (PortLoad).
//
// Messages are not split into NCCL chunks: chunks of one message follow one another on the
// same path, and a fluid flow already shares every byte fairly, so chunking changes no rate.
#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "sim/network.hpp"

namespace moesim {

class FlowNetwork final : public NetworkModel {
 public:
  // Flow ends less than `end_window` x (the exchange's per-port lower bound, i.e. the
  // analytical time without latency) after the earliest pending end are retired in one event,
  // at the last of their ends; 0 retires each distinct end on its own (exact fluid model, but
  // a skewed 256-GPU exchange then takes seconds). Each retirement is at most that window late,
  // so the result is at most about end_window slower than the exact fluid time, never faster
  // than the analytical one, and unchanged wherever ends are further apart.
  static constexpr double kDefaultEndWindow = 1e-3;
  // Keeps a reference to `cluster`, which must outlive the model.
  explicit FlowNetwork(const Cluster& cluster, double end_window = kDefaultEndWindow);

  [[nodiscard]] std::string name() const override { return "flow"; }
  [[nodiscard]] TimeNs all_to_all_v(const std::vector<double>& bytes) const override;
  [[nodiscard]] TimeNs all_to_all_v(const std::vector<double>& bytes, const std::vector<int>& gpus) const override;
  // Ring/tree collectives follow NCCL's cost model in both modes (same as AnalyticalNetwork).
  [[nodiscard]] CollectiveEstimate collective(Collective c, double bytes,
                                              const std::vector<int>& gpus) const override;
  // A GPU's busy time is when the last flow it sends or receives ends, plus the latency.
  // A GPU-host copy uses the GPU's own PCIe link (the port AnalyticalNetwork charges).
  [[nodiscard]] std::vector<TimeNs> transfers(const std::vector<Transfer>& ts) const override;

  // Directed links: edge i of the graph (in boost::edges order) is links 2i (from its lower- to
  // its higher-numbered vertex) and 2i+1 (back); after the edges' links, two per fat-tree
  // leaf: its uplinks together, up and down (see above).
  [[nodiscard]] int num_links() const { return static_cast<int>(link_gbps_.size()); }
  [[nodiscard]] double link_gbps(int link) const { return link_gbps_[static_cast<std::size_t>(link)]; }
  [[nodiscard]] double link_latency_ns(int link) const { return link_latency_ns_[static_cast<std::size_t>(link)]; }
  // The links of the route between two distinct GPUs, source first: its equal-cost path
  // `path` (0 .. Cluster::route(src, dst).paths - 1).
  [[nodiscard]] std::span<const int> route_links(int src_gpu, int dst_gpu, int path = 0) const {
    return cluster_.path_links(src_gpu, dst_gpu, path);
  }

  // What the last all_to_all_v or transfers call simulated.
  struct RunStats {
    std::size_t flows = 0;          // fluid flows: one per message and equal-cost path
    std::size_t events = 0;         // rate re-computations after the first
    std::uint64_t resolved = 0;     // flows re-solved by the max-min solver, all updates
    double bandwidth_ns = 0.0;      // end of the last flow, unrounded, before the clamp
    bool restored = false;          // the first allocation was the saved one of a repeated exchange
  };
  [[nodiscard]] const RunStats& last_run() const { return last_; }

 private:
  struct Flow {
    std::span<const int> links;
    double bytes = 0.0;
  };
  // Runs the flows to their ends; the finish time of each (ns from the common start) goes to
  // `finish` unless it is null.
  void simulate(const std::vector<Flow>& flows, TimeNs bound_ns, std::vector<double>* finish) const;
  // Appends the flows of one GPU-to-GPU message (one per equal-cost path, or one over the
  // bundle links); returns how many.
  std::size_t add_message(std::vector<Flow>& flows, int src_gpu, int dst_gpu, double bytes) const;
  // The message's path with its uplinks replaced by bundle links; empty when it cannot be.
  [[nodiscard]] std::span<const int> bundled_links(int src_gpu, int dst_gpu) const;

  const Cluster& cluster_;
  double end_window_;
  AnalyticalNetwork analytical_;
  std::vector<double> link_gbps_;
  std::vector<double> link_latency_ns_;
  std::vector<int> to_host_;    // per GPU: its PCIe link towards the host
  std::vector<int> from_host_;  // per GPU: back
  int bundle_base_ = 0;         // link id of the first bundle link
  bool bundles_on_ = false;     // every leaf's uplinks have one bandwidth: use bundle links
  std::vector<int> link_bundle_;     // per edge link: 2 b (up) or 2 b + 1 (down) of bundle b, or -1
  std::vector<int> bundle_uplinks_;  // per bundle: its uplinks, 0 when they differ in bandwidth
  // [src]: per destination asked for, the bundled links (filled lazily; a node map, so the
  // spans handed out stay valid).
  mutable std::vector<std::unordered_map<int, std::vector<int>>> bundled_;
  mutable RunStats last_;
};

}  // namespace moesim
