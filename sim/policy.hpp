#pragma once
// The interface every expert-placement policy implements. The core (sim/) knows policies only
// through it: a policy sees the counts routed in the iteration that just ran and returns the
// placement of the next one, decides how each source GPU's tokens are split over an expert's
// replicas (and what capacity cuts off), and lists the data movements its decisions require;
// the core charges those movements on the links.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/specs.hpp"
#include "sim/collectives.hpp"
#include "sim/network.hpp"
#include "sim/routing.hpp"
#include "sim/training.hpp"

namespace moesim {

// Which logical expert each GPU slot holds, per MoE layer. Slot j lives on GPU j / slots_per_gpu.
struct Placement {
  int gpus = 0;
  int slots_per_gpu = 0;
  std::vector<std::vector<int>> expert_of_slot;  // [moe layer][gpu * slots_per_gpu + s]; -1 empty

  [[nodiscard]] int num_slots() const { return gpus * slots_per_gpu; }
  [[nodiscard]] int gpu_of_slot(int slot) const { return slot / slots_per_gpu; }
  // Slots holding `expert` in `layer`, in slot order.
  [[nodiscard]] std::vector<int> replicas(int layer, int expert) const;
};

// How a layer's tokens travel to the slots that compute them (a policy's choice per layer and
// iteration; LayerDispatch::exchange).
enum class ExchangeAlgorithm : std::uint8_t {
  flat,       // one all-to-all-v over the expert-parallel group
  two_level,  // an intra-node all-to-all to the GPU of the destination's local index, then an
              // inter-node all-to-all between GPUs of one local index, messages aggregated per node
  none,       // no exchange: every source computes its own buffered assignments (data parallelism;
              // the policy's SyncPlan gathers the weights it needs)
};

// How one MoE layer's tokens were dispatched. Index [src * num_slots + slot].
struct LayerDispatch {
  int gpus = 0;
  int num_slots = 0;
  // Assignments the expert replica in `slot` processes for source `src` (after capacity).
  std::vector<std::int64_t> accepted;
  // Assignments' worth of buffer sent and computed: padded to capacity where the policy pads.
  std::vector<std::int64_t> buffered;
  std::int64_t routed = 0;   // assignments routed by the gate
  std::int64_t dropped = 0;  // assignments cut off by capacity
  // The tokens go from this layer's experts straight to the next MoE layer's experts (ExFlow's
  // context-coherent flow) instead of back to their sources and out again: where the next layer
  // is on the same pipeline stage and the trace has cross-layer pairs for the two, the combine of
  // this layer carries only the tokens that change GPU and the next layer's dispatch nothing
  // (sim/cross_layer.hpp).
  bool tokens_follow = false;

  void reset(int g, int slots) {
    gpus = g;
    num_slots = slots;
    accepted.assign(static_cast<std::size_t>(g) * slots, 0);
    buffered.assign(static_cast<std::size_t>(g) * slots, 0);
    routed = 0;
    dropped = 0;
    tokens_follow = false;
    exchange = ExchangeAlgorithm::flat;
    compute_share = 1.0;
  }

  // How the exchange runs. The scenario's dispatch.hierarchical, when set, replaces flat and
  // two_level alike (it has its own two-stage route).
  ExchangeAlgorithm exchange = ExchangeAlgorithm::flat;
  // The part of an expert's FFN width a slot computes for each buffered assignment: 1 = the whole
  // expert; 1/r when r slots each hold a 1/r shard and every shard sees every token (model
  // parallelism: the combine sums the partial outputs).
  double compute_share = 1.0;
};

// One MoE layer's dispatch in each expert-parallel group of its pipeline stage ([group]), each
// over the group's GPUs and slots (LayerDispatch::gpus = the group size).
using GroupDispatch = std::vector<LayerDispatch>;

// A data movement a policy requires (weights, optimizer state, ...).
struct Movement {
  Transfer transfer;
  bool blocking = true;  // on the critical path of the next iteration
  std::string what;      // e.g. "expert 3 weights"
};

struct PolicyDecision {
  bool new_placement = false;
  Placement placement;  // valid when new_placement
  std::vector<Movement> movements;
};

// A collective a policy adds to the iteration (e.g. the all-reduce of expert popularity).
struct CollectiveOp {
  Collective kind = Collective::AllReduce;
  double bytes = 0.0;     // per rank
  std::vector<int> gpus;  // sorted, distinct
  std::string what;
};

// How the expert parameters' gradients reach their optimizer and the updated weights come back,
// for one iteration. The dense (non-expert) parameters are always the core's: all-reduced over
// all GPUs and updated where `training.optimizer_offload` says.
struct SyncPlan {
  // Collectives right after the backward pass (e.g. SYMI's popularity all-reduce).
  std::vector<CollectiveOp> pre_collectives;
  // All-reduce every expert's gradients among the GPUs that hold it (in (layer, expert) order).
  bool replica_allreduce = true;
  // Under several expert-parallel groups a stage (expert-data-parallel copies), combine the
  // gradients of an expert that one GPU of a group holds over its copies, which no collective of
  // the group's plan reaches. false: no expert gradient reduction at all (the oracle's bound).
  bool copy_allreduce = true;
  // Collectives replacing or following the replica all-reduce (e.g. reduce-scatter to shards).
  std::vector<CollectiveOp> grad_collectives;
  // Point-to-point gradient collection to optimizer owners (GPU -> GPU or GPU -> host).
  std::vector<Transfer> gradient_transfers;
  // Expert parameters whose Adam step runs on each GPU (through HBM) or on each node's host.
  std::vector<double> gpu_optimizer_params;   // [gpu]
  std::vector<double> host_optimizer_params;  // [node]
  // Host-device copies around a host optimizer step, per GPU: gradients down, weights up.
  std::vector<double> d2h_bytes;  // [gpu]
  std::vector<double> h2d_bytes;  // [gpu]
  // Collectives after the optimizer (e.g. all-gather of updated shards).
  std::vector<CollectiveOp> post_collectives;
  // Updated weights sent to the slots of the next placement (host/GPU -> GPU).
  std::vector<Transfer> weight_transfers;
  // The policy's own decision time on each GPU, charged on the critical path as movement.
  std::vector<TimeNs> decision_ns;  // [gpu]; empty = none
  // Work repeated in every micro-batch of MoE layer l ([l]) right after its gate, before its
  // dispatch all-to-all: what a policy planning from each micro-batch's own counts does (e.g.
  // temporary copies of hot experts). Charged in this order; empty = none.
  std::vector<std::vector<CollectiveOp>> micro_batch_collectives;  // e.g. all-gather of the counts
  std::vector<std::vector<TimeNs>> micro_batch_decision_ns;        // [l][gpu]
  std::vector<std::vector<Transfer>> micro_batch_transfers;        // e.g. the copies' weights

