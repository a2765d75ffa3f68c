// _moesim: the compiled half of the Python package (moesim/ at the top of the repository wraps
// it). Scenarios are loaded by app/scenario.*, run by app/runner.*, and every result leaves as the
// text app/outputs.* writes (summary.json, iterations.csv, ...), so the Python API and the command
// line cannot disagree on a field name or a digit.
#include <fmt/format.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "app/outputs.hpp"
#include "app/runner.hpp"
#include "app/scenario.hpp"
#include "core/error.hpp"
#include "policies/registry.hpp"
#include "python/py_policy.hpp"

namespace pyb = pybind11;
using namespace moesim;

namespace {

// What one run() or compare() produced; the texts are made on demand.
struct RunOutput {
  Scenario scenario;
  std::vector<PolicyResult> results;
  bool comparison = false;
};

RunOutput run(const Scenario& s, bool comparison, int jobs, bool convergence_band, std::int64_t expert_stats_every,
              std::int64_t expert_stats_max_samples, std::vector<std::int64_t> timeline_iterations) {
  if (jobs < 1) throw InputError(fmt::format("jobs: {} is not allowed; allowed: an integer of at least 1", jobs));
  if (expert_stats_every < 0)
    throw InputError(fmt::format("expert_stats: {} is not allowed; allowed: 'auto' or an integer >= 0", expert_stats_every));
  for (const std::int64_t i : timeline_iterations)
    if (i < 0) throw InputError(fmt::format("timeline_iterations: {} is not a non-negative integer", i));
  RunOptions ro;
  ro.jobs = jobs;
  ro.convergence_band = convergence_band;
  ro.expert_stats_every = expert_stats_every;
  ro.expert_stats_max_samples = expert_stats_max_samples;
  ro.timeline_iterations = std::move(timeline_iterations);
  // Ctrl-C: Python's handler only sets a flag; look at it between iterations (on the thread that
  // called run; compare(jobs > 1) threads cannot run Python's handlers).
  ro.on_iteration = [](const std::string&, std::int64_t) {
    const pyb::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) throw pyb::error_already_set();
  };
  RunOutput out{s, {}, comparison};
  {
    const pyb::gil_scoped_release nogil;  // Python policies take it back call by call
    out.results = run_scenario(s, ro);
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_moesim, m) {
  m.doc() = "moesim's simulator (use the moesim package, not this module)";
  // Bad input keeps the complete message (file, line, key, found, allowed) as a ValueError.
  pyb::register_exception<InputError>(m, "InputError", PyExc_ValueError);
  pyb::register_exception<moesim::py::PolicyError>(m, "PolicyError", PyExc_RuntimeError);

  pyb::class_<Scenario>(m, "Scenario")
      .def_readonly("file", &Scenario::file)
      .def_readonly("name", &Scenario::name)
      .def_readonly("description", &Scenario::description)
      .def_readonly("seed", &Scenario::seed)
      .def("to_json", [](const Scenario& s) { return s.to_json().dump(); })
      .def("policies", [](const Scenario& s) {
        std::vector<std::pair<std::string, std::string>> out;
        for (const PolicyEntry& e : s.policies) out.emplace_back(e.name, e.label);
        return out;
      })
      .def("with_policies", [](const Scenario& s, const std::string& specs) {
        Scenario c = s;
        c.policies = parse_policy_specs(specs);
        return c;
      })
      .def("check", [](const Scenario& s) { check_scenario(s); });

  m.def("load_file", &load_scenario, pyb::arg("file"), pyb::arg("overrides"), pyb::arg("seed"));
  m.def("load_text", &load_scenario_text, pyb::arg("text"), pyb::arg("origin"), pyb::arg("overrides"),
        pyb::arg("seed"));
  m.def("auto_expert_stats_samples", &auto_expert_stats_samples, pyb::arg("scenario"));
  m.def("run", &run, pyb::arg("scenario"), pyb::arg("comparison"), pyb::arg("jobs"), pyb::arg("convergence_band"),
        pyb::arg("expert_stats_every"), pyb::arg("expert_stats_max_samples"), pyb::arg("timeline_iterations"));

  pyb::class_<RunOutput>(m, "RunOutput")
      .def_readonly("comparison", &RunOutput::comparison)
      .def("summary_json", [](const RunOutput& o) { return summary_json(o.scenario, o.results).dump(); })
      .def("iterations_csv", [](const RunOutput& o) { return iterations_csv(o.results); })
      .def("experts_csv", [](const RunOutput& o) { return experts_csv(o.results); })
      .def("compare_csv", [](const RunOutput& o) { return compare_csv(o.results); })
      .def("compare_json", [](const RunOutput& o) { return compare_rows(summary_json(o.scenario, o.results)).dump(); })
      .def("summary_table", [](const RunOutput& o) { return summary_table(o.scenario, o.results); })
      .def("timeline_json", [](const RunOutput& o) { return timeline_json(o.scenario, o.results); })
      .def("write", [](const RunOutput& o, const std::string& dir) {
        write_outputs(dir, o.scenario, o.results, o.comparison);
      });

  m.def("policies", [] {
    std::vector<std::pair<std::string, std::string>> out;
    for (const PolicyInfo& p : policy_registry()) out.emplace_back(p.name, p.description);
    return out;
  });
  m.def("register_policy", &moesim::py::register_python_policy, pyb::arg("name"), pyb::arg("description"));
  moesim::py::bind_policy_types(m);
}
