#pragma once
// The parallel layout of a training job (scenario section `parallelism`): tensor, pipeline,
// expert and data parallelism, ZeRO, micro-batches, and the process groups they imply.
//
// Rank order follows Megatron-Core (megatron/core/parallel_state.py, RankGenerator with the
// default order "tp-cp-ep-dp-pp"): tensor-parallel ranks are innermost, then data-parallel,
// then pipeline stages outermost. A global rank r has
//   tp_rank = r % tp,  dp_rank = (r / tp) % dp,  stage = r / (tp * dp).
// The expert layers decompose the GPUs of a stage again as expert_tensor x expert x
// expert-data (Megatron-Core's expert RankGenerator, order "tp-ep-dp", its tp being
// expert_tensor): local rank i = r - stage * G/pp has etp_rank = i % etp, ep_rank = (i / etp) % ep
// and edp_rank = i / (etp * ep). An expert-parallel group is ep ranks of one stage with the same
// etp_rank, etp apart (consecutive when etp = 1); the etp GPUs of an expert-tensor-parallel group
// are consecutive and each holds 1/etp of every expert the group's ep rank holds.
// The default layout (everything 1, expert and data derived) is one data-parallel and one
// expert-parallel group over the whole cluster: the model before layouts existed.
#include <string>
#include <vector>

#include "models/specs.hpp"
#include "core/units.hpp"

namespace moesim {

struct ParallelLayout {
  int tensor = 1;
  int pipeline = 1;
  int expert = 0;         // 0: every GPU of a stage (dp * tp / expert_tensor)
  int expert_tensor = 1;  // GPUs that split each expert's FFN (Megatron-Core's expert_tensor_parallel_size)
  int data = 0;           // 0: derived, GPUs / (tensor * pipeline)
  int virtual_stages = 1; // model chunks per stage (interleaved 1F1B when > 1)
  int micro_batches = 1;  // per iteration and data-parallel rank
  int zero_stage = 0;     // dense parameters: 0 replicated, 1 optimizer, 2 + gradients, 3 + weights
  bool sequence_parallel = false;  // Megatron-Core's: TP all-reduces become reduce-scatter + all-gather

  // Fills `data` and `expert` when they are 0 (derived) for `gpus` GPUs. Does not validate.
  void resolve(int gpus);
  // The first rule `gpus`, `gpus_per_node` and `layers` break, as a sentence naming the keys and
  // what is allowed; empty when the (resolved) layout is valid.
  [[nodiscard]] std::string check(int gpus, int gpus_per_node, int layers, bool has_moe_layers) const;
  [[nodiscard]] bool is_default() const {
    return tensor == 1 && pipeline == 1 && virtual_stages == 1 && micro_batches == 1 && zero_stage == 0;
  }
};

// Process groups of a resolved, valid layout over `gpus` GPUs (global ranks).
class LayoutGroups {
 public:
  LayoutGroups(const ParallelLayout& layout, int gpus, int layers);

  [[nodiscard]] const ParallelLayout& layout() const { return l_; }
  [[nodiscard]] int gpus() const { return gpus_; }
  [[nodiscard]] int stages() const { return l_.pipeline; }
  [[nodiscard]] int gpus_per_stage() const { return gpus_ / l_.pipeline; }
  // Expert-parallel groups of a stage: etp x (expert-data-parallel copies).
  [[nodiscard]] int ep_groups_per_stage() const { return gpus_per_stage() / l_.expert; }
  // Expert-data-parallel copies of each expert per stage (ranks that hold the same shard of it).
  [[nodiscard]] int edp_copies() const { return gpus_per_stage() / (l_.expert * l_.expert_tensor); }

  [[nodiscard]] int tp_rank(int r) const { return r % l_.tensor; }
  [[nodiscard]] int dp_rank(int r) const { return (r / l_.tensor) % l_.data; }
  [[nodiscard]] int stage(int r) const { return r / gpus_per_stage(); }
  [[nodiscard]] int etp_rank(int r) const { return (r % gpus_per_stage()) % l_.expert_tensor; }
  [[nodiscard]] int ep_rank(int r) const { return ((r % gpus_per_stage()) / l_.expert_tensor) % l_.expert; }
  [[nodiscard]] int edp_rank(int r) const { return (r % gpus_per_stage()) / (l_.expert * l_.expert_tensor); }

