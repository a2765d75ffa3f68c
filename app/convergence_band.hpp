#pragma once
// How much a ranking rests on the convergence model: the same runs' times to convergence under
// every form of kConvergenceForms (compare --convergence-band), per policy the range, per form
// the ranking, and whether the rankings agree.
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "app/runner.hpp"

namespace moesim {

struct ConvergenceBand {
  std::vector<std::string> forms;
  // [form]: the labels of the policies that converged (not OOM), fastest first; ties keep the
  // scenario's order.
  std::vector<std::vector<std::string>> rankings;
  // [policy]: the smallest and largest time to convergence over the forms it converged under.
  std::vector<std::optional<TimeNs>> min_ns, max_ns;
  // Every form converged the same policies, in the same order.
  bool rank_stable = true;
};

// Empty forms when the runs did not follow the band.
[[nodiscard]] ConvergenceBand convergence_band(const std::vector<PolicyResult>& results);
// For summary.json and compare.json.
[[nodiscard]] nlohmann::json band_json(const ConvergenceBand& band, const PolicyResult& r, std::size_t index);
[[nodiscard]] nlohmann::json band_json(const ConvergenceBand& band);
// The lines under the summary table.
[[nodiscard]] std::string band_text(const ConvergenceBand& band);

}  // namespace moesim
