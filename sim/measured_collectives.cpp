#include "sim/measured_collectives.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace moesim {

namespace {
const char* collective_name(Collective c) {
  switch (c) {
    case Collective::AllReduce: return "all_reduce";
    case Collective::AllGather: return "all_gather";
    case Collective::ReduceScatter: return "reduce_scatter";
    case Collective::Broadcast: return "broadcast";
  }
  return "?";
}
}  // namespace

MeasuredCollectiveNetwork::MeasuredCollectiveNetwork(const NetworkModel& base, const Cluster& cluster,
                                                     std::vector<MeasuredCollective> curves, std::string origin)
    : base_(base), cluster_(cluster), curves_(std::move(curves)), origin_(std::move(origin)) {
  for (MeasuredCollective& m : curves_) {
    if (m.bytes.empty() || m.bytes.size() != m.time_ns.size() || m.ranks < 2)
      throw std::invalid_argument(fmt::format("{}: {} needs sizes with times and at least 2 ranks", origin_,
                                              collective_name(m.collective)));
    for (std::size_t i = 0; i < m.bytes.size(); ++i) {
      if (!(m.bytes[i] > 0.0) || !(m.time_ns[i] > 0.0) || (i > 0 && !(m.bytes[i] > m.bytes[i - 1])))
        throw std::invalid_argument(fmt::format("{}: {}: sizes must ascend and sizes and times be positive",
                                                origin_, collective_name(m.collective)));
    }
    // More bytes never take less time: noise that says otherwise is flattened, as for kernels.
    for (std::size_t i = 1; i < m.time_ns.size(); ++i) m.time_ns[i] = std::max(m.time_ns[i], m.time_ns[i - 1]);
  }
}

CollectiveEstimate MeasuredCollectiveNetwork::collective(Collective c, double bytes, const std::vector<int>& gpus) const {
  CollectiveEstimate est = base_.collective(c, bytes, gpus);
  const auto it = std::find_if(curves_.begin(), curves_.end(), [&](const MeasuredCollective& m) {
    return m.collective == c && m.ranks == static_cast<int>(gpus.size());
  });
  const bool one_node = !gpus.empty() && std::all_of(gpus.begin(), gpus.end(), [&](int g) {
    return cluster_.node_of(g) == cluster_.node_of(gpus.front());
  });
  // The measurement ran on the machine's own links: a group whose ring crosses a link slower than
  // the spec says (link factors, an explicit graph) is the model's, which sees it (ring_pace).
  const auto as_measured = [&] {
    const ClusterSpec& spec = cluster_.spec();
    return ring_pace(cluster_, gpus, spec.intra_gbps(), spec.nic_gbps()).intra == 1.0;
  };
  if (it == curves_.end() || !one_node || !(bytes >= it->bytes.front() && bytes <= it->bytes.back()) ||
      !as_measured()) {
    modelled_.fetch_add(1, std::memory_order_relaxed);
    return est;
  }
  const std::vector<double>& b = it->bytes;
  const std::vector<double>& t = it->time_ns;
  const auto hi = static_cast<std::size_t>(std::lower_bound(b.begin(), b.end(), bytes) - b.begin());
  double time = t[hi];
  if (b[hi] != bytes) {
    // A straight line in (log bytes, log time) between the two measured sizes around `bytes`.
    const std::size_t lo = hi - 1;
    time = t[lo] * std::exp(std::log(bytes / b[lo]) / std::log(b[hi] / b[lo]) * std::log(t[hi] / t[lo]));
  }
  est.time_ns = static_cast<TimeNs>(std::llround(time));
  est.latency_ns = 0;
  est.alg_gbps = bytes / time;  // bytes per ns = GB/s
  const double n = static_cast<double>(gpus.size());
  // nccl-tests' bus bandwidth (doc/PERFORMANCE.md): all-reduce 2(n-1)/n, the others (n-1)/n.
  est.bus_gbps = est.alg_gbps * (c == Collective::AllReduce ? 2.0 * (n - 1.0) / n : c == Collective::Broadcast ? 1.0 : (n - 1.0) / n);
  measured_.fetch_add(1, std::memory_order_relaxed);
  return est;
}

std::string MeasuredCollectiveNetwork::report() const {
  std::string what;
  for (const MeasuredCollective& m : curves_)
    what += fmt::format("{}{} over {} GPUs ({:.0f} to {:.0f} bytes)", what.empty() ? "" : ", ",
                        collective_name(m.collective), m.ranks, m.bytes.front(), m.bytes.back());
  return fmt::format(
      "measured collectives from {} ({}) answered {} lookups; NCCL's model {} (other collectives, "
      "group sizes, groups across nodes, sizes outside the measured range or slowed links)",
      origin_, what, measured_calls(), modelled_calls());
}

}  // namespace moesim
