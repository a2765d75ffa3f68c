#pragma once
// What app/calibrate.cpp (the command line and the kernel timings) and app/calibrate_collectives.cpp
// (NCCL collectives and their comparison with the network model) share.
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/collectives.hpp"
#include "models/profile.hpp"

namespace moesim::calibrate_internal {

// What the command line asked for (`moesim calibrate --help`).
struct Options {
  std::string backend, out, gpu;
  std::vector<std::string> models;
  std::int64_t max_tokens = 0;
  int group = 0;
  int warmup = -1, reps = -1;
  double budget_s = -1;
  bool quick = false, quiet = false;
  bool collectives = false;
  int ranks = 0;
  std::string collective_dtype = "bf16";
  std::int64_t max_bytes = std::int64_t{1} << 30;
  std::string cluster;
};

// Now in UTC, ISO 8601 (a profile's `date`).
[[nodiscard]] std::string utc_now();

// The cluster preset a device is compared with by default (H100/H200: dgx-h100, A100: dgx-a100);
// empty when none matches.
[[nodiscard]] std::string default_cluster_for(const std::string& device);

struct CollectiveRun {
  bool measured = false;  // false: skipped (fewer than 2 ranks)
  CollectiveProfile section;
  std::string library;  // "NCCL 2.28.9"
};

// Checks the backend against the CPU twin, then times both collectives over the sizes.
[[nodiscard]] CollectiveRun run_collectives(kernels::CollectiveBackend& b, const Options& o,
                                            const kernels::TimingOptions& timing);

}  // namespace moesim::calibrate_internal
