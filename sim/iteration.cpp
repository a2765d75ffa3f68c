#include "sim/iteration.hpp"

#include "sim/exchange.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>
#include <stdexcept>
#include <tuple>

#include "models/roofline.hpp"
#include "sim/cross_layer.hpp"

namespace moesim {

std::vector<double> dispatch_byte_matrix(const LayerDispatch& d, int slots_per_gpu, double token_bytes) {
  const int g = d.gpus;
  std::vector<double> bytes(static_cast<std::size_t>(g) * g, 0.0);
  for (int src = 0; src < g; ++src)
    for (int sl = 0; sl < d.num_slots; ++sl) {
      const std::int64_t n = d.buffered[static_cast<std::size_t>(src) * d.num_slots + sl];
      // ExchangeAlgorithm::none: the source computes its own assignments, nothing leaves it.
      const int dst = d.exchange == ExchangeAlgorithm::none ? src : sl / slots_per_gpu;
      if (n != 0) bytes[static_cast<std::size_t>(src) * g + dst] += static_cast<double>(n) * token_bytes;
    }
  return bytes;
}

IterationModel::IterationModel(const Cluster& cluster, const MoeModelSpec& model, const TrainingSpec& training,
                               const ComputeModel& compute, const NetworkModel& network, const ParallelLayout& layout,
                               const DispatchSpec& dispatch, const OverlapSpec& overlap)
    : cluster_(cluster), model_(model), training_(training), compute_(compute), network_(network),
      gpus_(cluster.num_gpus()), layout_(layout), groups_(layout, cluster.num_gpus(), model.layers) {
  layout_.resolve(gpus_);
  all_gpus_.resize(gpus_);
  std::iota(all_gpus_.begin(), all_gpus_.end(), 0);
  const double tp = layout_.tensor;
  const double t = static_cast<double>(model.tokens_per_gpu());  // one micro-batch of one data-parallel rank
  const double h = model.hidden, b = model.micro_batch_per_gpu, s = model.seq_len;
  const double qkv = static_cast<double>(model.heads + 2 * model.kv_heads) * model.head_dim;
  const double attn_width = static_cast<double>(model.heads) * model.head_dim;
  const int eb = dtype_bytes(model.dtype);
  // Tensor parallelism splits the heads and the FFN width (Megatron's column / row parallel
  // GEMMs); with sequence parallelism each rank routes 1/tp of the tokens through the gate.
  attention_fwd_ns_ = compute.gemm_ns(t, qkv / tp, h, eb) +
                      compute.gemm_ns(b * (model.heads / tp) * s, s, model.head_dim, eb) +
                      compute.gemm_ns(b * (model.heads / tp) * s, model.head_dim, s, eb) +
                      compute.gemm_ns(t, h, attn_width / tp, eb);
  dense_ffn_fwd_ns_ = (model.ffn_matrices - 1) * compute.gemm_ns(t, model.ffn_hidden / tp, h, eb) +
                      compute.gemm_ns(t, h, model.ffn_hidden / tp, eb);
  gate_fwd_ns_ = compute.gemm_ns(t / tp, model.experts, h, eb);
  shared_expert_fwd_ns_ = model.shared_experts * ((model.ffn_matrices - 1) *
                                                      compute.gemm_ns(t, model.expert_ffn_hidden / tp, h, eb) +
                                                  compute.gemm_ns(t, h, model.expert_ffn_hidden / tp, eb));
  lm_head_fwd_ns_ = compute.gemm_ns(t, model.vocab / tp, h, eb);
  dense_params_ = model.dense_params_total();
  dispatch_ = dispatch;
  overlap_ = overlap;
  sms_ = cluster.spec().gpu.sms;
  // ZeRO-3 prefetches the next layer's parameters on the communication stream.
  two_lanes_ = overlap.a2a_chunks > 1 || overlap.grad_sync || layout_.zero_stage == 3;
  dispatch_token_bytes_ = dispatch_token_bytes(model.hidden, eb, dispatch.fp8);
  combine_token_bytes_ = static_cast<double>(model.hidden) * eb;

  moe_index_.assign(static_cast<std::size_t>(model.layers), -1);
  for (int l = 0, k = 0; l < model.layers; ++l)
    if (model.is_moe_layer(l)) {
      moe_index_[static_cast<std::size_t>(l)] = k++;
      moe_layer_ids_.push_back(l);
    }
  const int stages = groups_.stages();
  stage_dense_params_ = moesim::stage_dense_params(model, groups_);
  for (int st = 0; st < stages; ++st)
    for (int g : groups_.stage_gpus(st)) {
      if (groups_.tp_rank(g) == 0) tp_groups_.push_back(groups_.tp_group(g));
      if (groups_.dp_rank(g) == 0) dp_groups_.push_back(groups_.dp_group(g));
      if (layout_.expert_tensor > 1 && groups_.etp_rank(g) == 0) etp_groups_.push_back(groups_.etp_group(g));
    }
  init_pipeline();
  init_teams();
  memo_expert_fwd_ = dynamic_cast<const RooflineCompute*>(&compute) != nullptr;
}

double IterationModel::stage_dense_params(int stage) const { return stage_dense_params_[static_cast<std::size_t>(stage)]; }

TimeNs IterationModel::expert_fwd_ns(std::int64_t tokens) const {
  if (tokens <= 0) return 0;
  const double n = static_cast<double>(tokens);
  const int eb = dtype_bytes(model_.dtype);
  // Megatron-Core's expert tensor parallelism: fc1 column-parallel, fc2 row-parallel.
  const double width = static_cast<double>(model_.expert_ffn_hidden) / layout_.expert_tensor;
  return (model_.ffn_matrices - 1) * compute_.gemm_ns(n, width, model_.hidden, eb) +
         compute_.gemm_ns(n, model_.hidden, width, eb);
}

void IterationModel::add_local(int gpu, Phase phase, TimeNs duration) {
  if (duration <= 0) return;
  // A slow GPU (heterogeneous or straggling) stretches its own kernels, nothing else.
  if (phase == Phase::Compute && !compute_slowdown_.empty() && compute_slowdown_[gpu] != 1.0) {
    duration = static_cast<TimeNs>(std::ceil(static_cast<double>(duration) * compute_slowdown_[gpu]));
  }
  programs_.add_local(gpu, phase, duration);
}

void IterationModel::add_stage(int stage, Phase phase, TimeNs duration) {
  if (duration <= 0) return;
  const auto st = static_cast<std::size_t>(stage);
  if (phase != Phase::Compute || stage_slowed_.empty() || stage_slowed_[st] == 0) {
    programs_.team_local(stage_team_[st], phase, duration);
    return;
  }
  const int n = groups_.gpus_per_stage();
  scratch_ns_.assign(static_cast<std::size_t>(n), duration);
  for (int i = 0; i < n; ++i) {
    const double f = compute_slowdown_[static_cast<std::size_t>(stage * n + i)];
    if (f != 1.0) scratch_ns_[static_cast<std::size_t>(i)] = static_cast<TimeNs>(std::ceil(static_cast<double>(duration) * f));
  }
  programs_.team_local(stage_team_[st], phase, scratch_ns_);
}

void IterationModel::add_stage(int stage, Phase phase, const std::vector<TimeNs>& per_gpu, TimeNs factor) {
  const int n = groups_.gpus_per_stage();
  const bool slowed = phase == Phase::Compute && !stage_slowed_.empty() && stage_slowed_[static_cast<std::size_t>(stage)] != 0;
  scratch_ns_.resize(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    // As add_local: nothing for no work, then the GPU's slowdown.
    TimeNs d = factor * per_gpu[static_cast<std::size_t>(i)];
    if (d <= 0) d = 0;
    else if (slowed) {
      const double f = compute_slowdown_[static_cast<std::size_t>(stage * n + i)];
      if (f != 1.0) d = static_cast<TimeNs>(std::ceil(static_cast<double>(d) * f));
    }
    scratch_ns_[static_cast<std::size_t>(i)] = d;
  }
  programs_.team_local(stage_team_[static_cast<std::size_t>(stage)], phase, scratch_ns_);
}

void IterationModel::add_layer_overhead(int stage) {
  const auto ns = static_cast<TimeNs>(std::llround(training_.layer_overhead_ns));
  if (ns <= 0) return;
  label("framework overhead");
  programs_.team_local(stage_team_[static_cast<std::size_t>(stage)], Phase::Compute, ns);
}

void IterationModel::label(const std::string& what) {
  if (!record_) return;
  labels_.push_back(what);
  programs_.set_label(static_cast<int>(labels_.size()) - 1);
}

void IterationModel::set_compute_slowdown(std::vector<double> factors) {
  if (!factors.empty() && static_cast<int>(factors.size()) != gpus_) {
    throw std::logic_error("IterationModel: one compute slowdown factor per GPU");
  }
  compute_slowdown_ = std::move(factors);
  stage_slowed_.assign(compute_slowdown_.empty() ? 0 : static_cast<std::size_t>(groups_.stages()), 0);
  for (std::size_t g = 0; g < compute_slowdown_.size(); ++g)
    if (compute_slowdown_[g] != 1.0) stage_slowed_[static_cast<std::size_t>(groups_.stage(static_cast<int>(g)))] = 1;
}

void IterationModel::note(Collective kind, double bytes) {
  if (!record_) return;
  CommKind k = CommKind::Unknown;
  switch (kind) {
    case Collective::AllReduce: k = CommKind::AllReduce; break;
    case Collective::AllGather: k = CommKind::AllGather; break;
    case Collective::ReduceScatter: k = CommKind::ReduceScatter; break;
    case Collective::Broadcast: k = CommKind::Broadcast; break;
  }
  programs_.note_comm(k, bytes);
}

IterationResult IterationModel::run(Engine& engine, TimeNs start_ns, const Placement& placement,
                                    const std::vector<LayerDispatch>& dispatch,
                                    const std::vector<Movement>& movements, const SyncPlan& sync) {
  std::vector<GroupDispatch> grouped(dispatch.size());
  for (std::size_t l = 0; l < dispatch.size(); ++l) grouped[l].push_back(dispatch[l]);
  return run(engine, start_ns, placement, grouped, movements, sync);
}

bool IterationModel::follows(const Placement& placement, const std::vector<GroupDispatch>& dispatch, std::size_t l,
                             std::size_t k) const {
  if (cross_layer_ == nullptr || l + 1 >= dispatch.size() || !dispatch[l][k].tokens_follow) return false;
  if (!cross_layer_->has(static_cast<int>(l)) || cross_layer_->experts != model_.experts) return false;
  if (placement.expert_of_slot.size() <= l + 1) return false;
  // Across a pipeline stage the tokens go home to be sent on with their activations.
  return groups_.stage_of_layer(moe_layer_ids_[l]) == groups_.stage_of_layer(moe_layer_ids_[l + 1]);
}

IterationResult IterationModel::run(Engine& engine, TimeNs start_ns, const Placement& placement,
                                    const std::vector<GroupDispatch>& dispatch,
                                    const std::vector<Movement>& movements, const SyncPlan& sync) {
  IterationResult res;
  res.start_ns = start_ns;
  const int P = groups_.stages(), V = layout_.virtual_stages, M = layout_.micro_batches;
  const int Gs = groups_.gpus_per_stage(), ep = layout_.expert;
  programs_.reset(gpus_, 0, two_lanes_ ? 2 : 1);
  for (int k = 0; k < 2 * M * P * V; ++k) (void)programs_.new_team_message();  // message_id's
  labels_.clear();
  label("wait for slower GPUs");  // label 0: the waits at collectives
  micro_sync_ = &sync;  // add_forward charges its per-micro-batch work
  micro_work_ns_.clear();
  const int S = placement.slots_per_gpu;
  const int slots = placement.num_slots();

  // Movements the policy decided after the previous iteration.
  if (!forward_only_) {
    std::vector<Transfer> blocking;
    for (const Movement& m : movements) {
      res.moved_bytes += m.transfer.bytes;
      if (m.blocking) blocking.push_back(m.transfer);
    }
    if (!blocking.empty()) {
      label("movements of the previous decision");
      std::vector<TimeNs> busy = network_.transfers(blocking);
      for (int st = 0; st < P; ++st) {
        const std::vector<TimeNs> stage_busy(busy.begin() + st * Gs, busy.begin() + (st + 1) * Gs);
        add_stage(st, Phase::Movement, stage_busy, 1);
      }
    }
  }

  // Per MoE layer and expert-parallel group, one micro-batch's all-to-alls and expert compute.
  // The combine all-to-all is the dispatch's transpose: on symmetric links every GPU's send and
  // receive volumes swap, so its time is that of the dispatch matrix at the combine's token size;
  // the backward pass repeats both (in the model dtype).
  if (cost_.size() < dispatch.size()) cost_.resize(dispatch.size());
  for (std::size_t l = 0; l < dispatch.size(); ++l) cost_[l].clear();
  // Exactly one entry per layer: add_forward and add_backward index it by MoE layer.
  if (cost_.size() > dispatch.size()) cost_.resize(dispatch.size());
  std::vector<LayerCost>& cost = cost_;
  double imbalance_sum = 0.0;
  int imbalance_n = 0;
  const double per_mb = 1.0 / M;
  const int chunks = overlap_.a2a_chunks;
  const int etp = layout_.expert_tensor;
  // Tokens per (expert-tensor-parallel group of the stage, slot): its GPUs compute them all, each
  // on its shard of the expert (the group's ep rank of every expert-parallel group it spans).
  std::vector<std::int64_t> etp_slot_tokens;
  for (std::size_t l = 0; l < dispatch.size(); ++l) {
    LayerCost& lc = cost[l];
    const int stage = groups_.stage_of_layer(moe_layer_ids_[l]);
    lc.expert_ns.assign(static_cast<std::size_t>(Gs), 0);
    if (chunks > 1) lc.expert_chunk_ns.assign(static_cast<std::size_t>(Gs), 0);
    etp_slot_tokens.assign(static_cast<std::size_t>(Gs / etp) * S, 0);
    for (std::size_t k = 0; k < dispatch[l].size(); ++k) {
      const LayerDispatch& d = dispatch[l][k];
      const std::vector<int> members = groups_.ep_group(stage, static_cast<int>(k));
      // Copies each pair of the group moves, once for every token size below: a count times an
      // integral token size below 2^53 is exact, so the bytes are those dispatch_byte_matrix
      // sums slot by slot, to the bit.
      std::vector<std::int64_t>& pair_copies = pair_copies_;
      pair_copies.assign(static_cast<std::size_t>(d.gpus) * d.gpus, 0);
      std::int64_t most_copies = 0;
      for (int src = 0; src < d.gpus; ++src) {
        // Slot sl is on GPU sl / S: runs of S slots, no division per slot.
        const std::int64_t* row = d.buffered.data() + static_cast<std::size_t>(src) * d.num_slots;
        std::int64_t* to = pair_copies.data() + static_cast<std::size_t>(src) * d.gpus;
        for (int sl0 = 0, dst = 0; sl0 < d.num_slots; sl0 += S, ++dst) {
          const int sl1 = std::min(sl0 + S, d.num_slots);
          const int at = d.exchange == ExchangeAlgorithm::none ? src : dst;  // none: stays on its source
          std::int64_t sum = to[at];
          for (int sl = sl0; sl < sl1; ++sl) sum += row[sl];
          to[at] = sum;
        }
      }
      std::int64_t least_copies = 0, sent_copies = 0;  // sent: off the diagonal
      for (int a = 0; a < d.gpus; ++a)
        for (int b2 = 0; b2 < d.gpus; ++b2) {
          const std::int64_t c = pair_copies[static_cast<std::size_t>(a) * d.gpus + b2];
          most_copies = std::max(most_copies, c);
          least_copies = std::min(least_copies, c);
          if (a != b2) sent_copies += c;
        }
      auto byte_matrix = [&](double token_bytes) {
        if (token_bytes != std::floor(token_bytes) || token_bytes < 0 ||
            static_cast<double>(most_copies) * token_bytes >= 9007199254740992.0)  // 2^53
          return dispatch_byte_matrix(d, S, token_bytes);
        std::vector<double> b(pair_copies.size());
        for (std::size_t i = 0; i < b.size(); ++i) b[i] = pair_copies[i] != 0 ? static_cast<double>(pair_copies[i]) * token_bytes : 0.0;
        return b;
      };
      // Bytes each pair of the group moves in one micro-batch's exchange at `token_bytes` per copy.
      std::vector<double> copies;
      if (dispatch_.hierarchical) {
        copies = byte_matrix(1.0);
        if (M > 1)
          for (double& x : copies) x *= per_mb;
      }
      auto exchange = [&](double token_bytes) {
        if (dispatch_.hierarchical)
          return hierarchical_exchange(copies, members, cluster_.spec().gpus_per_node, model_.top_k, token_bytes,
                                       dispatch_.max_nodes_per_token);
        std::vector<double> b = byte_matrix(token_bytes);
        if (M > 1)
          for (double& x : b) x *= per_mb;
        return b;
      };
      auto sent_of = [&](const std::vector<double>& b, double token_bytes) {
        // One micro-batch of whole copies, every partial sum an integer below 2^53: the sum of
        // the matrix below is exactly the copies' count times the token size, in any order.
        if (!dispatch_.hierarchical && M == 1 && d.gpus == ep && least_copies >= 0 &&
            token_bytes == std::floor(token_bytes) && token_bytes >= 0 &&
            static_cast<double>(std::max(most_copies, sent_copies)) * token_bytes < 9007199254740992.0)
          return static_cast<double>(sent_copies) * token_bytes;
        double sent = 0.0;
        for (int a = 0; a < ep; ++a)
          for (int b2 = 0; b2 < ep; ++b2)
            if (a != b2) sent += b[static_cast<std::size_t>(a) * ep + b2];
        return sent;
      };
      // The policy's exchange algorithm; the scenario's hierarchical route replaces flat and two_level.
      const ExchangeAlgorithm algo =
          dispatch_.hierarchical && d.exchange != ExchangeAlgorithm::none ? ExchangeAlgorithm::flat : d.exchange;
      const int gpn = cluster_.spec().gpus_per_node;
      const std::vector<double> bytes = exchange(combine_token_bytes_);
      lc.combine_ns.push_back(exchange_ns(network_, algo, bytes, members, gpn));
      lc.combine_bytes.push_back(sent_of(bytes, combine_token_bytes_));
      if (record_) lc.combine_peer_bytes.push_back(bytes);
      if (dispatch_token_bytes_ != combine_token_bytes_) {
        const std::vector<double> fp8 = exchange(dispatch_token_bytes_);
        lc.dispatch_ns.push_back(exchange_ns(network_, algo, fp8, members, gpn));
        lc.dispatch_bytes.push_back(sent_of(fp8, dispatch_token_bytes_));
        if (record_) lc.dispatch_peer_bytes.push_back(fp8);
      } else {
        lc.dispatch_ns.push_back(lc.combine_ns.back());
        lc.dispatch_bytes.push_back(lc.combine_bytes.back());
        if (record_) lc.dispatch_peer_bytes.push_back(bytes);
      }
      // Tokens that follow their experts (sim/cross_layer.hpp): this layer's combine carries
      // only the assignments that change GPU on the way to the next MoE layer's experts, and
      // the next layer's dispatch nothing (the tokens are there).
      std::vector<double> hop_bytes;
      lc.back_dispatch_ns.push_back(lc.combine_ns.back());
      lc.back_dispatch_bytes.push_back(lc.combine_bytes.back());
      if (record_) lc.back_dispatch_peer_bytes.push_back(lc.combine_peer_bytes.back());
      if (follows(placement, dispatch, l, k)) {
        hop_bytes = follow_hops(d, placement.expert_of_slot[l], dispatch[l + 1][k], placement.expert_of_slot[l + 1], S,
                                cross_layer_->weight[l], model_.experts);
        for (double& x : hop_bytes) x *= combine_token_bytes_ * per_mb;
        lc.combine_ns.back() = network_.all_to_all_v(hop_bytes, members);
        lc.combine_bytes.back() = sent_of(hop_bytes, -1.0);  // not whole copies: summed
        if (record_) lc.combine_peer_bytes.back() = hop_bytes;
      }
      const bool arrived = l > 0 && follows(placement, dispatch, l - 1, k);
      if (arrived) {
        lc.dispatch_ns.back() = lc.back_dispatch_ns.back() = 0;
        lc.dispatch_bytes.back() = lc.back_dispatch_bytes.back() = 0.0;
        if (record_) {
          lc.dispatch_peer_bytes.back().assign(lc.dispatch_peer_bytes.back().size(), 0.0);
          lc.back_dispatch_peer_bytes.back().assign(lc.back_dispatch_peer_bytes.back().size(), 0.0);
        }
      }
      if (chunks > 1) {
        // One chunk of the overlapped exchange moves 1/chunks of every pair's bytes.
        auto chunk_ns = [&](double token_bytes) {
          std::vector<double> b = exchange(token_bytes);
          for (double& x : b) x /= chunks;
          return exchange_ns(network_, algo, b, members, gpn);
        };
        lc.combine_chunk_ns.push_back(chunk_ns(combine_token_bytes_));
        lc.dispatch_chunk_ns.push_back(dispatch_token_bytes_ != combine_token_bytes_ ? chunk_ns(dispatch_token_bytes_)
                                                                                     : lc.combine_chunk_ns.back());
        lc.back_dispatch_chunk_ns.push_back(arrived ? 0 : lc.combine_chunk_ns.back());
        if (!hop_bytes.empty()) {
          for (double& x : hop_bytes) x /= chunks;
          lc.combine_chunk_ns.back() = network_.all_to_all_v(hop_bytes, members);
        }
        if (arrived) lc.dispatch_chunk_ns.back() = 0;
      }
      std::vector<std::int64_t>& slot_tokens = slot_tokens_;
      slot_tokens.assign(static_cast<std::size_t>(slots), 0);
      for (int src = 0; src < d.gpus; ++src)
        for (int sl = 0; sl < slots; ++sl)
          slot_tokens[d.exchange == ExchangeAlgorithm::none ? src * S : sl] += d.buffered[static_cast<std::size_t>(src) * slots + sl];
      // A model-parallel shard computes its part of the width on every token: fewer tokens' worth.
      if (d.compute_share != 1.0)
        for (std::int64_t& n : slot_tokens) n = static_cast<std::int64_t>(std::ceil(static_cast<double>(n) * d.compute_share));
      std::int64_t max_tokens = 0, sum_tokens = 0;
      for (int j = 0; j < ep; ++j) {
        std::int64_t gpu_tokens = 0;
        const int eg = (members[static_cast<std::size_t>(j)] - stage * Gs) / etp;
        for (int s = 0; s < S; ++s) {
          const std::int64_t n = slot_tokens[j * S + s];
          etp_slot_tokens[static_cast<std::size_t>(eg) * S + s] += n;
          gpu_tokens += n;
        }
        max_tokens = std::max(max_tokens, gpu_tokens);
        sum_tokens += gpu_tokens;
      }
      imbalance_sum += sum_tokens > 0 ? static_cast<double>(max_tokens) * ep / static_cast<double>(sum_tokens) : 1.0;
      ++imbalance_n;
      res.tokens_routed += d.routed;
      res.tokens_dropped += d.dropped;
    }
    const std::int64_t per_chunk = static_cast<std::int64_t>(M) * chunks;
    for (int i = 0; i < Gs; ++i) {
      const auto eg = static_cast<std::size_t>(i / etp);
      for (int s = 0; s < S; ++s) {
        const std::int64_t n = etp_slot_tokens[eg * S + s];
        lc.expert_ns[static_cast<std::size_t>(i)] += expert_fwd_memo(M > 1 ? (n + M - 1) / M : n);
        if (chunks > 1)
          lc.expert_chunk_ns[static_cast<std::size_t>(i)] +=
              on_fewer_sms(expert_fwd_memo((n + per_chunk - 1) / per_chunk), sms_, overlap_.dispatch_sms);
      }
    }
    if (etp > 1) {
      // Megatron-Core's alltoall dispatcher with expert tensor parallelism: the tokens an
      // expert-tensor-parallel group received are all-gathered in it before the experts and
      // their outputs reduce-scattered after (the backward pass mirrors both).
      for (int eg = 0; eg < Gs / etp; ++eg) {
        std::int64_t gathered = 0;
        for (int s = 0; s < S; ++s) gathered += etp_slot_tokens[static_cast<std::size_t>(eg) * S + s];
        const double bytes = static_cast<double>(gathered) * per_mb * combine_token_bytes_;
        const std::vector<int>& g = etp_groups_[static_cast<std::size_t>(stage * (Gs / etp) + eg)];
        lc.etp_bytes.push_back(bytes);
        lc.etp_ag_ns.push_back(collective_ns(Collective::AllGather, bytes, g));
        lc.etp_rs_ns.push_back(collective_ns(Collective::ReduceScatter, bytes, g));
        if (chunks > 1) {
          lc.etp_ag_chunk_ns.push_back(collective_ns(Collective::AllGather, bytes / chunks, g));
          lc.etp_rs_chunk_ns.push_back(collective_ns(Collective::ReduceScatter, bytes / chunks, g));
        }
      }
    }
  }
  res.expert_compute_imbalance = imbalance_n == 0 ? 1.0 : imbalance_sum / imbalance_n;
  res.survival = res.tokens_routed > 0
                     ? 1.0 - static_cast<double>(res.tokens_dropped) / static_cast<double>(res.tokens_routed)
                     : 1.0;

  // Forward and backward passes: every stage runs its micro-batches in the pipeline schedule's
  // order; stages meet only through the activation and gradient messages between them.
  for (int st = 0; st < P; ++st)
    for (const PipelineStep& step : pipeline_schedule(st, P, V, M)) {
      if (step.forward) add_forward(st, step.chunk, step.micro_batch, cost, res);
      else if (!forward_only_) add_backward(st, step.chunk, step.micro_batch, cost, res);
    }

  if (!forward_only_) add_sync(placement, sync, res);

  programs_.run(engine, start_ns);
  int crit = 0;
  for (int g = 1; g < gpus_; ++g)
    if (programs_.end_ns(g) > programs_.end_ns(crit)) crit = g;
  res.critical_gpu = crit;
  res.iteration_ns = programs_.end_ns(crit) - start_ns;
  res.phase_ns = programs_.busy(crit);
  for (Phase p : {Phase::AllToAll, Phase::GradSync, Phase::Wait, Phase::TpComm})
    res.exposed_comm_ns += res.phase_ns[static_cast<int>(p)];
  return res;
}

void IterationModel::add_sync(const Placement& placement, const SyncPlan& sync, IterationResult& res) {
  // Gradient synchronisation, in one global order on every GPU so that no two GPUs wait on each
  // other in opposite orders: the policy's collectives, every expert's replicas (on distinct
  // GPUs, in every expert-data-parallel copy of the group) all-reducing in (layer, expert) order,
  // gradient collection, then the dense parameters over each data-parallel group.
  auto add_ops = [&](const std::vector<CollectiveOp>& ops, Phase phase, OpTimes& times) {
    for (std::size_t i = 0; i < ops.size(); ++i) {
      const CollectiveOp& op = ops[i];
      if (op.gpus.size() < 2) continue;
      note(op.kind, op.bytes);
      programs_.add_collective(op.gpus, op_ns(times, i, op), phase);
      res.grad_sync_bytes += op.bytes;
    }
  };
  auto add_transfers = [&](const std::vector<Transfer>& ts, Phase phase) {
    if (ts.empty()) return;
    std::vector<TimeNs> busy = network_.transfers(ts);
    for (const Transfer& t : ts) res.grad_sync_bytes += t.bytes;
    if (record_) {
      // Point-to-point transfers all GPUs wait for: exported as one exchange of every GPU's share.
      double total = 0.0;
      for (const Transfer& t : ts) total += t.bytes;
      programs_.note_comm(CommKind::AllToAll, total / gpus_);
    }
    // A receiver cannot go on before its data arrived: all leave with the busiest GPU.
    programs_.add_collective(all_gpus_, *std::max_element(busy.begin(), busy.end()), phase);
  };
  const int S = placement.slots_per_gpu, slots = placement.num_slots();
  const int groups_per_stage = groups_.ep_groups_per_stage(), edp = groups_.edp_copies();
  const int etp = layout_.expert_tensor;
  label("policy collectives");
  add_ops(sync.pre_collectives, Phase::GradSync, op_times_[0]);
  label("policy decision");
  // The policy decides once the counts are known (after the popularity exchange, if any).
  for (int g = 0; g < static_cast<int>(sync.decision_ns.size()); ++g) add_local(g, Phase::Movement, sync.decision_ns[g]);
  label("expert gradient all-reduce among replicas");
  // With several expert-parallel groups a stage, each expert lives in every group (its
  // expert-data-parallel copies). The group plan's collectives over an expert's holders reach
  // all its copies (GroupPlanMap), but an expert that one GPU of a group holds has none: without
  // the replica all-reduce, its copies still all-reduce (unless the plan says copy_allreduce false).
  const bool copies_only = !sync.replica_allreduce && edp > 1 && sync.copy_allreduce;
  if (sync.replica_allreduce || copies_only) {
    std::set<std::vector<int>> covered;
    if (copies_only)
      for (const CollectiveOp& op : sync.grad_collectives) covered.insert(op.gpus);
    // Each GPU of an expert-tensor-parallel group holds 1/etp of the expert: its shard's
    // gradients reduce with the same shard's holders (the same etp rank) in every copy.
    const double expert_grad_bytes = model_.expert_params() * training_.grad_bytes_per_param / etp;
    std::vector<std::vector<int>> holders(static_cast<std::size_t>(model_.experts) * etp);
    if (replica_sync_.size() < placement.expert_of_slot.size())
      replica_sync_.resize(placement.expert_of_slot.size());
    for (std::size_t l = 0; l < placement.expert_of_slot.size(); ++l) {
      // The layer's all-reduces depend only on its slots: those of the last iteration that had the
      // same slots, while their times are still in the memo (so that no look-up is skipped that
      // would have reached the network).
      ReplicaSync& cached = replica_sync_[l];
      if (!copies_only && cached.memo_generation == memo_generation_ && cached.slots_per_gpu == S &&
          cached.layout == placement.expert_of_slot[l]) {
        for (const auto& [h, t] : cached.ops) {
          note(Collective::AllReduce, expert_grad_bytes);
          programs_.add_collective(h, t, Phase::GradSync);
          res.grad_sync_bytes += expert_grad_bytes;
        }
        continue;
      }
      // Recorded from the second iteration in a row on these slots: a layer whose slots change
      // every iteration costs a copy of its slots, not of its collectives.
      const bool repeated = cached.slots_per_gpu == S && cached.layout == placement.expert_of_slot[l];
      const bool keep = !copies_only && repeated;
      const std::uint64_t generation = memo_generation_;
      cached.memo_generation = kNoGeneration;
      cached.ops.clear();
      const int stage = groups_.stage_of_layer(moe_layer_ids_[l]);
      for (auto& h : holders) h.clear();
      for (int k = 0; k < groups_per_stage; ++k) {
        for (int sl = 0; sl < slots; ++sl) {
          const int e = placement.expert_of_slot[l][sl];
          if (e >= 0) holders[static_cast<std::size_t>(e) * etp + k % etp].push_back(groups_.ep_group_rank(stage, k, sl / S));
        }
      }
      for (auto& h : holders) {
        h.erase(std::unique(h.begin(), h.end()), h.end());  // slots are in GPU order, groups ascending
        if (h.size() < 2) continue;
        if (copies_only && static_cast<int>(h.size()) != edp) {
          // Several holders a group: covered when the plan reduces them together (GroupPlanMap
          // extends its collective to every copy); otherwise (gradients collected to an owner in
          // each group) the copies still combine, charged on each group's first holder.
          if (covered.count(h) != 0) continue;
          std::vector<int> firsts;
          for (int g : h)
            if (firsts.empty() || groups_.edp_rank(g) != groups_.edp_rank(firsts.back())) firsts.push_back(g);
          h = std::move(firsts);
          if (h.size() < 2) continue;
        }
        note(Collective::AllReduce, expert_grad_bytes);
        const TimeNs t = collective_ns(Collective::AllReduce, expert_grad_bytes, h);
        programs_.add_collective(h, t, Phase::GradSync);
        res.grad_sync_bytes += expert_grad_bytes;
        if (keep) cached.ops.emplace_back(h, t);
      }
      if (!repeated) {
        cached.layout = placement.expert_of_slot[l];
        cached.slots_per_gpu = S;
      } else if (keep && memo_generation_ == generation) {
        cached.memo_generation = generation;
      }
    }
  }
  label("expert gradient collectives");
  add_ops(sync.grad_collectives, Phase::GradSync, op_times_[1]);
  label("gradient collection to optimizer owners");
  add_transfers(sync.gradient_transfers, Phase::GradSync);
  // Dense gradients: all-reduced (ZeRO 0) or reduce-scattered to their optimizer shard (ZeRO 1, 2;
  // ZeRO 3 reduce-scatters each layer's in the backward pass, leaving the embedding).
  label(layout_.zero_stage == 0 ? "dense gradient all-reduce" : "dense gradient reduce-scatter");
  const int eb = dtype_bytes(model_.dtype);
  const double embedding_per_gpu = static_cast<double>(model_.vocab) * model_.hidden / layout_.tensor;
  auto wait_for_comm_lanes = [&] {
    for (int g = 0; g < gpus_; ++g) {
      const int m = programs_.new_message();
      programs_.add_send(comm_lane(g), m, 0);
      programs_.add_recv(g, m, Phase::GradSync);
    }
  };
  if (overlap_.grad_sync) {
    // The layers' buckets (ZeRO-3: reduce-scatters) are under way on the communication lanes; the
    // embedding's follows, and the optimizer waits for all of them.
    add_overlapped_grad_bucket(0, embedding_per_gpu, res);
    if (groups_.stages() > 1) add_overlapped_grad_bucket(groups_.stages() - 1, embedding_per_gpu, res);
    wait_for_comm_lanes();
  } else {
    // ZeRO-3's layer reduce-scatters run on the communication lanes: the optimizer waits for them.
    if (layout_.zero_stage == 3) wait_for_comm_lanes();
    for (const std::vector<int>& dp : dp_groups_) {
      if (dp.size() < 2) continue;
      const int stage = groups_.stage(dp.front());
      double params = stage_dense_params(stage);
      if (layout_.zero_stage == 3) params = (stage == 0 || stage == groups_.stages() - 1) ? embedding_per_gpu : 0.0;
      if (params <= 0.0) continue;
      const double bytes = params * training_.grad_bytes_per_param;
      const Collective kind = layout_.zero_stage == 0 ? Collective::AllReduce : Collective::ReduceScatter;
      note(kind, bytes);
      programs_.add_collective(dp, collective_ns(kind, bytes, dp), Phase::GradSync);
      res.grad_sync_bytes += bytes;
    }
  }

  // Optimizer step: dense parameters where training.optimizer_offload says (each GPU's 1/dp shard
  // with ZeRO >= 1), expert parameters where the sync plan says. A host's Adam serves all GPUs of
  // its node at once.
  label("optimizer step");
  const ClusterSpec& cs = cluster_.spec();
  const double shard = layout_.zero_stage >= 1 ? 1.0 / layout_.data : 1.0;
  std::vector<double> dense_opt(static_cast<std::size_t>(gpus_));
  for (int g = 0; g < gpus_; ++g) dense_opt[g] = stage_dense_params(groups_.stage(g)) * shard;
  std::vector<double> host_params(cs.nodes, 0.0);
  for (int n = 0; n < cs.nodes; ++n)
    host_params[n] = sync.host_optimizer_params.empty() ? 0.0 : sync.host_optimizer_params[n];
  if (training_.optimizer_offload) {
    if (layout_.is_default()) {
      for (int n = 0; n < cs.nodes; ++n) host_params[n] += dense_params_ * cs.gpus_per_node;
    } else {
      for (int g = 0; g < gpus_; ++g) host_params[cs.node_of(g)] += dense_opt[g];
    }
  }
  for (int g = 0; g < gpus_; ++g) {
    const auto at = [g](const std::vector<double>& v) { return v.empty() ? 0.0 : v[g]; };
    double gpu_params = at(sync.gpu_optimizer_params);
    double down = at(sync.d2h_bytes), up = at(sync.h2d_bytes);
    if (training_.optimizer_offload) {
      down += dense_opt[g] * training_.grad_bytes_per_param;
      up += dense_opt[g] * eb;
    } else {
      gpu_params += dense_opt[g];
    }
    const double hp = host_params[cs.node_of(g)];
    TimeNs t = compute_.memory_ns(gpu_params * training_.adam_hbm_bytes_per_param);
    if (hp > 0.0 || down > 0.0 || up > 0.0) {
      t += transfer_ns(down, cs.pcie_gbps) +
           static_cast<TimeNs>(std::ceil(hp / training_.host_adam_params_per_s * kNsPerS)) +
           transfer_ns(up, cs.pcie_gbps);
    }
    add_local(g, Phase::Optimizer, t);
  }
  if (layout_.zero_stage == 1 || layout_.zero_stage == 2) {
    label("dense parameter all-gather (ZeRO)");
    for (const std::vector<int>& dp : dp_groups_) {
      if (dp.size() < 2) continue;
      const double bytes = stage_dense_params(groups_.stage(dp.front())) * eb;
      note(Collective::AllGather, bytes);
      programs_.add_collective(dp, collective_ns(Collective::AllGather, bytes, dp), Phase::GradSync);
      res.grad_sync_bytes += bytes;
    }
  }
  label("updated weights: collectives");
  add_ops(sync.post_collectives, Phase::GradSync, op_times_[2]);
  label("updated weights sent to the next placement");
  add_transfers(sync.weight_transfers, Phase::GradSync);
}

}  // namespace moesim