  // GPUs of stage s, ascending.
  [[nodiscard]] std::vector<int> stage_gpus(int s) const;
  // The tensor-parallel group of r (tp consecutive ranks).
  [[nodiscard]] std::vector<int> tp_group(int r) const;
  // The data-parallel group of r (same stage and tp rank): dense gradients are reduced over it.
  [[nodiscard]] std::vector<int> dp_group(int r) const;
  // Rank j of expert-parallel group `k` of stage `s`, k = copy * etp + etp_rank:
  // s * G/pp + (copy * ep + j) * etp + etp_rank (s * G/pp + k * ep + j when etp = 1).
  [[nodiscard]] int ep_group_rank(int s, int k, int j) const {
    const int etp = l_.expert_tensor;
    return s * gpus_per_stage() + ((k / etp) * l_.expert + j) * etp + k % etp;
  }
  // The expert-parallel group k of stage s, ascending; the group an ep_rank-j GPU r belongs to.
  [[nodiscard]] std::vector<int> ep_group(int s, int k) const;
  [[nodiscard]] int ep_group_of(int r) const { return edp_rank(r) * l_.expert_tensor + etp_rank(r); }
  // The expert-tensor-parallel group of r (etp consecutive ranks).
  [[nodiscard]] std::vector<int> etp_group(int r) const;
  // The same rank of the previous / next pipeline stage (-1 at either end).
  [[nodiscard]] int prev_stage_rank(int r) const;
  [[nodiscard]] int next_stage_rank(int r) const;

  // Transformer layers are split over the virtual stages as evenly as they go: virtual stage
  // v = chunk * pp + stage holds layers [v * L / C, (v + 1) * L / C), C = pp * virtual_stages
  // (rounded down), so chunks differ by at most one layer (Megatron-Core's even split when C
  // divides L; DeepSeek-V3's 61 layers over 16 stages give stages of 3 and 4).
  [[nodiscard]] int chunks() const { return l_.pipeline * l_.virtual_stages; }
  [[nodiscard]] int first_layer(int stage, int chunk) const {
    return static_cast<int>(static_cast<long long>(chunk * l_.pipeline + stage) * layers_ / chunks());
  }
  [[nodiscard]] int chunk_layers(int stage, int chunk) const {
    return static_cast<int>(static_cast<long long>(chunk * l_.pipeline + stage + 1) * layers_ / chunks()) -
           first_layer(stage, chunk);
  }
  // The most layers any chunk holds.
  [[nodiscard]] int max_chunk_layers() const { return (layers_ + chunks() - 1) / chunks(); }
  [[nodiscard]] int stage_of_layer(int layer) const { return virtual_stage_of_layer(layer) % l_.pipeline; }
  [[nodiscard]] int virtual_stage_of_layer(int layer) const {
    // The v with v * L / C <= layer < (v + 1) * L / C (floors).
    return static_cast<int>((static_cast<long long>(layer + 1) * chunks() - 1) / layers_);
  }

