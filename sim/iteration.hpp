#pragma once
// One training iteration on every GPU's timeline. Each GPU runs a program of local operations
// (compute, optimizer, movement) and collectives (all-to-all-v, all-reduce); a collective starts
// when its last member arrives, so a GPU slowed by a hot expert makes every other GPU wait at
// the next all-to-all. The iteration ends when the slowest GPU ends.
#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "models/specs.hpp"
#include "sim/compute.hpp"
#include "sim/engine.hpp"
#include "sim/network.hpp"
#include "sim/policy.hpp"
#include "sim/training.hpp"

namespace moesim {

enum class Phase { Compute = 0, AllToAll, GradSync, Optimizer, Movement, Wait };
inline constexpr int kNumPhases = 6;
[[nodiscard]] const char* to_string(Phase p);

struct IterationResult {
  TimeNs start_ns = 0;
  TimeNs iteration_ns = 0;
  // Parts of the critical (last-finishing) GPU's timeline; they add up to iteration_ns.
  std::array<TimeNs, kNumPhases> phase_ns{};
  int critical_gpu = 0;
  std::int64_t tokens_routed = 0;   // assignments routed by the gates, all MoE layers
  std::int64_t tokens_dropped = 0;  // assignments dropped by capacity
  double survival = 1.0;            // 1 - dropped / routed
  double a2a_bytes = 0.0;           // bytes crossing links in all all-to-alls (fwd + bwd)
  double grad_sync_bytes = 0.0;     // per-rank bytes of all gradient all-reduces
  double moved_bytes = 0.0;         // policy movements (blocking and not)
  double expert_compute_imbalance = 1.0;  // max / mean expert tokens per GPU, averaged over layers
};

// The dispatch all-to-all-v byte matrix [src * G + dst] of one MoE layer: every buffered
// assignment of source `src` for a slot on GPU `dst` carries one token's hidden vector. The
// combine all-to-all is its transpose.
[[nodiscard]] std::vector<double> dispatch_byte_matrix(const LayerDispatch& d, int slots_per_gpu,
                                                       double token_bytes);

class IterationModel {
 public:
  IterationModel(const Cluster& cluster, const MoeModelSpec& model, const TrainingSpec& training,
                 const ComputeModel& compute, const NetworkModel& network);

  // Simulates one iteration starting at `start_ns` on `engine`. `dispatch` has one entry per
  // MoE layer; `movements` are charged at the start (blocking ones on the critical path);
  // `sync` says how expert gradients and weights flow and where their optimizer runs.
  [[nodiscard]] IterationResult run(Engine& engine, TimeNs start_ns, const Placement& placement,
                                    const std::vector<LayerDispatch>& dispatch,
                                    const std::vector<Movement>& movements, const SyncPlan& sync);

  // Per-GPU multipliers of compute time (>= some positive value; 1 = nominal) for the following
  // iterations: heterogeneous GPUs and stragglers. Empty: all nominal.
  void set_compute_slowdown(std::vector<double> factors);

  // Timeline recording (off by default): every operation of the next iterations as a span on
  // its GPU's compute or communication lane, with a name.
  struct Span {
    int gpu = 0;
    bool comm = false;  // communication lane (collectives, transfers, waits, movements)
    int label = 0;      // index into labels()
    TimeNs start_ns = 0;
    TimeNs duration_ns = 0;
  };
  void set_recording(bool on) { record_ = on; }
  [[nodiscard]] const std::vector<Span>& spans() const { return spans_; }
  [[nodiscard]] const std::vector<std::string>& labels() const { return labels_; }

  // Fixed per-GPU costs, exposed for tests and the docs' worked examples.
  [[nodiscard]] TimeNs attention_fwd_ns() const { return attention_fwd_ns_; }
  [[nodiscard]] TimeNs dense_ffn_fwd_ns() const { return dense_ffn_fwd_ns_; }
  [[nodiscard]] TimeNs gate_fwd_ns() const { return gate_fwd_ns_; }
  [[nodiscard]] TimeNs lm_head_fwd_ns() const { return lm_head_fwd_ns_; }
  [[nodiscard]] TimeNs expert_fwd_ns(std::int64_t tokens) const;

 private:
  struct Op {
    Phase phase;
    TimeNs duration_ns;
    int collective;  // -1: local operation
    int label;       // timeline name (0 when not recording)
  };
  struct CollectiveState {
    int members = 0;
    TimeNs duration_ns = 0;
    Phase phase = Phase::AllToAll;
    int arrived = 0;
  };
  void step(Engine& engine, int gpu);
  // Names the operations added next (only when recording).
  void label(const char* what, int layer = -1);
  int add_collective(const std::vector<int>& members, TimeNs duration, Phase phase);
  void add_local(int gpu, Phase phase, TimeNs duration);
  void add_all(Phase phase, TimeNs duration);
  void add_all_to_all(TimeNs duration, double bytes, double& total_bytes);

  const Cluster& cluster_;
  MoeModelSpec model_;
  TrainingSpec training_;
  const ComputeModel& compute_;
  const NetworkModel& network_;
  int gpus_;
  std::vector<int> all_gpus_;
  TimeNs attention_fwd_ns_ = 0, dense_ffn_fwd_ns_ = 0, gate_fwd_ns_ = 0, lm_head_fwd_ns_ = 0,
         shared_expert_fwd_ns_ = 0, dense_grad_sync_ns_ = 0;
  double dense_params_ = 0.0;
  std::vector<double> compute_slowdown_;
  bool record_ = false;
  int cur_label_ = 0;
  std::vector<std::string> labels_;
  std::vector<Span> spans_;

  // Collective times by (kind, bytes, group), kept across iterations: a pure function of the
  // network, and the same replica groups recur. Cleared when it grows past a bound.
  std::map<std::tuple<int, double, std::vector<int>>, TimeNs> collective_memo_;

  // Per-iteration execution state (reused).
  std::vector<std::vector<Op>> program_;
  std::vector<std::vector<int>> collective_waiters_;
  std::vector<CollectiveState> collectives_;
  std::vector<std::size_t> pc_;
  std::vector<TimeNs> arrival_, end_;
  std::vector<std::array<TimeNs, kNumPhases>> busy_;
};

}  // namespace moesim
