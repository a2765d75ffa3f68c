#pragma once
// One training iteration on every GPU's timeline. Each GPU runs a program (sim/program.hpp) of
// local operations (compute, optimizer, movement), collectives (all-to-all-v inside its
// expert-parallel group, tensor-parallel and data-parallel all-reduces) and pipeline messages;
// a collective starts when its last member arrives, so a GPU slowed by a hot expert makes every
// other GPU of its group wait at the next all-to-all, and a slow stage stalls the pipeline. The
// parallel layout (sim/layout.hpp) decides the groups, the split of the GEMMs, the stage of every
// layer and the order of micro-batches. The iteration ends when the slowest GPU ends.
#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "models/specs.hpp"
#include "models/compute.hpp"
#include "sim/engine.hpp"
#include "sim/network.hpp"
#include "sim/layout.hpp"
#include "sim/policy.hpp"
#include "sim/program.hpp"
#include "sim/training.hpp"

namespace moesim {

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
  double tp_bytes = 0.0;            // per-rank bytes of the tensor-parallel collectives
  double moved_bytes = 0.0;         // policy movements (blocking and not)
  double expert_compute_imbalance = 1.0;  // max / mean expert tokens per GPU, averaged over layers
  // Communication on the critical GPU that no computation hides: all-to-alls, gradient and
  // tensor-parallel collectives and the waits at them (every operation runs on one stream).
  TimeNs exposed_comm_ns = 0;
};



// The dispatch all-to-all-v byte matrix [src * G + dst] of one MoE layer: every buffered
// assignment of source `src` for a slot on GPU `dst` carries one token's hidden vector. The
// combine all-to-all is its transpose.
[[nodiscard]] std::vector<double> dispatch_byte_matrix(const LayerDispatch& d, int slots_per_gpu,
                                                       double token_bytes);

class IterationModel {
 public:
  IterationModel(const Cluster& cluster, const MoeModelSpec& model, const TrainingSpec& training,
                 const ComputeModel& compute, const NetworkModel& network, const ParallelLayout& layout = {},
                 const DispatchSpec& dispatch = {}, const OverlapSpec& overlap = {});

  // Simulates one iteration starting at `start_ns` on `engine`. `placement` is over one
  // expert-parallel group (the same in every group) and lists every MoE layer; `dispatch` has
  // one entry per MoE layer and expert-parallel group of its stage (the iteration's counts, all
  // micro-batches together: each micro-batch carries 1/micro_batches of them); `movements` are
  // charged at the start (blocking ones on the critical path); `sync` (over all GPUs) says how
  // expert gradients and weights flow and where their optimizer runs.
  [[nodiscard]] IterationResult run(Engine& engine, TimeNs start_ns, const Placement& placement,
                                    const std::vector<GroupDispatch>& dispatch,
                                    const std::vector<Movement>& movements, const SyncPlan& sync);
  // The default layout's form: one expert-parallel group over every GPU.
  [[nodiscard]] IterationResult run(Engine& engine, TimeNs start_ns, const Placement& placement,
                                    const std::vector<LayerDispatch>& dispatch,
                                    const std::vector<Movement>& movements, const SyncPlan& sync);

  [[nodiscard]] const LayoutGroups& groups() const { return groups_; }

  // Per-GPU multipliers of compute time (>= some positive value; 1 = nominal) for the following
  // iterations: heterogeneous GPUs and stragglers. Empty: all nominal.
  void set_compute_slowdown(std::vector<double> factors);

  // The trace's cross-layer pairs over all MoE layers (must outlive the model; nullptr: none).
  // Layers whose dispatch has tokens_follow then exchange only the tokens that change GPU.
  void set_cross_layer(const CrossLayerPairs* pairs) { cross_layer_ = pairs; }

  // Forward only (off by default): the next iterations run the forward passes of every
  // micro-batch in the schedule's order and nothing else (no movements, backward passes, gradient
  // synchronisation or optimizer step), so iteration_ns is the time of the forward pass alone, as
  // a framework's timer around the forward measures it. `moesim fit` uses it for measured forward
  // times.
  void set_forward_only(bool on) { forward_only_ = on; }