 private:
  ParallelLayout l_;
  int gpus_;
  int layers_;
};

// Dense (non-expert) parameters of one layer: attention and norms, plus the router and shared
// experts of an MoE layer or the FFN of a dense one.
[[nodiscard]] double layer_dense_params(const MoeModelSpec& m, int layer);
// Dense parameters each GPU of each stage holds before ZeRO sharding ([stage]): its layers split
// over the tensor-parallel group, the (tied) embedding on the first stage and, as Megatron-Core
// keeps it, a copy as the LM head on the last.
[[nodiscard]] std::vector<double> stage_dense_params(const MoeModelSpec& m, const LayoutGroups& groups);
// The most (micro-batch, chunk) forwards whose activations stage `stage` holds at once under
// the pipeline schedule (1 without pipelining; stages - stage in 1F1B).
[[nodiscard]] int in_flight_chunks(const LayoutGroups& groups, int stage);

// Communication that overlaps computation (scenario section `overlap`). `a2a_chunks` > 1 splits
// each MoE layer's tokens into chunks whose all-to-alls run on a communication stream while the
// experts compute another chunk (Tutel's a2a_ffn_overlap_degree, FSMoE's pipelining);
// `grad_sync` reduces each layer's dense gradients on that stream as soon as its last backward
// is done (bucketed gradient reduction, as PyTorch DDP and Megatron-Core's overlap_grad_reduce).
// `dispatch_sms` > 0 (with a2a_chunks > 1): the all-to-all kernels hold that many SMs while they
// run beside the experts (DeepEP's kernels take a configurable number of SMs; DeepSeek-V3 gives
// 20 of an H800's 132 to communication), so an expert chunk that overlaps them runs on the rest.
struct OverlapSpec {
  int a2a_chunks = 1;
  bool grad_sync = false;
  int dispatch_sms = 0;
};
// The time of a kernel of `ns` on all `sms` SMs when `taken` of them serve communication: the
// work spreads over sms - taken SMs (an upper bound: it assumes the kernel is compute-bound and
// scales with SMs, which large GEMMs do and memory-bound kernels do not), rounded up.
[[nodiscard]] TimeNs on_fewer_sms(TimeNs ns, int sms, int taken);

// One step of a pipeline schedule on one stage: forward or backward of `micro_batch` through
// model chunk `chunk`.
struct PipelineStep {
  bool forward = true;
  int micro_batch = 0;
  int chunk = 0;
};
// Megatron-Core's order of steps on stage `stage` of `stages`, with `chunks` model chunks per
// stage and `micro_batches` micro-batches: 1F1B (chunks = 1: warm-up of stages - stage - 1
// forwards, then one forward and one backward alternately, then the remaining backwards) and
// interleaved 1F1B (chunks > 1, micro_batches a multiple of stages), as in
// megatron/core/pipeline_parallel/schedules.py.
[[nodiscard]] std::vector<PipelineStep> pipeline_schedule(int stage, int stages, int chunks, int micro_batches);

// The first rule a layout breaks, with the `parallelism` key to blame (the most specific one:
// `expert` for the expert rules, `tensor` for the node rule, `pipeline` for the layer split,
// `micro_batches` for the interleaving multiple); both empty when the layout is valid.
// ParallelLayout::check returns its message.
struct LayoutViolation {
  std::string key;
  std::string message;
  [[nodiscard]] bool ok() const { return message.empty(); }
};
[[nodiscard]] LayoutViolation check_layout(const ParallelLayout& layout, int gpus, int gpus_per_node, int layers,
                                           bool has_moe_layers);

// How tokens travel in the dispatch all-to-all (scenario sections `dispatch` and `routing`).
// `fp8` sends dispatched tokens as 1 byte per element plus one fp32 scale per 128 elements
// (DeepEP's FP8 dispatch, DeepSeek-V3 report section 3.3); combine stays in the model dtype.
// `hierarchical` is DeepEP's normal (internode) kernels: a token crosses the network once per
// destination node, to the GPU of that node with its own local index, which forwards it over
// NVLink to the destination GPUs there; combine is the reverse, reduced in the node.
// `max_nodes_per_token` (DeepSeek-V3's node-limited routing, M = 4) bounds the nodes a token's
// copies go to; 0: no bound.
struct DispatchSpec {
  bool fp8 = false;
  bool hierarchical = false;
  int max_nodes_per_token = 0;
};
// Bytes of one token sent by the dispatch all-to-all: hidden x model_dtype_bytes, or with fp8
// hidden + 4 x ceil(hidden / 128).
[[nodiscard]] double dispatch_token_bytes(int hidden, int model_dtype_bytes, bool fp8);

// The hierarchical exchange of one expert-parallel group: `assignments[i * n + j]` token copies
// GPU gpus[i] (ascending) sends to experts on gpus[j], n = gpus.size(), `top_k` copies per token.
// Returns the bytes each pair moves when every remote node gets each token once: source i sends
// T_i (1 - (1 - p)^k) tokens to its rail peer in node N, p being the share of its copies bound
// for N (the expected number of distinct tokens among them when a token's k choices fall
// independently; exact for k = 1), scaled so that a token reaches at most max_nodes_per_token
// nodes on average; the peer forwards the token to each destination GPU there over NVLink, once
// per GPU however many of its experts chose it (the same expectation over that GPU's share).
// Tokens for GPUs of the source's own node go straight over NVLink, once per GPU.
[[nodiscard]] std::vector<double> hierarchical_exchange(const std::vector<double>& assignments,
                                                        const std::vector<int>& gpus, int gpus_per_node, int top_k,
                                                        double token_bytes, int max_nodes_per_token);

}  // namespace moesim
