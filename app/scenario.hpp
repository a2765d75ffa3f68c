#pragma once
// A scenario: the cluster, the model, the trace, the training settings, the convergence model
// and the policies to compare, read strictly from YAML (unknown keys and out-of-range values are
// errors that name the file, line, column and key).
#include <yaml-cpp/yaml.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "models/specs.hpp"
#include "sim/convergence.hpp"
#include "sim/iteration.hpp"
#include "sim/layout.hpp"
#include "traces/trace.hpp"

namespace moesim {

// trace.cross_layer: a cross-layer pair profile (traces/cross_layer.hpp), generated (synthetic
// traces, `affinity`) or read from a long CSV (`path`, `select`).
struct CrossLayerConfig {
  bool present = false;
  double affinity = 0.0;  // synthetic: generated with this affinity (when path is empty)
  std::string path;       // resolved relative to the scenario file
  std::map<std::string, std::string> select;
};

struct TraceConfig {
  std::string kind = "synthetic";  // synthetic | csv | binary | import
  std::string path;                // resolved relative to the scenario file
  std::map<std::string, std::string> select;  // import: long-CSV selector columns
  std::string preset;                          // synthetic: calibrated generator preset
  double aux_loss_coefficient = 0.0;           // synthetic: the coefficient mapped; 0 = none
  std::string on_end = "loop";     // loop | stop
  SyntheticTraceSpec synthetic;
  CrossLayerConfig cross_layer;
};

struct RunSpec {
  std::int64_t max_iterations = 5000;
  bool stop_at_convergence = true;
  // The simulator's own memory a run may need (app/sim_memory.hpp); 0: 3/4 of physical memory.
  double max_memory_bytes = 0.0;
};

// Slow GPUs: a permanent speed factor, or a straggler window.
struct StragglerSpec {
  int gpu = 0;
  double slowdown_percent = 0.0;  // compute takes (1 + x / 100) times as long
  std::int64_t from_iteration = 0;
  std::int64_t to_iteration = 0;  // inclusive
};
struct HeterogeneitySpec {
  std::vector<std::pair<int, double>> gpu_speed;  // (gpu, share of nominal compute speed)
  std::vector<StragglerSpec> stragglers;
  // Compute time multiplier of every GPU in `iteration` (empty when all are nominal).
  [[nodiscard]] std::vector<double> slowdown_at(std::int64_t iteration, int gpus) const;
};

struct PolicyEntry {
  std::string name;   // registered policy name
  std::string label;  // unique row label (defaults to the name)
  YAML::Node params;  // the entry's mapping (policy parameters, plus name/label)
  std::string origin;
};

struct Scenario {
  std::string file;
  std::string name;
  std::string description;
  std::uint64_t seed = 1;
  ClusterSpec cluster;
  MoeModelSpec model;
  ParallelLayout layout;  // resolved (data and expert filled in) and checked
  DispatchSpec dispatch;
  OverlapSpec overlap;
  int slots_per_gpu = 1;
  std::string network_model = "analytical";
  std::string compute_profile;             // calibration profile name or path; empty: roofline
  std::string collective_profile;          // profile with a measured `collectives:` section; empty: NCCL model
  bool compute_fallback_roofline = false;  // outside a profile's shapes: roofline instead of an error
  TrainingSpec training;
  HeterogeneitySpec heterogeneity;
  TraceConfig trace;
  ConvergenceSpec convergence;
  RunSpec run;
  std::vector<PolicyEntry> policies;

  // Everything above with defaults filled in (policy parameters are added by the runner).
  [[nodiscard]] nlohmann::json to_json() const;
};

// Parses `--policies static,flexmoe:interval=10,static:capacity_factor=2:min_capacity=2`: policies
// separated by commas, parameters by colons; each entry's label is its spec text.
[[nodiscard]] std::vector<PolicyEntry> parse_policy_specs(const std::string& specs);

// `overrides` are `key.path=value` assignments applied before validation; `seed` (from the
// command line) wins over the file's.
[[nodiscard]] Scenario load_scenario(const std::string& file, const std::vector<std::string>& overrides,
                                     std::optional<std::uint64_t> seed);
[[nodiscard]] Scenario load_scenario_text(const std::string& text, const std::string& origin,
                                          const std::vector<std::string>& overrides,
                                          std::optional<std::uint64_t> seed);

}  // namespace moesim