  // Timeline recording (off by default): every operation of the next iterations as a span on
  // its GPU's compute or communication lane, with a name.
  using Span = Programs::Span;  // comm: the communication lane (collectives, transfers, waits)
  void set_recording(bool on) {
    record_ = on;
    programs_.set_recording(on);
  }
  [[nodiscard]] const std::vector<Span>& spans() const { return programs_.spans(); }
  [[nodiscard]] const std::vector<std::string>& labels() const { return labels_; }
  // The recorded iteration as a dependency graph (sim/op_graph.hpp), for execution-trace export.
  [[nodiscard]] OpGraph graph() const { return programs_.graph(labels_); }

  // Fixed per-GPU costs, exposed for tests and the docs' worked examples.
  [[nodiscard]] TimeNs attention_fwd_ns() const { return attention_fwd_ns_; }
  [[nodiscard]] TimeNs dense_ffn_fwd_ns() const { return dense_ffn_fwd_ns_; }
  [[nodiscard]] TimeNs gate_fwd_ns() const { return gate_fwd_ns_; }
  [[nodiscard]] TimeNs lm_head_fwd_ns() const { return lm_head_fwd_ns_; }
  // One GPU's forward of one expert on `tokens` tokens: its 1/expert_tensor of the FFN width.
  [[nodiscard]] TimeNs expert_fwd_ns(std::int64_t tokens) const;
  // Dense parameters held by each GPU of `stage` before ZeRO sharding (its layers split over the
  // tensor-parallel group; the embedding on the first stage, the LM head on the last).
  [[nodiscard]] double stage_dense_params(int stage) const;