  void resize(int gpus, int nodes) {
    gpu_optimizer_params.assign(gpus, 0.0);
    host_optimizer_params.assign(nodes, 0.0);
    d2h_bytes.assign(gpus, 0.0);
    h2d_bytes.assign(gpus, 0.0);
  }
};

// What a policy may look at: the world, the shape of the job, and the sizes it moves.
struct PolicyContext {
  const ClusterSpec* cluster = nullptr;
  const MoeModelSpec* model = nullptr;
  const TrainingSpec* training = nullptr;
  int gpus = 0;
  int slots_per_gpu = 0;
  int moe_layers = 0;
  int experts = 0;
  std::int64_t tokens_per_gpu = 0;  // tokens (not assignments) each GPU routes per MoE layer
  int top_k = 1;
  double expert_params = 0.0;           // parameters of one routed expert
  double expert_weight_bytes = 0.0;     // one expert's parameters in the training dtype
  double expert_grad_bytes = 0.0;       // one expert's gradients
  double expert_optimizer_bytes = 0.0;  // one expert's optimizer state (Adam, mixed precision)
  std::uint64_t seed = 1;               // the scenario's seed, for randomised policies
  // The trace's cross-layer pair profile over these MoE layers; nullptr when it has none.
  const CrossLayerPairs* cross_layer = nullptr;
};

// The expert-data-parallel default: every expert's replicas all-reduce their gradients; the
// optimizer state of an expert lives with its replicas, on their GPUs or (offloaded) on their
// hosts. With `shard_over_replicas` (ZeRO-1 style) each of an expert's r replicas owns 1/r of
// its optimizer state: gradients are reduce-scattered instead of all-reduced and the updated
// shards all-gathered.
[[nodiscard]] SyncPlan default_sync_plan(const PolicyContext& ctx, const Placement& placement,
                                         bool shard_over_replicas);

class Policy {
 public:
  virtual ~Policy() = default;
  [[nodiscard]] virtual std::string name() const = 0;
  // The placement of the first iteration.
  [[nodiscard]] virtual Placement initial_placement() = 0;
  // Dispatches one MoE layer: `counts` is the [src][expert] matrix of assignments.
  virtual void dispatch(int layer, const std::int64_t* counts, const Placement& placement,
                        LayerDispatch& out) = 0;
  // Called after each iteration with the counts it routed; returns the next placement and the
  // movements it costs.
  [[nodiscard]] virtual PolicyDecision after_iteration(int iteration, const IterationCounts& counts,
                                                       const Placement& current) = 0;
  // How gradients and weights flow in iteration `iteration`, which ran on `current` and whose
  // decision produced `next` (equal to `current` when nothing changed). Called after
  // after_iteration. Default: default_sync_plan(ctx, current, false).
  [[nodiscard]] virtual SyncPlan sync_plan(int iteration, const Placement& current, const Placement& next);
  // Called before iteration `iteration`'s MoE layers are dispatched, with its own counts: a
  // policy planning inside the iteration (no lag) sets `run_on` to the placement the iteration
  // runs on and returns true; dispatch, after_iteration and sync_plan then get `run_on` as the
  // current placement. Default: false (the iteration runs on `current`).
  [[nodiscard]] virtual bool plan_in_iteration(int /*iteration*/, const IterationCounts& /*counts*/,
                                               const Placement& /*current*/, Placement& /*run_on*/) {
    return false;
  }
  // Every parameter, defaults filled in (for summary.json).
  [[nodiscard]] virtual nlohmann::json parameters() const = 0;

 protected:
  explicit Policy(const PolicyContext& ctx) : ctx_(ctx) {}
  PolicyContext ctx_;
};

}  // namespace moesim
