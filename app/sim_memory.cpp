#include "app/sim_memory.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>

#include "app/runner.hpp"
#include "core/error.hpp"
#include "sim/layout.hpp"

namespace moesim {

namespace {
// What the estimate assumes; each is a size of a structure the run builds (see the comments),
// rounded up, so that the estimate errs high. Checked against measured peak RSS in
// docs/model.md ("The simulator's own memory").
constexpr double kFixedBytes = 48e6;           // the binary, its libraries, presets, allocator slack
constexpr double kCountBytes = 8.0;            // one int64 count of a trace or dispatch matrix
constexpr double kPairRouteBytes = 64.0 + 16;  // a stored route and its share of the lookup table
constexpr double kGraphBytesPerGpu = 600.0;    // a GPU's vertices (GPU, NIC share, switches) and edges
constexpr double kRowBytes = 256.0;            // one per-iteration row of a policy's results
constexpr double kReplayBudgetBytes = 256.0 * 1024 * 1024;  // runner.cpp's replay cache budget
// Route peers a GPU asks for besides its expert-parallel group: ring and tree neighbours of its
// tensor-, data- and pipeline-parallel collectives.
constexpr double kNeighbourPairs = 8.0;
}  // namespace

SimulatorMemory estimate_simulator_memory(const Scenario& s, int jobs, int trace_prefetch) {
  const LayoutGroups groups(s.layout, s.cluster.num_gpus(), s.model.layers);
  const double gpus = s.cluster.num_gpus();
  const double gps = groups.gpus_per_stage();
  const double layers = s.model.num_moe_layers();
  const double experts = s.model.experts;
  const double policies = static_cast<double>(s.policies.size());
  const double worlds = std::clamp(static_cast<double>(jobs), 1.0, std::max(policies, 1.0));
  const double iterations = static_cast<double>(s.run.max_iterations);
  SimulatorMemory m;
  m.fixed_bytes = kFixedBytes;

  // One iteration's counts [layer][source GPU of a stage][expert]: the run's copy, the source's
  // own and the one the replay cache hands out, per world; a reader running d iterations ahead
  // (at most d + 2 buffers, one of them the source's own) holds d - 1 more.
  // The cache holds up to its budget.
  const double iteration_bytes = layers * gps * experts * kCountBytes;
  const double copies = 3.0 + std::max(0, trace_prefetch - 1);
  m.trace_bytes = worlds * copies * iteration_bytes;
  if (policies > 1) m.trace_bytes += std::min(kReplayBudgetBytes, iterations * iteration_bytes);

  // Per policy and MoE layer: accepted and buffered [source][slot] matrices of each
  // expert-parallel group (group size x the group's slots), plus the placement.
  const double ep = s.layout.expert * s.layout.expert_tensor;
  const double group_slots = ep * s.slots_per_gpu;
  const double per_layer = gps * group_slots * 2.0 * kCountBytes + gps * s.slots_per_gpu * 4.0;
  m.dispatch_bytes = policies * layers * per_layer;

  // Each world's routes: every GPU talks to its expert-parallel group and a few ring neighbours.
  const double pairs = gpus * (ep + s.layout.tensor + kNeighbourPairs);
  m.routes_bytes = worlds * (gpus * kGraphBytesPerGpu + pairs * kPairRouteBytes);

  // Results kept for the outputs: every iteration's row, and the per-expert samples at the
  // command line's default cap.
  const double samples = static_cast<double>(auto_expert_stats_samples(s));
  m.results_bytes = policies * (iterations * kRowBytes + samples * layers * experts * 20.0);
  return m;
}

double default_max_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return 16e9;  // unknown: a conservative laptop
  return 0.75 * static_cast<double>(pages) * static_cast<double>(page);
}

double max_memory_bytes(const Scenario& s) {
  return s.run.max_memory_bytes > 0 ? s.run.max_memory_bytes : default_max_memory_bytes();
}

void check_simulator_memory(const Scenario& s, int jobs, int trace_prefetch) {
  const SimulatorMemory m = estimate_simulator_memory(s, jobs, trace_prefetch);
  const double limit = max_memory_bytes(s);
  if (m.total() <= limit) return;
  throw InputError(fmt::format(
      "{}: run.max_memory_bytes: the simulator would need about {:.2f} GB of memory (trace {:.2f}, dispatch "
      "{:.2f}, "
      "routes {:.2f}, results {:.2f}, program {:.2f}) for {} GPUs, {} MoE layers x {} experts, {} {}{}; the "
      "limit is {:.2f} GB ({}); use fewer GPUs or policies, lower run.max_iterations or --jobs, or raise "
      "run.max_memory_bytes",
      s.file, m.total() / 1e9, m.trace_bytes / 1e9, m.dispatch_bytes / 1e9, m.routes_bytes / 1e9,
      m.results_bytes / 1e9, m.fixed_bytes / 1e9, s.cluster.num_gpus(), s.model.num_moe_layers(),
      s.model.experts, s.policies.size(), s.policies.size() == 1 ? "policy" : "policies",
      jobs > 1 ? fmt::format(" on {} threads", jobs) : "", limit / 1e9,
      s.run.max_memory_bytes > 0 ? "the scenario's" : "the default, 3/4 of this machine's memory"));
}

}  // namespace moesim