 private:
  // Names the operations added next (only when recording).
  void label(const std::string& what);
  // Whether MoE layer l's tokens, in expert-parallel group k, go straight to layer l + 1's experts.
  [[nodiscard]] bool follows(const Placement& placement, const std::vector<GroupDispatch>& dispatch, std::size_t l,
                             std::size_t k) const;
  const CrossLayerPairs* cross_layer_ = nullptr;
  void add_local(int gpu, Phase phase, TimeNs duration);
  // Local work on every GPU of the stage (its team): the same, or `factor` x per_gpu[i] on its
  // i-th; compute is stretched by each GPU's slowdown.
  void add_stage(int stage, Phase phase, TimeNs duration);
  void add_stage(int stage, Phase phase, const std::vector<TimeNs>& per_gpu, TimeNs factor);
  // training.layer_overhead_ns on every GPU of the stage (host-side: no GPU slowdown stretches it).
  void add_layer_overhead(int stage);
  [[nodiscard]] TimeNs collective_ns(Collective kind, double bytes, const std::vector<int>& gpus);
  // While recording: what the next collective or send moves, for graph().
  void note(Collective kind, double bytes);
  struct LayerCost {
    std::vector<TimeNs> dispatch_ns, combine_ns;        // [ep group]: one micro-batch's all-to-all
    std::vector<double> dispatch_bytes, combine_bytes;  // [ep group]: bytes leaving their GPU
    std::vector<TimeNs> expert_ns;                      // [GPU of the stage]: forward, one micro-batch
    // With overlap.a2a_chunks > 1: one chunk of each.
    std::vector<TimeNs> dispatch_chunk_ns, combine_chunk_ns, expert_chunk_ns;
    // expert_tensor > 1, [expert-tensor-parallel group of the stage]: the all-gather of the
    // tokens its GPUs received (before the experts) and the reduce-scatter of their outputs
    // (after), of the same bytes, one micro-batch (and one chunk).
    std::vector<TimeNs> etp_ag_ns, etp_rs_ns, etp_ag_chunk_ns, etp_rs_chunk_ns;
    std::vector<double> etp_bytes;
    // While recording: [ep group] each all-to-all's members x members bytes (one micro-batch).
    std::vector<std::vector<double>> dispatch_peer_bytes, combine_peer_bytes;
    // The backward pass's dispatch exchange (gradients back to the sources): the combine's
    // unless tokens follow their experts (sim/cross_layer.hpp), [ep group], as above.
    std::vector<TimeNs> back_dispatch_ns, back_dispatch_chunk_ns;
    std::vector<double> back_dispatch_bytes;
    std::vector<std::vector<double>> back_dispatch_peer_bytes;
    // Empties every list, keeping their storage for the next iteration.
    void clear();
  };
  // run()'s per-layer costs and scratch, kept between iterations: no allocation per layer.
  std::vector<LayerCost> cost_;
  std::vector<std::int64_t> pair_copies_, slot_tokens_;
  // expert_tensor > 1: the all-gather (`gather`) or reduce-scatter of every
  // expert-tensor-parallel group of `stage` around its experts (unchunked exchange).
  void add_etp(int stage, const LayerCost& lc, bool gather, IterationResult& res);
  // The all-to-all, experts, all-to-all block of one MoE layer and micro-batch: `first` and
  // `second` exchange times per group (whole or per chunk), experts at `factor` x forward.
  void add_moe_block(int stage, int layer, int micro_batch, const LayerCost& lc, bool forward, IterationResult& res);
  // overlap.grad_sync: `params` dense parameters' gradients reduced over each data-parallel group
  // of the stage on the communication lanes, once the compute lanes reach this point.
  void add_overlapped_grad_bucket(int stage, double params, IterationResult& res);
  [[nodiscard]] int comm_lane(int gpu) const { return gpus_ + gpu; }
  void add_forward(int stage, int chunk, int micro_batch, const std::vector<LayerCost>& cost, IterationResult& res);
  void add_backward(int stage, int chunk, int micro_batch, const std::vector<LayerCost>& cost, IterationResult& res);
  void add_sync(const Placement& placement, const SyncPlan& sync, IterationResult& res);
  // The tensor-parallel collectives around one block (attention or FFN) of one micro-batch.
  void add_tp_block(int stage, bool before, IterationResult& res);
  // ZeRO-3 on the communication lanes: one layer's parameters all-gathered or its gradients
  // reduce-scattered over each data-parallel group of the stage, starting once the compute lanes
  // reach this point. A gather ends in a message per GPU that zero3_wait receives.
  void add_zero3(int stage, int layer, Collective kind, IterationResult& res);
  // The compute lanes of `stage` wait for the last gather add_zero3 issued.
  void zero3_wait(int stage);
  int zero3_done_ = -1;  // the team message of the latest gather
  // One all-to-all in every expert-parallel group of the stage.
  void add_all_to_all(int stage, const std::vector<TimeNs>& ns, const std::vector<double>& bytes,
                      IterationResult& res, int lane_offset = 0, double share = 1.0,
                      const std::vector<std::vector<double>>* peer_bytes = nullptr);
  void init_pipeline();
  // The programs' teams and partitions (sim/program.hpp) of every stage.
  void init_teams();
  // The team message carrying a micro-batch's activations (or gradients) into `virtual_stage`.
  [[nodiscard]] int message_id(bool forward, int micro_batch, int virtual_stage) const;

  const Cluster& cluster_;
  MoeModelSpec model_;
  TrainingSpec training_;
  const ComputeModel& compute_;
  const NetworkModel& network_;
  int gpus_;
  std::vector<int> all_gpus_;
  TimeNs attention_fwd_ns_ = 0, dense_ffn_fwd_ns_ = 0, gate_fwd_ns_ = 0, lm_head_fwd_ns_ = 0,
         shared_expert_fwd_ns_ = 0;
  double dense_params_ = 0.0;
  std::vector<double> compute_slowdown_;
  bool record_ = false;
  bool forward_only_ = false;
  std::vector<std::string> labels_;
  ParallelLayout layout_;
  LayoutGroups groups_;
  DispatchSpec dispatch_;
  OverlapSpec overlap_;
  bool two_lanes_ = false;
  int sms_ = 0;  // of each GPU, for overlap.dispatch_sms
  std::vector<std::vector<int>> etp_groups_;  // [stage * G/pp/etp + i], with expert_tensor > 1
  double dispatch_token_bytes_ = 0.0, combine_token_bytes_ = 0.0;
  std::vector<int> moe_index_;      // [layer]: index among MoE layers, -1 for dense layers
  std::vector<int> moe_layer_ids_;  // [MoE layer]: its layer
  double p2p_bytes_ = 0.0;  // one activation message between stages
  std::vector<TimeNs> p2p_next_ns_, p2p_prev_ns_;  // [stage]: one activation message to the next / previous stage
  std::vector<std::vector<int>> tp_groups_, dp_groups_;  // [stage * tp or dp groups]: distinct groups
  std::vector<double> stage_dense_params_;               // [stage], per GPU
  // [stage]: the team of its compute lanes and of its communication lanes (-1: one lane a GPU),
  // and the partitions of its GPUs into expert-parallel, tensor-parallel, data-parallel (groups
  // of two or more) and expert-tensor-parallel groups.
  std::vector<int> stage_team_, comm_team_, ep_part_, tp_part_, dp_part_, etp_part_;
  std::vector<char> stage_slowed_;  // [stage]: some GPU of it has a compute slowdown
  std::vector<std::vector<TimeNs>> tp_block_ns_;  // [stage * 3 + collective]: add_tp_block's times
  std::vector<TimeNs> scratch_ns_;

