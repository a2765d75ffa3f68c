// Convergence models that say what they assume: the effective-token form by hand, the note on a
// fit made for another model, and compare --convergence-band (ranges, rankings, rank stability).
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "app/convergence_band.hpp"
#include "app/outputs.hpp"
#include "app/runner.hpp"
#include "app/scenario.hpp"
#include "sim/convergence.hpp"
#include "core/error.hpp"

using namespace moesim;
using Catch::Matchers::Contains;

TEST_CASE("convergence: the effective-token form by hand", "[convergence]") {
  ConvergenceSpec c = ConvergenceSpec{}.with_form("effective_tokens");
  // N(s) = 409.12 / (1 - 0.61663 (1 - s)): dropless needs N1, nothing kept 409.12 / 0.38337.
  CHECK(c.iterations_needed(1.0) == 409.12);
  CHECK(c.iterations_needed(0.0) == Approx(1067.167).epsilon(1e-6));
  // At Table 1's points it stays within 8 iterations of the measurement (618, 527, 478).
  CHECK(c.iterations_needed(0.4490) == Approx(619.66).margin(0.01));
  CHECK(c.iterations_needed(0.6556) == Approx(519.43).margin(0.01));
  CHECK(c.iterations_needed(0.7491) == Approx(484.00).margin(0.01));
  // Where the measurements end the forms part: at full survival the line says 360.9.
  CHECK(c.with_form("linear").iterations_needed(1.0) == Approx(360.9));
  CHECK(c.with_form("table").iterations_needed(1.0) == 478);
}

namespace {
const std::string kSmall =
    "cluster: {preset: swiftmoe-cloud, nodes: 2}\nmodel: {preset: gpt-small-moe, layers: 2, experts: 4}\n"
    "placement: {slots_per_gpu: 2}\ntrace: {kind: synthetic, skew: 1.2}\n";

std::string error_of(const std::string& text) {
  try {
    (void)load_scenario_text(text, "c.yaml", {}, std::nullopt);
  } catch (const InputError& e) {
    return e.what();
  }
  return "no error";
}
}  // namespace

TEST_CASE("convergence: a fit made for another model says so", "[convergence][scenario]") {
  const Scenario own = load_scenario_text(kSmall + "policies: [static]\n", "c.yaml", {}, std::nullopt);
  CHECK(own.convergence.fitted_for == "gpt-small-moe");
  CHECK(own.convergence.note.empty());
  const Scenario other = load_scenario_text(kSmall + "policies: [static]\n", "c.yaml", {"model.preset=mixtral-8x7b",
                                                                                       "model.layers=2"},
                                            std::nullopt);
  CHECK_THAT(other.convergence.note, Contains("fitted for model gpt-small-moe") && Contains("applied here to mixtral-8x7b"));
  CHECK(summary_table(other, {}).find("convergence: NOTE") != std::string::npos);
  // Figures of the scenario's own belong to its model, unless it names another.
  const Scenario custom = load_scenario_text(kSmall + "policies: [static]\nconvergence: {form: effective_tokens, "
                                                      "n1_iterations: 1000, alpha: 0.5}\n",
                                             "c.yaml", {"model.preset=mixtral-8x7b", "model.layers=2"}, std::nullopt);
  CHECK(custom.convergence.note.empty());
  CHECK(custom.convergence.iterations_needed(0.5) == Approx(1000 / 0.75));
  CHECK_THAT(error_of(kSmall + "policies: [static]\nconvergence: {alpha: 1.0}\n"),
             Contains("key 'convergence.alpha'"));
}

TEST_CASE("convergence band: ranges, rankings and rank stability by hand", "[convergence]") {
  auto result = [](const std::string& label, std::vector<TimeNs> ttc) {
    PolicyResult r;
    r.label = label;
    for (std::size_t f = 0; f < ttc.size(); ++f)
      r.band.push_back(PolicyResult::BandEntry{kConvergenceForms[f], ttc[f] > 0, 10, ttc[f]});
    return r;
  };
  // a is faster than b under linear and table, slower under effective_tokens; c never converges
  // under table.
  const std::vector<PolicyResult> rs{result("a", {100, 200, 400}), result("b", {150, 250, 300}),
                                     result("c", {500, 0, 600})};
  const ConvergenceBand b = convergence_band(rs);
  REQUIRE(b.forms == kConvergenceForms);
  CHECK(b.rankings[0] == std::vector<std::string>{"a", "b", "c"});
  CHECK(b.rankings[1] == std::vector<std::string>{"a", "b"});
  CHECK(b.rankings[2] == std::vector<std::string>{"b", "a", "c"});
  CHECK_FALSE(b.rank_stable);
  CHECK(*b.min_ns[0] == 100);
  CHECK(*b.max_ns[0] == 400);
  CHECK(*b.min_ns[2] == 500);
  CHECK(*b.max_ns[2] == 600);
  CHECK_THAT(band_text(b), Contains("THE RANKING CHANGES") && Contains("effective_tokens: b < a < c"));
  const ConvergenceBand same = convergence_band({result("a", {100, 200, 300}), result("b", {150, 250, 350})});
  CHECK(same.rank_stable);
  CHECK(convergence_band({result("a", {})}).forms.empty());
}

TEST_CASE("convergence band: each form's iterations follow from the run's own survival", "[convergence]") {
  const Scenario s = load_scenario_text(kSmall + "policies: [static, {name: static, label: dropless, drop_tokens: "
                                                 "false}]\nrun: {max_iterations: 3000}\n",
                                        "c.yaml", {}, std::nullopt);
  RunOptions ro;
  ro.convergence_band = true;
  const std::vector<PolicyResult> rs = run_scenario(s, ro);
  REQUIRE(rs.size() == 2);
  for (const PolicyResult& r : rs) {
    INFO(r.label);
    REQUIRE(r.band.size() == 3);
    for (const PolicyResult::BandEntry& e : r.band) {
      INFO(e.form);
      REQUIRE(e.converged);
      // Progress under this form, summed again from the rows the run kept.
      const ConvergenceSpec spec = s.convergence.with_form(e.form);
      double progress = 0.0;
      std::int64_t at = 0;
      for (const IterationRow& row : r.rows) {
        progress += 1.0 / spec.iterations_needed(row.result.survival);
        if (progress >= 1.0 - 1e-9) {  // the runner's tolerance for N shares of 1/N
          at = row.iteration + 1;
          CHECK(e.time_to_convergence_ns == row.end_ns);
          break;
        }
      }
      CHECK(e.iterations_to_converge == at);
    }
    // The run went on until the slowest form converged, and its own form's figure is the result's.
    std::int64_t longest = 0;
    for (const PolicyResult::BandEntry& e : r.band) longest = std::max(longest, e.iterations_to_converge);
    CHECK(r.iterations_run == longest);
    CHECK(r.band[0].iterations_to_converge == r.iterations_to_converge);
    CHECK(r.band[0].time_to_convergence_ns == r.time_to_convergence_ns);
  }
  // Dropless keeps every token: every form has it converge in ceil(N(1)) iterations.
  CHECK(rs[1].band[0].iterations_to_converge == 361);
  CHECK(rs[1].band[1].iterations_to_converge == 478);
  CHECK(rs[1].band[2].iterations_to_converge == 410);
  const nlohmann::json j = summary_json(s, rs);
  CHECK(j["convergence_band"]["forms"].size() == 3);
  CHECK(j["results"][1]["convergence_band"]["forms"]["table"]["iterations_to_converge"] == 478);
  CHECK_THAT(compare_csv(rs), Contains(",min_time_to_convergence_s,max_time_to_convergence_s\n"));
}
