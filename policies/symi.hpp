#pragma once
// SwiftMoE / SYMI (Skiadopoulos et al., arXiv 2504.19925, NSDI 2026): the pieces of the policy
// that tests check on their own (policies/symi.cpp holds the policy itself).
#include <cstdint>
#include <vector>

namespace moesim {

// The paper's Algorithm 1: replicas of each expert for `total_slots` slots, proportional to
// `popularity`, at least one each. goal_i = p_i / sum(p) * slots; count_i = floor(max(goal_i, 1));
// diff_i = count_i - goal_i; while the counts exceed the slots, one replica is taken from the
// expert with the largest diff that has more than one; while they fall short, one is given to the
// expert with the smallest diff (each step updates that expert's diff). Ties go to the lowest
// expert index. A popularity summing to 0 counts as uniform. Needs total_slots >= experts.
// `adjustments`, when given, receives the number of one-replica corrections made (each scans
// the E diffs).
[[nodiscard]] std::vector<int> symi_replica_counts(const std::vector<double>& popularity, int total_slots,
                                                   int* adjustments = nullptr);

// Elementary steps of one layer's scheduling, as the paper's per-iteration procedure runs it
// (shared/reference/policies.md): Algorithm 1's goals, floors and diffs (E), its corrections
// (`adjustments` scans of the E diffs), the slot fill (one step per slot) and the gradient-source
// map (one choice per (expert, optimizer-owner node)).
//   steps = E + adjustments x E + slots + E x owners
[[nodiscard]] std::int64_t symi_scheduler_steps(int experts, int slots, int owners, int adjustments);

// Slots filled in expert order: all replicas of expert 0, then expert 1, ... (slot j lives on
// GPU j / slots_per_gpu, so replica groups are runs of consecutive GPUs).
[[nodiscard]] std::vector<int> symi_fill_slots(const std::vector<int>& replica_counts);

// The paper's section 3.3 communication model, per rank and iteration, for X bytes of one expert
// instance (gradients or weights), E experts, N ranks (one GPU each), S slots per rank and the
// PCIe and network bandwidths (bytes/s). With the optimizer offloaded each rank also moves its
// E/N share of every expert over PCIe; without offload that term is absent.
//   static: (E/N) X / BW_pcie + ((S N - E) / N) X / BW_net
//   SYMI:   (E/N) X / BW_pcie + ((S N - S) / N) X / BW_net
[[nodiscard]] double symi_static_comm_seconds(double experts, double ranks, double slots, double bytes,
                                              double pcie_bytes_per_s, double net_bytes_per_s, bool offload);
[[nodiscard]] double symi_comm_seconds(double experts, double ranks, double slots, double bytes,
                                       double pcie_bytes_per_s, double net_bytes_per_s, bool offload);

}  // namespace moesim