  // expert_fwd_ns by token count, kept across iterations (the same counts recur every layer and
  // iteration): -1 for not yet known. Only for a pure compute model (the roofline); a measured
  // profile counts its look-ups, which a memo would change.
  [[nodiscard]] TimeNs expert_fwd_memo(std::int64_t tokens);
  bool memo_expert_fwd_ = false;
  std::vector<TimeNs> expert_fwd_memo_;

  // Collective times by (kind, bytes, group), kept across iterations: a pure function of the
  // network, and the same replica groups recur. Cleared when it grows past a bound. Hashed: the
  // ordered map's look-ups compared whole groups at every level of the tree.
  struct CollectiveKey {
    int kind = 0;
    double bytes = 0.0;
    std::vector<int> gpus;
    // By value, as the map's order compared them (0.0 and -0.0 are one key).
    bool operator==(const CollectiveKey& o) const {
      return kind == o.kind && bytes == o.bytes && gpus == o.gpus;
    }
  };
  struct CollectiveKeyHash {
    std::size_t operator()(const CollectiveKey& k) const;
  };
  std::unordered_map<CollectiveKey, TimeNs, CollectiveKeyHash> collective_memo_;
  std::uint64_t memo_generation_ = 0;  // counts the memo's clears
  // add_sync's replica all-reduces of one MoE layer (members, time), for the slots `layout`,
  // valid while the memo has not been cleared since (memo_generation).
  static constexpr std::uint64_t kNoGeneration = ~std::uint64_t{0};
  struct ReplicaSync {
    std::vector<int> layout;
    int slots_per_gpu = 0;
    std::uint64_t memo_generation = kNoGeneration;
    std::vector<std::pair<std::vector<int>, TimeNs>> ops;
  };
  std::vector<ReplicaSync> replica_sync_;  // [MoE layer]
  // The times of a list of policy collectives (SyncPlan's pre, grad and post lists) by position,
  // from the last iteration: an entry whose (kind, bytes, members) is unchanged is the memo's
  // time, compared instead of hashed; valid in the memo generation it was looked up in.
  struct OpTimes {
    std::uint64_t memo_generation = kNoGeneration;
    std::vector<int> kinds;  // -1: no entry
    std::vector<double> bytes;
    std::vector<std::vector<int>> gpus;
    std::vector<TimeNs> ns;
  };
  std::array<OpTimes, 3> op_times_;
  [[nodiscard]] TimeNs op_ns(OpTimes& times, std::size_t i, const CollectiveOp& op);
  Programs programs_;

  // The policy's work in every micro-batch before MoE layer `moe_layer`'s dispatch
  // (SyncPlan::micro_batch_*), on the GPUs of `stage`.
  void add_micro_batch_work(int stage, int moe_layer, IterationResult& res);
  const SyncPlan* micro_sync_ = nullptr;            // the running iteration's plan
  std::vector<std::vector<TimeNs>> micro_work_ns_;  // [MoE layer][GPU]: its decision and transfer time
};

}  // namespace moesim
