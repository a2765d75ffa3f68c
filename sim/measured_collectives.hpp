#pragma once
// Collective times measured on real GPUs (`moesim calibrate --collectives`) in place of NCCL's cost
// model where they apply: the same collective over the same number of GPUs, all in one node (the
// measurement ran on the GPUs of one machine), at a size inside the measured range, over links
// no slower than the spec says (no link factor or explicit graph link slowing the ring). Everything
// else, and every point-to-point transfer and all-to-all-v, goes to the wrapped model unchanged.
#include <atomic>
#include <string>
#include <vector>

#include "sim/network.hpp"

namespace moesim {

// One measured collective: time of one call per bytes per rank, ascending bytes.
struct MeasuredCollective {
  Collective collective = Collective::AllReduce;
  int ranks = 0;
  std::vector<double> bytes;
  std::vector<double> time_ns;
};

class MeasuredCollectiveNetwork final : public NetworkModel {
 public:
  // Keeps references to `base` and `cluster`, which must outlive it. `origin` names the profile
  // in the report. Throws std::invalid_argument on a curve without points or with bytes that do
  // not ascend, or times that are not positive.
  MeasuredCollectiveNetwork(const NetworkModel& base, const Cluster& cluster, std::vector<MeasuredCollective> curves,
                            std::string origin);

  [[nodiscard]] std::string name() const override { return base_.name(); }
  [[nodiscard]] TimeNs all_to_all_v(const std::vector<double>& bytes) const override { return base_.all_to_all_v(bytes); }
  [[nodiscard]] TimeNs all_to_all_v(const std::vector<double>& bytes, const std::vector<int>& gpus) const override {
    return base_.all_to_all_v(bytes, gpus);
  }
  [[nodiscard]] std::vector<TimeNs> transfers(const std::vector<Transfer>& ts) const override {
    return base_.transfers(ts);
  }
  // The measured time where a curve applies (log-log interpolation between measured sizes, made
  // monotone by a running maximum); the wrapped model's estimate otherwise.
  [[nodiscard]] CollectiveEstimate collective(Collective c, double bytes, const std::vector<int>& gpus) const override;

  // Lookups answered by the measurements and by the wrapped model (callers may memoise, so these
  // count distinct lookups, not collectives run).
  [[nodiscard]] std::uint64_t measured_calls() const { return measured_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t modelled_calls() const { return modelled_.load(std::memory_order_relaxed); }
  // One line for the summary: what the profile answered and what fell back to the model.
  [[nodiscard]] std::string report() const;

 private:
  const NetworkModel& base_;
  const Cluster& cluster_;
  std::vector<MeasuredCollective> curves_;
  std::string origin_;
  mutable std::atomic<std::uint64_t> measured_{0}, modelled_{0};
};

}  // namespace moesim
