#pragma once
// Runs every policy of a scenario on the same trace and collects per-iteration rows and
// per-policy summaries.
#include <nlohmann/json.hpp>

#include <array>
#include <functional>
#include <string>
#include <vector>

#include "app/scenario.hpp"
#include "sim/memory.hpp"

namespace moesim {

struct IterationRow {
  std::int64_t iteration = 0;
  IterationResult result;
  double progress = 0.0;  // cumulative convergence progress after this iteration
  TimeNs end_ns = 0;      // simulated time at the end of this iteration
};

// Per-expert state of one sampled iteration, indexed [layer * experts + expert].
struct ExpertSample {
  std::int64_t iteration = 0;
  std::vector<std::int64_t> routed;     // assignments the gate sent to the expert
  std::vector<std::int64_t> processed;  // assignments the slots holding it accepted (see experts_csv)
  std::vector<int> replicas;            // slots holding the expert during the iteration
};

struct PolicyResult {
  std::string label;
  std::string name;
  nlohmann::json parameters;
  bool converged = false;
  std::int64_t iterations_to_converge = 0;  // valid when converged
  TimeNs time_to_convergence_ns = 0;        // valid when converged
  std::int64_t iterations_run = 0;
  TimeNs simulated_ns = 0;
  double mean_iteration_ns = 0.0;
  double p99_iteration_ns = 0.0;
  std::array<double, kNumPhases> mean_phase_ns{};
  double mean_exposed_comm_ns = 0.0;  // communication not hidden by computation
  double drop_rate = 0.0;      // dropped / routed over the whole run
  double mean_survival = 1.0;  // 1 - drop_rate
  double mean_a2a_bytes = 0.0;
  double mean_grad_sync_bytes = 0.0;
  double mean_moved_bytes = 0.0;
  double mean_expert_imbalance = 1.0;
  std::uint64_t events = 0;
  // Memory: the peak of each component on the fullest GPU, and the peak total of each GPU.
  MemoryUse peak_memory;
  double peak_gpu_memory_bytes = 0.0;
  int peak_memory_gpu = 0;
  double peak_host_memory_bytes = 0.0;
  // The slot budget every policy of a comparison gets (slots per GPU x the GPUs of one expert-parallel
  // group) and the most of it this policy filled in any MoE layer and iteration.
  int slot_budget = 0;
  int max_filled_slots = 0;
  // Out of memory: the run stopped at `oom_iteration`; `oom_report` names the GPU (or host),
  // the policy step and each component's bytes.
  bool oom = false;
  std::int64_t oom_iteration = -1;
  std::string oom_report;
  std::vector<IterationRow> rows;
  // Non-empty when a calibration profile had to fall back to the roofline for some shapes.
  std::string compute_fallback;
  // With network.collective_profile: which collectives the measurements answered.
  std::string collectives_note;
  // Per-expert samples, every RunOptions::expert_stats_every iterations (empty when 0).
  int experts = 0;
  std::vector<ExpertSample> expert_samples;
  // Chrome trace events ("ph": "X") of the iterations named in RunOptions::timeline_iterations.
  nlohmann::json timeline = nlohmann::json::array();
  // With RunOptions::convergence_band: the same run's convergence under each of kConvergenceForms.
  struct BandEntry {
    std::string form;
    bool converged = false;
    std::int64_t iterations_to_converge = 0;
    TimeNs time_to_convergence_ns = 0;
  };
  std::vector<BandEntry> band;
};

// Per-GPU memory any policy needs with every slot filled: weights, gradients, dense optimizer state
// and activations (the estimate behind the impossible-cluster check).
[[nodiscard]] MemoryUse estimate_gpu_memory(const Scenario& s);

struct RunOptions {
  bool keep_rows = true;
  std::function<void(const std::string& label, std::int64_t iteration)> on_iteration;  // progress
  std::vector<std::int64_t> timeline_iterations = {};  // iterations to record for --timeline
  // Called after each recorded iteration (timeline_iterations) with the model that ran it, while
  // its recording is there (IterationModel::graph, spans): `moesim chakra export`.
  std::function<void(const std::string& label, std::int64_t iteration, const IterationModel& model,
                     const IterationResult& result)>
      on_recorded = {};
  // Record per-expert load and replicas at iterations 0, N, 2N, ... (0: none).
  std::int64_t expert_stats_every = 0;
  // With a cap, a run that has recorded more samples keeps every other one and doubles N, so a
  // run of any length ends with between cap/2 and cap samples, still at iterations 0, N, 2N, ...
  std::int64_t expert_stats_max_samples = 0;  // 0: no cap
  // Also follow convergence under every form of kConvergenceForms (the scenario's figures), and
  // run on until all of them converged or run.max_iterations (compare --convergence-band).
  bool convergence_band = false;
  // Policies simulated at once, each on a thread with a world of its own (compare --jobs); the
  // results are those of 1. With network.collective_profile the policies run one at a time.
  int jobs = 1;
  // Each iteration runs its forward passes only (IterationModel::set_forward_only): for `moesim fit`.
  bool forward_only = false;
  // Iterations of the trace read ahead on a thread of its own while the current one is simulated
  // (traces/prefetch.hpp): the same iterations in the same order, so the same results; 0 reads
  // them on the simulating thread (compare --trace-prefetch 0).
  int trace_prefetch = 1;
};

// The sample cap `moesim run` uses when --expert-stats is not given: at most 100 sampled
// iterations and 200,000 (layer, expert) rows per policy, so that experts.csv stays a few
// megabytes per policy even for 48 layers x 128 experts.
[[nodiscard]] std::int64_t auto_expert_stats_samples(const Scenario& s);

// Validates everything (policies, memory, trace shape) before simulating anything.
// What run_scenario refuses before anything runs (InputError): a cluster whose GPUs cannot hold
// the placement, or a policy parameter it does not take. For checking many scenarios up front.
void check_scenario(const Scenario& s);

[[nodiscard]] std::vector<PolicyResult> run_scenario(const Scenario& s, const RunOptions& opts = {});

}  // namespace moesim
