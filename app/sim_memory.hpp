#pragma once
// The simulator's own memory (not the simulated GPUs'): an estimate made before a run allocates
// anything large, so that a scenario that would need more than `run.max_memory_bytes` is refused
// up front with the figures, instead of bringing the machine to its knees (docs/model.md).
#include "app/scenario.hpp"

namespace moesim {

struct SimulatorMemory {
  double trace_bytes = 0.0;     // iteration counts: each world's, its source's, the replay cache
  double dispatch_bytes = 0.0;  // every policy's dispatch matrices and placement
  double routes_bytes = 0.0;    // the cluster graph and the routes of the GPU pairs that talk
  double results_bytes = 0.0;   // per-iteration rows and per-expert samples kept for the outputs
  double fixed_bytes = 0.0;     // the program, its libraries and small tables
  [[nodiscard]] double total() const {
    return trace_bytes + dispatch_bytes + routes_bytes + results_bytes + fixed_bytes;
  }
};

// `jobs`: policies simulated at once (each thread builds its own world). `trace_prefetch`: the
// iterations each world's trace reader runs ahead (RunOptions::trace_prefetch; 0 = off).
[[nodiscard]] SimulatorMemory estimate_simulator_memory(const Scenario& s, int jobs, int trace_prefetch = 1);
// `run.max_memory_bytes` when the scenario does not set it: three quarters of physical memory.
[[nodiscard]] double default_max_memory_bytes();
// The limit in force: the scenario's, or the default.
[[nodiscard]] double max_memory_bytes(const Scenario& s);
// InputError naming the estimate's parts when it exceeds the limit.
void check_simulator_memory(const Scenario& s, int jobs, int trace_prefetch = 1);

}  // namespace moesim
