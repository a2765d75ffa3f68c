#pragma once
// The output files of `run` and `compare` (docs/outputs.md describes every file and column).
#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

#include "app/atomic_files.hpp"
#include "app/runner.hpp"

namespace moesim {

// summary.json: the resolved scenario and each policy's results.
[[nodiscard]] nlohmann::json summary_json(const Scenario& s, const std::vector<PolicyResult>& results);
// summary.json's "results" (and "convergence_band" when the runs followed it), without the scenario.
[[nodiscard]] nlohmann::json results_json(const std::vector<PolicyResult>& results);
// iterations.csv: one row per policy and iteration.
[[nodiscard]] std::string iterations_csv(const std::vector<PolicyResult>& results);
// experts.csv: one row per policy, sampled iteration, MoE layer and expert: assignments routed to
// the expert, assignments processed by the slots holding it, and its number of replicas. For every
// policy but the oracle, routed - processed is what capacity dropped of that expert; the oracle's
// slots take any expert's tokens, so there `processed` is the slots' share of the layer.
[[nodiscard]] std::string experts_csv(const std::vector<PolicyResult>& results);
// One compare row (compare.csv, compare.json, study.csv, study.json) of one entry of summary.json's
// "results"; with `banded`, the convergence band's range too. Empty CSV cells are JSON nulls.
[[nodiscard]] nlohmann::ordered_json compare_row(const nlohmann::json& result, bool banded);
// The keys of compare_row, in order.
[[nodiscard]] std::vector<std::string> compare_columns(bool banded);
// compare_row of every result of a summary (or of results_json).
[[nodiscard]] nlohmann::ordered_json compare_rows(const nlohmann::json& summary);
// Rows of equal keys as CSV: a header of the keys, one line per row.
[[nodiscard]] std::string rows_csv(const nlohmann::ordered_json& rows);
// One row per policy: time to convergence, iteration time breakdown, drops, bytes, memory.
[[nodiscard]] std::string compare_csv(const std::vector<PolicyResult>& results);
// A CSV cell: quoted when it holds a comma, quote or line break.
[[nodiscard]] std::string csv_cell(const std::string& s);
// A JSON value as a CSV cell: null is empty, numbers in shortest round-trip form.
[[nodiscard]] std::string json_cell(const nlohmann::json& v);
// "converged", "not_converged" or "oom" of one summary result.
[[nodiscard]] std::string result_status(const nlohmann::json& result);
// The terminal table.
[[nodiscard]] std::string summary_table(const Scenario& s, const std::vector<PolicyResult>& results);
// The files of a run's folder, rendered: summary.json and iterations.csv; experts.csv when
// per-expert samples were recorded; with `comparison`, compare.csv and compare.json.
[[nodiscard]] std::vector<std::pair<std::string, std::string>> output_files(const Scenario& s,
                                                                            const std::vector<PolicyResult>& results,
                                                                            bool comparison);
// Writes output_files into `folder` (not yet committed).
void write_outputs(OutputFolder& folder, const Scenario& s, const std::vector<PolicyResult>& results,
                   bool comparison = false);
// Writes output_files as the folder `dir`, complete or not at all (OutputFolder).
void write_outputs(const std::string& dir, const Scenario& s, const std::vector<PolicyResult>& results,
                   bool comparison = false);
// Chrome / Perfetto trace-event JSON of the recorded iterations: one process per policy, two
// lanes (threads) per GPU: compute and communication.
[[nodiscard]] std::string timeline_json(const Scenario& s, const std::vector<PolicyResult>& results);
// `s` as one plain file name: characters other than letters, digits and . - + _ become '-', and a
// name of only dots (".", "..") or nothing becomes "unnamed", so it cannot leave its folder.
[[nodiscard]] std::string file_safe(const std::string& s);

}  // namespace moesim
