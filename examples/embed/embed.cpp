// moesim as a library: load a scenario, run one policy for a fixed number of iterations and print
// its mean iteration time, the figure `moesim compare --policies POLICY` writes as
// mean_iteration_ns (scripts/test_embed.sh checks that they agree).
//   embed SCENARIO.yaml POLICY ITERATIONS
#include <fmt/format.h>

#include <charconv>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "app/runner.hpp"
#include "app/scenario.hpp"
#include "core/error.hpp"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: embed SCENARIO.yaml POLICY ITERATIONS\n";
    return 2;
  }
  const std::string file = argv[1], policy = argv[2], iterations = argv[3];
  long long n = 0;
  const auto [end, ec] = std::from_chars(iterations.data(), iterations.data() + iterations.size(), n);
  if (ec != std::errc{} || end != iterations.data() + iterations.size() || n < 1) {
    std::cerr << fmt::format("error: ITERATIONS '{}': allowed: an integer of at least 1\n", iterations);
    return 2;
  }
  try {
    // The same overrides as `--set` on the command line; the policy list replaces the scenario's,
    // as `--policies` does. Running past convergence keeps the iteration count fixed.
    const std::vector<std::string> overrides{fmt::format("run.max_iterations={}", n), "run.stop_at_convergence=false"};
    moesim::Scenario s = moesim::load_scenario(file, overrides, std::nullopt);
    s.policies = moesim::parse_policy_specs(policy);
    moesim::RunOptions options;
    options.keep_rows = false;  // only the summary is needed
    const std::vector<moesim::PolicyResult> results = moesim::run_scenario(s, options);
    for (const moesim::PolicyResult& r : results) {
      // {} prints the shortest text that reads back as the same double.
      std::cout << fmt::format("{} {}: {} iterations, mean_iteration_ns {}\n", s.name, r.label, r.iterations_run,
                               r.mean_iteration_ns);
    }
  } catch (const moesim::InputError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
