#include "app/convergence_band.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>

namespace moesim {

ConvergenceBand convergence_band(const std::vector<PolicyResult>& results) {
  ConvergenceBand b;
  if (results.empty() || results.front().band.empty()) return b;
  const std::size_t F = results.front().band.size();
  for (std::size_t f = 0; f < F; ++f) b.forms.push_back(results.front().band[f].form);
  b.min_ns.resize(results.size());
  b.max_ns.resize(results.size());
  for (std::size_t f = 0; f < F; ++f) {
    std::vector<std::size_t> order;
    for (std::size_t i = 0; i < results.size(); ++i) {
      const PolicyResult& r = results[i];
      if (r.oom || !r.band[f].converged) continue;
      order.push_back(i);
      const TimeNs t = r.band[f].time_to_convergence_ns;
      if (!b.min_ns[i] || t < *b.min_ns[i]) b.min_ns[i] = t;
      if (!b.max_ns[i] || t > *b.max_ns[i]) b.max_ns[i] = t;
    }
    std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) {
      return results[x].band[f].time_to_convergence_ns < results[y].band[f].time_to_convergence_ns;
    });
    std::vector<std::string> labels;
    for (std::size_t i : order) labels.push_back(results[i].label);
    b.rankings.push_back(std::move(labels));
  }
  for (std::size_t f = 1; f < F; ++f) b.rank_stable = b.rank_stable && b.rankings[f] == b.rankings[0];
  return b;
}

nlohmann::json band_json(const ConvergenceBand& band, const PolicyResult& r, std::size_t index) {
  using nlohmann::json;
  if (band.forms.empty()) return json(nullptr);
  json forms = json::object();
  for (std::size_t f = 0; f < band.forms.size(); ++f) {
    const PolicyResult::BandEntry& e = r.band[f];
    const bool ok = e.converged && !r.oom;
    const auto& rank = band.rankings[f];
    const auto at = std::find(rank.begin(), rank.end(), r.label);
    forms[band.forms[f]] = {
        {"converged", ok},
        {"iterations_to_converge", ok ? json(e.iterations_to_converge) : json(nullptr)},
        {"time_to_convergence_s", ok ? json(ns_to_s(e.time_to_convergence_ns)) : json(nullptr)},
        {"rank", at == rank.end() ? json(nullptr) : json(at - rank.begin() + 1)}};
  }
  const auto s = [](const std::optional<TimeNs>& t) { return t ? json(ns_to_s(*t)) : json(nullptr); };
  return json{{"forms", forms},
              {"min_time_to_convergence_s", s(band.min_ns[index])},
              {"max_time_to_convergence_s", s(band.max_ns[index])}};
}

nlohmann::json band_json(const ConvergenceBand& band) {
  using nlohmann::json;
  if (band.forms.empty()) return json(nullptr);
  json rankings = json::object();
  for (std::size_t f = 0; f < band.forms.size(); ++f) rankings[band.forms[f]] = band.rankings[f];
  return json{{"forms", band.forms}, {"rankings", rankings}, {"rank_stable", band.rank_stable}};
}

std::string band_text(const ConvergenceBand& band) {
  if (band.forms.empty()) return "";
  std::string forms;
  for (const std::string& f : band.forms) forms += (forms.empty() ? "" : ", ") + f;
  if (band.rank_stable)
    return fmt::format("convergence band ({}): the ranking is the same under every form; ttc_lo_s and ttc_hi_s\n"
                       "are each policy's fastest and slowest time to convergence over them.\n",
                       forms);
  std::string out = fmt::format("convergence band ({}): THE RANKING CHANGES with the convergence model:\n", forms);
  for (std::size_t f = 0; f < band.forms.size(); ++f) {
    std::string order;
    for (const std::string& l : band.rankings[f]) order += (order.empty() ? "" : " < ") + l;
    out += fmt::format("  {}: {}\n", band.forms[f], order.empty() ? "(none converged)" : order);
  }
  return out;
}

}  // namespace moesim
