// The forward and backward passes of one micro-batch through one model chunk of one pipeline
// stage, as operations on the programs of the stage's GPUs (IterationModel::run orders them).
#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include "sim/iteration.hpp"

namespace moesim {

namespace {
// The backward pass of a GEMM computes two GEMMs of the same size (input and weight gradients).
constexpr TimeNs kBackwardFactor = 2;
}  // namespace

void IterationModel::init_pipeline() {
  const int P = groups_.stages(), Gs = groups_.gpus_per_stage();
  p2p_next_ns_.assign(static_cast<std::size_t>(P), 0);
  p2p_prev_ns_.assign(static_cast<std::size_t>(P), 0);
  if (P == 1) return;
  // One micro-batch's activations (or their gradients) at the stage boundary; with sequence
  // parallelism each tensor-parallel rank sends its 1/tp share.
  const double bytes = static_cast<double>(model_.tokens_per_gpu()) * model_.hidden * dtype_bytes(model_.dtype) /
                       layout_.tensor;
  p2p_bytes_ = bytes;
  // Every rank of a stage sends to the same rank of the next: the same route shape on the
  // symmetric shapes moesim builds, so the stage's first rank stands for all.
  auto one = [&](int src, int dst) {
    std::vector<TimeNs> busy = network_.transfers({Transfer{{false, src}, {false, dst}, bytes}});
    return *std::max_element(busy.begin(), busy.end());
  };
  for (int s = 0; s < P; ++s) {
    p2p_next_ns_[static_cast<std::size_t>(s)] = one(s * Gs, ((s + 1) % P) * Gs);
    p2p_prev_ns_[static_cast<std::size_t>(s)] = one(s * Gs, ((s + P - 1) % P) * Gs);
  }
}

int IterationModel::message_id(bool forward, int micro_batch, int virtual_stage) const {
  const int PV = groups_.stages() * layout_.virtual_stages;
  return ((forward ? 0 : 1) * layout_.micro_batches + micro_batch) * PV + virtual_stage;
}

void IterationModel::init_teams() {
  programs_.clear_teams();
  const int P = groups_.stages(), Gs = groups_.gpus_per_stage();
  // A partition of the stage's GPUs, as indices among them.
  auto partition = [&](int st, const std::vector<std::vector<int>>& groups, std::size_t min_size) {
    std::vector<std::vector<int>> local;
    for (const std::vector<int>& g : groups) {
      if (g.empty() || groups_.stage(g.front()) != st || g.size() < min_size) continue;
      std::vector<int> m;
      for (int gpu : g) m.push_back(gpu - st * Gs);
      std::sort(m.begin(), m.end());
      local.push_back(std::move(m));
    }
    return programs_.add_partition(std::move(local));
  };
  for (int st = 0; st < P; ++st) {
    std::vector<int> lanes(static_cast<std::size_t>(Gs));
    std::iota(lanes.begin(), lanes.end(), st * Gs);
    stage_team_.push_back(programs_.add_team(lanes));
    if (two_lanes_) {
      for (int& l : lanes) l = comm_lane(l);
      comm_team_.push_back(programs_.add_team(lanes));
    } else {
      comm_team_.push_back(-1);
    }
    std::vector<std::vector<int>> ep;
    for (int k = 0; k < groups_.ep_groups_per_stage(); ++k) ep.push_back(groups_.ep_group(st, k));
    ep_part_.push_back(partition(st, ep, 1));
    tp_part_.push_back(partition(st, tp_groups_, 1));
    dp_part_.push_back(partition(st, dp_groups_, 2));
    etp_part_.push_back(partition(st, etp_groups_, 1));
  }
}

void IterationModel::add_tp_block(int stage, bool before, IterationResult& res) {
  if (layout_.tensor < 2) return;
  // Megatron-Core: with sequence parallelism a block all-gathers the sequence before and
  // reduce-scatters after; without it, the block's output is all-reduced.
  Collective kind;
  if (layout_.sequence_parallel) kind = before ? Collective::AllGather : Collective::ReduceScatter;
  else if (!before) kind = Collective::AllReduce;
  else return;
  const double bytes = static_cast<double>(model_.tokens_per_gpu()) * model_.hidden * dtype_bytes(model_.dtype);
  // The same groups and bytes every block: their times once.
  tp_block_ns_.resize(static_cast<std::size_t>(groups_.stages()) * 3);
  std::vector<TimeNs>& ns = tp_block_ns_[static_cast<std::size_t>(stage) * 3 + static_cast<std::size_t>(kind == Collective::AllGather ? 0 : kind == Collective::ReduceScatter ? 1 : 2)];
  if (ns.empty()) {
    const int per_stage = groups_.gpus_per_stage() / layout_.tensor;
    for (int i = 0; i < per_stage; ++i) {
      const std::vector<int>& g = tp_groups_[static_cast<std::size_t>(stage * per_stage + i)];
      ns.push_back(collective_ns(kind, bytes, g));
    }
  }
  note(kind, bytes);
  programs_.team_collective(stage_team_[static_cast<std::size_t>(stage)], tp_part_[static_cast<std::size_t>(stage)], ns,
                            Phase::TpComm);
  res.tp_bytes += bytes;
}

void IterationModel::add_zero3(int stage, int layer, Collective kind, IterationResult& res) {
  const double params = layer_dense_params(model_, layer) / layout_.tensor;
  const double bytes = params * (kind == Collective::AllGather ? dtype_bytes(model_.dtype) : training_.grad_bytes_per_param);
  const int Gs = groups_.gpus_per_stage(), per_stage = Gs / layout_.data;
  const auto st = static_cast<std::size_t>(stage);
  // The communication lane starts when the compute lane gets here (DeepSpeed's stage-3
  // prefetch of the next layer during this one; its reduce-scatter once the backward is done).
  const int m = programs_.new_team_message();
  programs_.team_send(stage_team_[st], m, 0);
  programs_.team_recv(comm_team_[st], m, Phase::Wait);
  std::vector<TimeNs> ns;
  for (int i = 0; i < per_stage; ++i) {
    const std::vector<int>& g = dp_groups_[static_cast<std::size_t>(stage * per_stage + i)];
    if (g.size() < 2) continue;
    ns.push_back(collective_ns(kind, bytes, g));
    res.grad_sync_bytes += bytes;
  }
  note(kind, bytes);
  programs_.team_collective(comm_team_[st], dp_part_[st], ns, Phase::GradSync);
  if (kind != Collective::AllGather) return;
  zero3_done_ = programs_.new_team_message();
  programs_.team_send(comm_team_[st], zero3_done_, 0);
}

void IterationModel::zero3_wait(int stage) {
  programs_.team_recv(stage_team_[static_cast<std::size_t>(stage)], zero3_done_, Phase::GradSync);
}

namespace {
std::vector<double> chunk_bytes(std::vector<double> bytes, int chunks) {
  for (double& b : bytes) b /= chunks;
  return bytes;
}

std::string layer_label(const char* what, int layer, int micro_batch, int micro_batches) {
  if (micro_batches == 1) return fmt::format("{} (layer {})", what, layer);
  return fmt::format("{} (layer {}, micro-batch {})", what, layer, micro_batch);
}
}  // namespace

void IterationModel::add_all_to_all(int stage, const std::vector<TimeNs>& ns, const std::vector<double>& bytes,
                                    IterationResult& res, int lane_offset, double share,
                                    const std::vector<std::vector<double>>* peer_bytes) {
  const auto st = static_cast<std::size_t>(stage);
  if (record_) {
    // Each group's pairs (graph() makes each member's payload the sum of what it sends).
    std::vector<std::vector<double>> pairs = peer_bytes != nullptr ? *peer_bytes : std::vector<std::vector<double>>{};
    if (share != 1.0)
      for (auto& m : pairs)
        for (double& x : m) x *= share;
    std::vector<double> totals(bytes);
    for (double& x : totals) x *= share;
    programs_.note_comm(CommKind::AllToAll, totals, pairs);
  }
  programs_.team_collective(lane_offset == 0 ? stage_team_[st] : comm_team_[st], ep_part_[st], ns, Phase::AllToAll);
  for (std::size_t k = 0; k < ns.size(); ++k) res.a2a_bytes += share == 1.0 ? bytes[k] : bytes[k] * share;
}

void IterationModel::add_etp(int stage, const LayerCost& lc, bool gather, IterationResult& res) {
  if (layout_.expert_tensor < 2) return;
  const std::vector<TimeNs>& ns = gather ? lc.etp_ag_ns : lc.etp_rs_ns;
  if (record_) programs_.note_comm(gather ? CommKind::AllGather : CommKind::ReduceScatter, lc.etp_bytes);
  programs_.team_collective(stage_team_[static_cast<std::size_t>(stage)], etp_part_[static_cast<std::size_t>(stage)], ns,
                            Phase::TpComm);
  for (double b : lc.etp_bytes) res.tp_bytes += b;
}

void IterationModel::add_moe_block(int st, int layer, int mb, const LayerCost& lc, bool forward, IterationResult& res) {
  const int Gs = groups_.gpus_per_stage(), M = layout_.micro_batches;
  const TimeNs factor = forward ? 1 : kBackwardFactor;
  const int team = stage_team_[static_cast<std::size_t>(st)], comm = comm_team_[static_cast<std::size_t>(st)];
  // The backward all-to-alls carry gradients in the model dtype, combine's first.
  const std::vector<TimeNs>& first_ns = forward ? lc.dispatch_ns : lc.combine_ns;
  const std::vector<double>& first_bytes = forward ? lc.dispatch_bytes : lc.combine_bytes;
  const auto* first_pairs = forward ? &lc.dispatch_peer_bytes : &lc.combine_peer_bytes;
  const char* first = forward ? "forward dispatch all-to-all" : "backward combine all-to-all";
  const char* experts = forward ? "forward experts" : "backward experts";
  const char* second = forward ? "forward combine all-to-all" : "backward dispatch all-to-all";
  auto tag = [&](const char* what) {
    if (record_) label(layer_label(what, layer, mb, M));
  };
  const int n = overlap_.a2a_chunks;
  if (n == 1) {
    tag(first);
    add_all_to_all(st, first_ns, first_bytes, res, 0, 1.0, first_pairs);
    tag(experts);
    add_etp(st, lc, true, res);
    add_stage(st, Phase::Compute, lc.expert_ns, factor);
    add_etp(st, lc, false, res);
    tag(second);
    if (forward) add_all_to_all(st, lc.combine_ns, lc.combine_bytes, res, 0, 1.0, &lc.combine_peer_bytes);
    else add_all_to_all(st, lc.back_dispatch_ns, lc.back_dispatch_bytes, res, 0, 1.0, &lc.back_dispatch_peer_bytes);
    return;
  }
  // Chunked: the communication lane runs D0, then D(c) and C(c - 1) alternately, then the last
  // C; the compute lane runs the experts of chunk c once D(c) is done. Messages cost nothing.
  const std::vector<TimeNs>& first_chunk = forward ? lc.dispatch_chunk_ns : lc.combine_chunk_ns;
  const double share = 1.0 / n;
  const int start = programs_.new_team_message(), done = programs_.new_team_message();
  std::vector<int> dispatched, computed;
  for (int c = 0; c < n; ++c) {
    dispatched.push_back(programs_.new_team_message());
    computed.push_back(programs_.new_team_message());
  }
  programs_.team_send(team, start, 0);
  programs_.team_recv(comm, start, Phase::Wait);
  auto first_a2a = [&](int c) {
    tag(first);
    add_all_to_all(st, first_chunk, first_bytes, res, gpus_, share, first_pairs);
    programs_.team_send(comm, dispatched[static_cast<std::size_t>(c)], 0);
  };
  auto second_a2a = [&](int c) {
    programs_.team_recv(comm, computed[static_cast<std::size_t>(c)], Phase::Wait);
    tag(second);
    if (forward) add_all_to_all(st, lc.combine_chunk_ns, lc.combine_bytes, res, gpus_, share, &lc.combine_peer_bytes);
    else
      add_all_to_all(st, lc.back_dispatch_chunk_ns, lc.back_dispatch_bytes, res, gpus_, share,
                     &lc.back_dispatch_peer_bytes);
  };
  first_a2a(0);
  for (int c = 1; c < n; ++c) {
    first_a2a(c);
    second_a2a(c - 1);
  }
  second_a2a(n - 1);
  programs_.team_send(comm, done, 0);
  tag(experts);
  // Each expert-tensor-parallel group (one GPU when expert_tensor is 1) takes its chunks in
  // order: gather the chunk's tokens, compute, reduce-scatter, hand the chunk back.
  const int etp = layout_.expert_tensor;
  const int etp_part = etp_part_[static_cast<std::size_t>(st)];
  for (int c = 0; c < n; ++c) {
    programs_.team_recv(team, dispatched[static_cast<std::size_t>(c)], Phase::AllToAll);
    if (etp > 1 && record_) programs_.note_comm(CommKind::AllGather, chunk_bytes(lc.etp_bytes, n));
    if (etp > 1) programs_.team_collective(team, etp_part, lc.etp_ag_chunk_ns, Phase::TpComm);
    add_stage(st, Phase::Compute, lc.expert_chunk_ns, factor);
    if (etp > 1 && record_) programs_.note_comm(CommKind::ReduceScatter, chunk_bytes(lc.etp_bytes, n));
    if (etp > 1) programs_.team_collective(team, etp_part, lc.etp_rs_chunk_ns, Phase::TpComm);
    programs_.team_send(team, computed[static_cast<std::size_t>(c)], 0);
  }
  if (etp > 1)
    for (int g = 0; g < Gs; g += etp)
      for (int c = 0; c < n; ++c) res.tp_bytes += 2.0 * lc.etp_bytes[static_cast<std::size_t>(g / etp)] / n;
  tag(second);
  programs_.team_recv(team, done, Phase::AllToAll);
}

void IterationModel::add_overlapped_grad_bucket(int st, double params, IterationResult& res) {
  if (params <= 0.0 || layout_.data < 2) return;
  const double bytes = params * training_.grad_bytes_per_param;
  const Collective kind = layout_.zero_stage == 0 ? Collective::AllReduce : Collective::ReduceScatter;
  const int per_stage = groups_.gpus_per_stage() / layout_.data;
  const auto s = static_cast<std::size_t>(st);
  const int m = programs_.new_team_message();
  programs_.team_send(stage_team_[s], m, 0);
  programs_.team_recv(comm_team_[s], m, Phase::Wait);
  std::vector<TimeNs> ns;
  for (int i = 0; i < per_stage; ++i) {
    const std::vector<int>& g = dp_groups_[static_cast<std::size_t>(st * per_stage + i)];
    ns.push_back(collective_ns(kind, bytes, g));
    res.grad_sync_bytes += bytes;
  }
  note(kind, bytes);
  programs_.team_collective(comm_team_[s], dp_part_[s], ns, Phase::GradSync);
}

void IterationModel::add_micro_batch_work(int st, int moe_layer, IterationResult& res) {
  if (micro_sync_ == nullptr) return;
  const SyncPlan& sync = *micro_sync_;
  const auto l = static_cast<std::size_t>(moe_layer);
  const auto at = [l](const auto& v) { return l < v.size() ? &v[l] : nullptr; };
  const auto* ops = at(sync.micro_batch_collectives);
  const auto* decision = at(sync.micro_batch_decision_ns);
  const auto* moves = at(sync.micro_batch_transfers);
  if ((ops == nullptr || ops->empty()) && (decision == nullptr || decision->empty()) &&
      (moves == nullptr || moves->empty()))
    return;
  if (record_) label(fmt::format("policy work before MoE layer {}'s dispatch", moe_layer_ids_[l]));
  if (ops != nullptr)
    for (const CollectiveOp& op : *ops) {
      if (op.gpus.size() < 2) continue;
      note(op.kind, op.bytes);
      programs_.add_collective(op.gpus, collective_ns(op.kind, op.bytes, op.gpus), Phase::Movement);
      res.moved_bytes += op.bytes;
    }
  // The same decision and transfers in every micro-batch: their time per GPU once an iteration.
  if (micro_work_ns_.size() <= l) micro_work_ns_.resize(moe_layer_ids_.size());
  std::vector<TimeNs>& work = micro_work_ns_[l];
  if (work.empty()) {
    work.assign(static_cast<std::size_t>(gpus_), 0);
    if (moves != nullptr && !moves->empty()) work = network_.transfers(*moves);
    if (decision != nullptr)
      for (std::size_t g = 0; g < decision->size() && g < work.size(); ++g) work[g] += (*decision)[g];
  }
  if (moves != nullptr)
    for (const Transfer& t : *moves) res.moved_bytes += t.bytes;
  const int Gs = groups_.gpus_per_stage();
  const std::vector<TimeNs> stage_work(work.begin() + static_cast<std::ptrdiff_t>(st) * Gs,
                                       work.begin() + static_cast<std::ptrdiff_t>(st + 1) * Gs);
  add_stage(st, Phase::Movement, stage_work, 1);
}

void IterationModel::add_forward(int st, int chunk, int mb, const std::vector<LayerCost>& cost, IterationResult& res) {
  const int P = groups_.stages(), M = layout_.micro_batches;
  const int vs = chunk * P + st, last = P * layout_.virtual_stages - 1;
  const int team = stage_team_[static_cast<std::size_t>(st)];
  auto tag = [&](const char* what, int layer) {
    if (record_) label(layer_label(what, layer, mb, M));
  };
  const int first = groups_.first_layer(st, chunk), end = first + groups_.chunk_layers(st, chunk);
  const bool zero3 = layout_.zero_stage == 3;
  if (zero3) {
    // Gathered while the activations are on their way.
    tag("ZeRO-3 parameter all-gather", first);
    add_zero3(st, first, Collective::AllGather, res);
  }
  if (vs > 0) {
    if (record_) label(fmt::format("pipeline: wait for activations (micro-batch {})", mb));
    programs_.team_recv(team, message_id(true, mb, vs));
  }
  for (int layer = first; layer < end; ++layer) {
    if (zero3) {
      // This layer's parameters must be here; the next layer's gather runs during it.
      zero3_wait(st);
      if (layer + 1 < end) {
        tag("ZeRO-3 parameter all-gather (prefetch)", layer + 1);
        add_zero3(st, layer + 1, Collective::AllGather, res);
      }
    }
    add_layer_overhead(st);
    tag("forward attention", layer);
    add_tp_block(st, true, res);
    add_stage(st, Phase::Compute, attention_fwd_ns_);
    add_tp_block(st, false, res);
    if (!model_.is_moe_layer(layer)) {
      tag("forward dense FFN", layer);
      add_tp_block(st, true, res);
      add_stage(st, Phase::Compute, dense_ffn_fwd_ns_);
      add_tp_block(st, false, res);
      continue;
    }
    const LayerCost& lc = cost[static_cast<std::size_t>(moe_index_[static_cast<std::size_t>(layer)])];
    tag("forward gate and shared experts", layer);
    add_stage(st, Phase::Compute, gate_fwd_ns_ + shared_expert_fwd_ns_);
    add_micro_batch_work(st, moe_index_[static_cast<std::size_t>(layer)], res);
    add_moe_block(st, layer, mb, lc, true, res);
  }
  if (vs == last) {
    label(M == 1 ? std::string("forward LM head") : fmt::format("forward LM head (micro-batch {})", mb));
    add_stage(st, Phase::Compute, lm_head_fwd_ns_);
  } else {
    if (record_) label(fmt::format("pipeline: send activations (micro-batch {})", mb));
    if (record_) programs_.note_comm(CommKind::PointToPoint, p2p_bytes_);
    programs_.team_send(team, message_id(true, mb, vs + 1), p2p_next_ns_[static_cast<std::size_t>(st)]);
  }
}

void IterationModel::add_backward(int st, int chunk, int mb, const std::vector<LayerCost>& cost, IterationResult& res) {
  const int P = groups_.stages(), M = layout_.micro_batches;
  const int vs = chunk * P + st, last = P * layout_.virtual_stages - 1;
  const int team = stage_team_[static_cast<std::size_t>(st)];
  auto tag = [&](const char* what, int layer) {
    if (record_) label(layer_label(what, layer, mb, M));
  };
  const int first = groups_.first_layer(st, chunk), last_layer = first + groups_.chunk_layers(st, chunk) - 1;
  const bool zero3 = layout_.zero_stage == 3;
  if (zero3) {
    // Gathered while the gradients are on their way (or the LM head's backward runs).
    tag("ZeRO-3 parameter all-gather", last_layer);
    add_zero3(st, last_layer, Collective::AllGather, res);
  }
  if (vs < last) {
    if (record_) label(fmt::format("pipeline: wait for gradients (micro-batch {})", mb));
    programs_.team_recv(team, message_id(false, mb, vs));
  } else {
    label(M == 1 ? std::string("backward LM head") : fmt::format("backward LM head (micro-batch {})", mb));
    add_stage(st, Phase::Compute, kBackwardFactor * lm_head_fwd_ns_);
  }
  for (int layer = last_layer; layer >= first; --layer) {
    if (zero3) {
      zero3_wait(st);
      if (layer > first) {
        tag("ZeRO-3 parameter all-gather (prefetch)", layer - 1);
        add_zero3(st, layer - 1, Collective::AllGather, res);
      }
    }
    add_layer_overhead(st);
    if (!model_.is_moe_layer(layer)) {
      tag("backward dense FFN", layer);
      add_tp_block(st, true, res);
      add_stage(st, Phase::Compute, kBackwardFactor * dense_ffn_fwd_ns_);
      add_tp_block(st, false, res);
    } else {
      const LayerCost& lc = cost[static_cast<std::size_t>(moe_index_[static_cast<std::size_t>(layer)])];
      add_moe_block(st, layer, mb, lc, false, res);
      tag("backward gate and shared experts", layer);
      add_stage(st, Phase::Compute, kBackwardFactor * (gate_fwd_ns_ + shared_expert_fwd_ns_));
    }
    tag("backward attention", layer);
    add_tp_block(st, true, res);
    add_stage(st, Phase::Compute, kBackwardFactor * attention_fwd_ns_);
    add_tp_block(st, false, res);
    if (zero3) {
      tag("ZeRO-3 gradient reduce-scatter", layer);
      add_zero3(st, layer, Collective::ReduceScatter, res);
    } else if (overlap_.grad_sync && mb == M - 1) {
      // The layer's last backward: its gradients are final and start their reduction.
      tag("dense gradient bucket (overlapped)", layer);
      add_overlapped_grad_bucket(st, layer_dense_params(model_, layer) / layout_.tensor, res);
    }
  }
  if (vs > 0) {
    if (record_) label(fmt::format("pipeline: send gradients (micro-batch {})", mb));
    if (record_) programs_.note_comm(CommKind::PointToPoint, p2p_bytes_);
    programs_.team_send(team, message_id(false, mb, vs - 1), p2p_prev_ns_[static_cast<std::size_t>(st)]);
  }
}

}  // namespace moesim
