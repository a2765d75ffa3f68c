#pragma once
// Compute timings from a calibration profile (`moesim calibrate`, docs/calibration.md): kernel
// times measured per shape, interpolated between the measured shapes, and the roofline only
// outside them, every such lookup counted so that the summary can flag it.
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "models/roofline.hpp"
#include "models/specs.hpp"
#include "models/compute.hpp"

namespace moesim {

struct ProfilePoint {
  double m = 0;  // rows (tokens), or bytes for `stream`
  double median_ns = 0, p10_ns = 0, p90_ns = 0;
};

// The timings of one kernel over one varying dimension m, the others fixed.
struct ProfileSeries {
  // gemm | batched_gemm | grouped_gemm | grouped_gemm_custom | gating | permute | unpermute | stream
  std::string kernel;
  std::string use;             // what the simulator uses it for, e.g. "expert up projection"
  std::int64_t n = 0, k = 0;   // GEMMs: [m x k] x [k x n]; gating: experts, top_k; (un)permute: hidden, top_k
  std::int64_t group = 0;      // grouped GEMMs: experts timed in one call (times are per expert)
  std::int64_t rows_per_batch = 0;  // batched_gemm: m of one GEMM of the batch
  std::vector<ProfilePoint> points;  // ascending m
};

// One collective size measured (`moesim calibrate --collectives`): nccl-tests' "size" (bytes per
// rank), the time of one call, and the bus bandwidth nccl-tests would print for it.
struct CollectivePoint {
  double bytes = 0;
  double median_ns = 0, p10_ns = 0, p90_ns = 0;
  double busbw_gbps = 0;  // from median_ns, GB/s (1e9 B/s), nccl-tests' doc/PERFORMANCE.md definition
};

struct CollectiveSeries {
  std::string collective;               // all_reduce | all_to_all
  std::vector<CollectivePoint> points;  // ascending bytes
};

// The `collectives:` section: NCCL collectives measured on the GPUs of one machine.
struct CollectiveProfile {
  bool present = false;        // the profile has the section
  std::string backend;         // nccl | cpu (the CPU twin over in-memory ranks)
  std::string device;          // GPU name(s)
  int gpus = 0;                // ranks that took part
  std::string nccl;            // NCCL version ("" for the CPU twin)
  std::string dtype = "bf16";  // element type: bf16 | fp32
  std::string date;
  int warmup = 0, reps = 0;
  double budget_s = 0;
  std::string method;
  std::vector<CollectiveSeries> series;
};

// nccl-tests' bus bandwidth for `collective` (all_reduce | all_to_all), GB/s: see
// kernels::collective_bus_gbps.
[[nodiscard]] double collective_busbw_gbps(const std::string& collective, double bytes, double time_ns,
                                           int ranks);

struct ComputeProfile {
  std::string origin;          // the file or shipped name it was read from (not stored)
  bool measured = false;       // false: derived from published figures (reference profiles)
  std::string backend;         // cuda | cpu | reference
  std::string device, driver, toolkit, library, date;
  std::string dtype = "bf16";  // the model dtype the profile stands for
  std::string compute_dtype;   // what the kernels computed in (the CPU computes in fp32)
  std::vector<std::string> models;  // models whose shapes were swept
  int warmup = 0, reps = 0;
  double budget_s = 0;
  std::string method;          // how the numbers were made
  std::string command;         // the moesim calibrate command that wrote it
  std::vector<std::string> sources;
  std::vector<ProfileSeries> series;  // may be empty when `collectives` is present
  CollectiveProfile collectives;
};

// The GEMMs the simulator asks the compute model for (mirrors sim/iteration.cpp).
struct GemmNeed {
  std::string use;
  std::string kernel;              // gemm | batched_gemm | grouped_gemm
  std::int64_t m = 0, n = 0, k = 0;  // m: the exact rows asked for; grouped: the largest batch (tokens per GPU)
  std::int64_t rows_per_batch = 0;
};
[[nodiscard]] std::vector<GemmNeed> required_gemms(const MoeModelSpec& model);

// Names of the shipped profiles (models/profiles/*.yaml).
[[nodiscard]] std::vector<std::string> profile_preset_names();
// A shipped profile's name or a file path. Bad input throws InputError naming the file and key.
[[nodiscard]] ComputeProfile load_profile(const std::string& name_or_path);
[[nodiscard]] ComputeProfile parse_profile(const std::string& yaml_text, const std::string& origin);
[[nodiscard]] std::string profile_to_yaml(const ComputeProfile& p);

class ProfileCompute final : public ComputeModel {
 public:
  // Lookups for shapes the profile lacks, or outside its measured range, use `gpu`'s roofline.
  ProfileCompute(ComputeProfile profile, const GpuProfile& gpu);
  [[nodiscard]] std::string name() const override;
  [[nodiscard]] TimeNs gemm_ns(double m, double n, double k, int elem_bytes) const override;
  [[nodiscard]] TimeNs memory_ns(double bytes) const override;

  [[nodiscard]] const ComputeProfile& profile() const { return profile_; }
  // Lookups answered by the roofline so far, and what they were ("" when none).
  [[nodiscard]] std::uint64_t roofline_lookups() const { return misses_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::string roofline_report() const;
  // The lookups as a log that merges: `compare --jobs` runs policies on models of their own and
  // merges what each looked up, in policy order, into the one that reports.
  struct Miss {
    double lo = 0, hi = 0;
    std::uint64_t count = 0;
    std::string measured;
  };
  struct RooflineLog {
    std::uint64_t lookups = 0;
    std::map<std::string, Miss> misses;
  };
  // Returns the log so far and starts an empty one.
  [[nodiscard]] RooflineLog take_roofline_log();
  void merge_roofline_log(const RooflineLog& log);

 private:
  // Monotone piecewise-linear interpolation in (log m, log t).
  struct Curve {
    std::int64_t n = 0, k = 0;
    std::string what;  // for the report
    std::vector<double> m, t, inv_log_dm, log_dt;
    [[nodiscard]] double at(double x) const;  // < 0 outside [m.front(), m.back()]
  };
  static Curve make_curve(const ProfileSeries& s);
  TimeNs miss(const std::string& what, double m, const Curve* c, TimeNs roofline) const;

  ComputeProfile profile_;
  RooflineCompute roofline_;
  int elem_bytes_ = 2;
  std::vector<Curve> gemm_;
  Curve stream_;
  bool has_stream_ = false;
  mutable std::atomic<std::uint64_t> misses_{0};
  mutable std::mutex miss_mu_;
  mutable std::map<std::string, Miss> miss_log_;
};

// The compute model a run uses. `profile` empty: the roofline of `gpu`. Otherwise a shipped
// profile's name or a path: it must hold the GEMM shapes `model` needs, in its dtype. A profile
// that cannot be read, is for another dtype, or lacks shapes is an InputError, unless
// `fallback_roofline`: then the roofline answers what the profile cannot and a line saying so is
// appended to `warnings`. Shapes outside the measured range also get a warning line.
[[nodiscard]] std::unique_ptr<ComputeModel> make_compute_model(const GpuProfile& gpu, const MoeModelSpec& model,
                                                               const std::string& profile, bool fallback_roofline,
                                                               std::vector<std::string>* warnings);

// For the run summary: what a ProfileCompute had to answer with the roofline ("" for any other
// model, or when nothing was).
[[nodiscard]] std::string compute_fallback_note(const ComputeModel& compute);

}  // namespace moesim
