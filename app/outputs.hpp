#pragma once
#include <string>
#include <vector>

#include "app/runner.hpp"

namespace moesim {

// summary.json: the resolved scenario and each policy's results.
[[nodiscard]] nlohmann::json summary_json(const Scenario& s, const std::vector<PolicyResult>& results);
// iterations.csv: one row per policy and iteration.
[[nodiscard]] std::string iterations_csv(const std::vector<PolicyResult>& results);
// experts.csv: one row per policy, sampled iteration, MoE layer and expert: assignments routed to
// the expert, assignments processed by the slots holding it, and its number of replicas. For every
// policy but the oracle, routed - processed is what capacity dropped of that expert; the oracle's
// slots take any expert's tokens, so there `processed` is the slots' share of the layer.
[[nodiscard]] std::string experts_csv(const std::vector<PolicyResult>& results);
// One row per policy: time to convergence, iteration time breakdown, drops, bytes, memory.
[[nodiscard]] std::string compare_csv(const std::vector<PolicyResult>& results);
// The terminal table.
[[nodiscard]] std::string summary_table(const Scenario& s, const std::vector<PolicyResult>& results);
// Writes summary.json and iterations.csv into `dir` (created if missing); each file is written to
// a temporary name and renamed, so a reader never sees a half-written file.
// With `comparison`, also compare.csv and compare.json (one row per policy); experts.csv when
// per-expert samples were recorded.
void write_outputs(const std::string& dir, const Scenario& s, const std::vector<PolicyResult>& results,
                   bool comparison = false);
// Chrome / Perfetto trace-event JSON of the recorded iterations: one process per policy, two
// lanes (threads) per GPU: compute and communication.
[[nodiscard]] std::string timeline_json(const Scenario& s, const std::vector<PolicyResult>& results);
// Atomic write of one file.
void write_file_atomic(const std::string& path, const std::string& content);
// `s` as one plain file name: characters other than letters, digits and . - + _ become '-', and a
// name of only dots (".", "..") or nothing becomes "unnamed", so it cannot leave its folder.
[[nodiscard]] std::string file_safe(const std::string& s);

}  // namespace moesim
