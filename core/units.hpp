#pragma once
// Every unit conversion in moesim lives here, so that a figure read from a profile is converted
// exactly once. Simulated time is integer nanoseconds; bandwidths are GB/s with 1 GB = 1e9 bytes,
// which makes bytes / (GB/s) a time in nanoseconds without any further factor.
#include <cmath>
#include <cstdint>

namespace moesim {

using TimeNs = std::int64_t;
using Bytes = std::int64_t;

inline constexpr double kNsPerUs = 1e3;
inline constexpr double kNsPerMs = 1e6;
inline constexpr double kNsPerS = 1e9;

// Time to move `bytes` at `gbps` GB/s, rounded up to the next nanosecond so that a non-empty
// transfer never takes zero time.
[[nodiscard]] inline TimeNs transfer_ns(double bytes, double gbps) {
  if (bytes <= 0.0) return 0;
  return static_cast<TimeNs>(std::ceil(bytes / gbps));
}

// Time to execute `flops` at `tflops` TFLOP/s (1e12 FLOP/s), rounded up.
[[nodiscard]] inline TimeNs compute_ns(double flops, double tflops) {
  if (flops <= 0.0) return 0;
  return static_cast<TimeNs>(std::ceil(flops / (tflops * 1e3)));
}

[[nodiscard]] inline TimeNs us_to_ns(double us) { return static_cast<TimeNs>(std::llround(us * kNsPerUs)); }
[[nodiscard]] inline double ns_to_ms(TimeNs ns) { return static_cast<double>(ns) / kNsPerMs; }
[[nodiscard]] inline double ns_to_s(TimeNs ns) { return static_cast<double>(ns) / kNsPerS; }
// Network line rates are quoted in Gb/s; convert to GB/s (bytes).
[[nodiscard]] inline constexpr double gbit_to_gbyte(double gbit_per_s) { return gbit_per_s / 8.0; }

}  // namespace moesim
