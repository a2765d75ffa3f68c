#include "sim/iteration.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <map>
#include <numeric>
#include <set>
#include <tuple>

namespace moesim {

const char* to_string(Phase p) {
  switch (p) {
    case Phase::Compute: return "compute";
    case Phase::AllToAll: return "a2a";
    case Phase::GradSync: return "grad_sync";
    case Phase::Optimizer: return "optimizer";
    case Phase::Movement: return "movement";
    case Phase::Wait: return "wait";
  }
  return "?";
}

namespace {
// The backward pass of a GEMM computes two GEMMs of the same size (input and weight gradients).
constexpr TimeNs kBackwardFactor = 2;
}  // namespace

std::vector<double> dispatch_byte_matrix(const LayerDispatch& d, int slots_per_gpu, double token_bytes) {
  const int g = d.gpus;
  std::vector<double> bytes(static_cast<std::size_t>(g) * g, 0.0);
  for (int src = 0; src < g; ++src)
    for (int sl = 0; sl < d.num_slots; ++sl) {
      const std::int64_t n = d.buffered[static_cast<std::size_t>(src) * d.num_slots + sl];
      if (n != 0) bytes[static_cast<std::size_t>(src) * g + sl / slots_per_gpu] += static_cast<double>(n) * token_bytes;
    }
  return bytes;
}

IterationModel::IterationModel(const Cluster& cluster, const MoeModelSpec& model,
                               const TrainingSpec& training, const ComputeModel& compute,
                               const NetworkModel& network)
    : cluster_(cluster), model_(model), training_(training), compute_(compute), network_(network),
      gpus_(cluster.num_gpus()) {
  all_gpus_.resize(gpus_);
  std::iota(all_gpus_.begin(), all_gpus_.end(), 0);
  const double t = static_cast<double>(model.tokens_per_gpu());
  const double h = model.hidden, b = model.micro_batch_per_gpu, s = model.seq_len;
  const double qkv = static_cast<double>(model.heads + 2 * model.kv_heads) * model.head_dim;
  const double attn_width = static_cast<double>(model.heads) * model.head_dim;
  const int eb = dtype_bytes(model.dtype);
  // Projections plus the two batched attention GEMMs (scores and weighted values), per head.
  attention_fwd_ns_ = compute.gemm_ns(t, qkv, h, eb) +
                      compute.gemm_ns(b * model.heads * s, s, model.head_dim, eb) +
                      compute.gemm_ns(b * model.heads * s, model.head_dim, s, eb) +
                      compute.gemm_ns(t, h, attn_width, eb);
  dense_ffn_fwd_ns_ = (model.ffn_matrices - 1) * compute.gemm_ns(t, model.ffn_hidden, h, eb) +
                      compute.gemm_ns(t, h, model.ffn_hidden, eb);
  gate_fwd_ns_ = compute.gemm_ns(t, model.experts, h, eb);
  shared_expert_fwd_ns_ = model.shared_experts * expert_fwd_ns(model.tokens_per_gpu());
  lm_head_fwd_ns_ = compute.gemm_ns(t, model.vocab, h, eb);
  dense_params_ = model.dense_params_total();
  dense_grad_sync_ns_ =
      network.collective(Collective::AllReduce, dense_params_ * training.grad_bytes_per_param, all_gpus_).time_ns;
}

TimeNs IterationModel::expert_fwd_ns(std::int64_t tokens) const {
  if (tokens <= 0) return 0;
  const double n = static_cast<double>(tokens);
  const int eb = dtype_bytes(model_.dtype);
  return (model_.ffn_matrices - 1) * compute_.gemm_ns(n, model_.expert_ffn_hidden, model_.hidden, eb) +
         compute_.gemm_ns(n, model_.hidden, model_.expert_ffn_hidden, eb);
}

int IterationModel::add_collective(const std::vector<int>& members, TimeNs duration, Phase phase) {
  const int id = static_cast<int>(collectives_.size());
  collectives_.push_back(CollectiveState{static_cast<int>(members.size()), duration, phase, 0});
  collective_waiters_.emplace_back();
  for (int g : members) program_[g].push_back(Op{phase, duration, id, cur_label_});
  return id;
}

void IterationModel::add_local(int gpu, Phase phase, TimeNs duration) {
  if (duration <= 0) return;
  // A slow GPU (heterogeneous or straggling) stretches its own kernels, nothing else.
  if (phase == Phase::Compute && !compute_slowdown_.empty() && compute_slowdown_[gpu] != 1.0) {
    duration = static_cast<TimeNs>(std::ceil(static_cast<double>(duration) * compute_slowdown_[gpu]));
  }
  program_[gpu].push_back(Op{phase, duration, -1, cur_label_});
}

void IterationModel::label(const char* what, int layer) {
  if (!record_) return;
  labels_.push_back(layer >= 0 ? fmt::format("{} (layer {})", what, layer) : std::string(what));
  cur_label_ = static_cast<int>(labels_.size()) - 1;
}

void IterationModel::set_compute_slowdown(std::vector<double> factors) {
  if (!factors.empty() && static_cast<int>(factors.size()) != gpus_) {
    throw std::logic_error("IterationModel: one compute slowdown factor per GPU");
  }
  compute_slowdown_ = std::move(factors);
}

void IterationModel::add_all(Phase phase, TimeNs duration) {
  for (int g = 0; g < gpus_; ++g) add_local(g, phase, duration);
}

void IterationModel::add_all_to_all(TimeNs duration, double bytes, double& total_bytes) {
  total_bytes += bytes;
  add_collective(all_gpus_, duration, Phase::AllToAll);
}

void IterationModel::step(Engine& engine, int gpu) {
  if (pc_[gpu] == program_[gpu].size()) {
    end_[gpu] = engine.now();
    return;
  }
  // A run of local operations needs no event between them: nothing else can touch this GPU
  // until it reaches its next collective.
  const std::vector<Op>& prog = program_[gpu];
  if (prog[pc_[gpu]].collective < 0) {
    TimeNs run = 0;
    while (pc_[gpu] < prog.size() && prog[pc_[gpu]].collective < 0) {
      const Op& op = prog[pc_[gpu]++];
      busy_[gpu][static_cast<int>(op.phase)] += op.duration_ns;
      if (record_) {
        spans_.push_back(Span{gpu, op.phase == Phase::Movement, op.label, engine.now() + run, op.duration_ns});
      }
      run += op.duration_ns;
    }
    engine.schedule_in(run, [this, gpu](Engine& e) { step(e, gpu); });
    return;
  }
  const Op& op = prog[pc_[gpu]++];
  CollectiveState& c = collectives_[op.collective];
  arrival_[gpu] = engine.now();
  collective_waiters_[op.collective].push_back(gpu);
  if (++c.arrived < c.members) return;
  // The last member has arrived (events run in time order, so now is the latest arrival).
  for (int w : collective_waiters_[op.collective]) {
    busy_[w][static_cast<int>(Phase::Wait)] += engine.now() - arrival_[w];
    busy_[w][static_cast<int>(c.phase)] += c.duration_ns;
    if (record_) {
      if (engine.now() > arrival_[w]) spans_.push_back(Span{w, true, 0, arrival_[w], engine.now() - arrival_[w]});
      spans_.push_back(Span{w, true, op.label, engine.now(), c.duration_ns});
    }
  }
  // All members leave together: one event resumes them in arrival order.
  const int id = op.collective;
  engine.schedule_in(c.duration_ns, [this, id](Engine& e) {
    for (int w : collective_waiters_[id]) step(e, w);
  });
}

IterationResult IterationModel::run(Engine& engine, TimeNs start_ns, const Placement& placement,
                                    const std::vector<LayerDispatch>& dispatch,
                                    const std::vector<Movement>& movements, const SyncPlan& sync) {
  IterationResult res;
  res.start_ns = start_ns;
  program_.assign(gpus_, {});
  collectives_.clear();
  collective_waiters_.clear();
  spans_.clear();
  labels_.clear();
  cur_label_ = 0;
  label("wait for slower GPUs");  // label 0: the waits at collectives
  const int slots = placement.num_slots();
  const int S = placement.slots_per_gpu;
  const double token_bytes = static_cast<double>(model_.hidden) * dtype_bytes(model_.dtype);

  // Movements the policy decided after the previous iteration.
  {
    std::vector<Transfer> blocking;
    for (const Movement& m : movements) {
      res.moved_bytes += m.transfer.bytes;
      if (m.blocking) blocking.push_back(m.transfer);
    }
    if (!blocking.empty()) {
      label("movements of the previous decision");
      std::vector<TimeNs> busy = network_.transfers(blocking);
      for (int g = 0; g < gpus_; ++g) add_local(g, Phase::Movement, busy[g]);
    }
  }

  // Per MoE layer: the all-to-all byte matrices and each GPU's expert compute.
  // The combine all-to-all is the dispatch's transpose: on symmetric links every GPU's send and
  // receive volumes swap, so its time is the same; the backward pass repeats both.
  struct LayerCost {
    TimeNs a2a_ns = 0;
    double a2a_bytes = 0.0;  // bytes leaving their GPU in one all-to-all
    std::vector<TimeNs> expert_ns;  // per GPU, forward
  };
  std::vector<LayerCost> layer_cost(dispatch.size());
  double imbalance_sum = 0.0;
  for (std::size_t l = 0; l < dispatch.size(); ++l) {
    const LayerDispatch& d = dispatch[l];
    LayerCost& lc = layer_cost[l];
    const std::vector<double> bytes = dispatch_byte_matrix(d, S, token_bytes);
    lc.a2a_ns = network_.all_to_all_v(bytes);
    for (int a = 0; a < gpus_; ++a)
      for (int b = 0; b < gpus_; ++b)
        if (a != b) lc.a2a_bytes += bytes[static_cast<std::size_t>(a) * gpus_ + b];
    std::vector<std::int64_t> slot_tokens(slots, 0);
    for (int src = 0; src < gpus_; ++src)
      for (int sl = 0; sl < slots; ++sl) slot_tokens[sl] += d.buffered[static_cast<std::size_t>(src) * slots + sl];
    lc.expert_ns.assign(gpus_, 0);
    std::int64_t max_tokens = 0, sum_tokens = 0;
    for (int g = 0; g < gpus_; ++g) {
      std::int64_t gpu_tokens = 0;
      for (int s = 0; s < S; ++s) {
        lc.expert_ns[g] += expert_fwd_ns(slot_tokens[g * S + s]);
        gpu_tokens += slot_tokens[g * S + s];
      }
      max_tokens = std::max(max_tokens, gpu_tokens);
      sum_tokens += gpu_tokens;
    }
    imbalance_sum += sum_tokens > 0 ? static_cast<double>(max_tokens) * gpus_ / static_cast<double>(sum_tokens) : 1.0;
    res.tokens_routed += d.routed;
    res.tokens_dropped += d.dropped;
  }
  res.expert_compute_imbalance = dispatch.empty() ? 1.0 : imbalance_sum / static_cast<double>(dispatch.size());
  res.survival = res.tokens_routed > 0
                     ? 1.0 - static_cast<double>(res.tokens_dropped) / static_cast<double>(res.tokens_routed)
                     : 1.0;

  // Forward pass.
  int moe_index = 0;
  for (int layer = 0; layer < model_.layers; ++layer) {
    label("forward attention", layer);
    add_all(Phase::Compute, attention_fwd_ns_);
    if (!model_.is_moe_layer(layer)) {
      label("forward dense FFN", layer);
      add_all(Phase::Compute, dense_ffn_fwd_ns_);
      continue;
    }
    const LayerCost& lc = layer_cost[moe_index++];
    label("forward gate and shared experts", layer);
    add_all(Phase::Compute, gate_fwd_ns_ + shared_expert_fwd_ns_);
    label("forward dispatch all-to-all", layer);
    add_all_to_all(lc.a2a_ns, lc.a2a_bytes, res.a2a_bytes);
    label("forward experts", layer);
    for (int g = 0; g < gpus_; ++g) add_local(g, Phase::Compute, lc.expert_ns[g]);
    label("forward combine all-to-all", layer);
    add_all_to_all(lc.a2a_ns, lc.a2a_bytes, res.a2a_bytes);
  }
  label("forward LM head");
  add_all(Phase::Compute, lm_head_fwd_ns_);

  // Backward pass: the same layers in reverse, each GEMM twice; the all-to-alls carry the
  // gradients of the same activations, so the same byte matrices (combine's first).
  label("backward LM head");
  add_all(Phase::Compute, kBackwardFactor * lm_head_fwd_ns_);
  for (int layer = model_.layers - 1; layer >= 0; --layer) {
    if (!model_.is_moe_layer(layer)) {
      label("backward dense FFN", layer);
      add_all(Phase::Compute, kBackwardFactor * dense_ffn_fwd_ns_);
    } else {
      const LayerCost& lc = layer_cost[--moe_index];
      label("backward combine all-to-all", layer);
      add_all_to_all(lc.a2a_ns, lc.a2a_bytes, res.a2a_bytes);
      label("backward experts", layer);
      for (int g = 0; g < gpus_; ++g) add_local(g, Phase::Compute, kBackwardFactor * lc.expert_ns[g]);
      label("backward dispatch all-to-all", layer);
      add_all_to_all(lc.a2a_ns, lc.a2a_bytes, res.a2a_bytes);
      label("backward gate and shared experts", layer);
      add_all(Phase::Compute, kBackwardFactor * (gate_fwd_ns_ + shared_expert_fwd_ns_));
    }
    label("backward attention", layer);
    add_all(Phase::Compute, kBackwardFactor * attention_fwd_ns_);
  }

  // Gradient synchronisation, in one global order on every GPU so that no two GPUs wait on each
  // other in opposite orders: the policy's collectives, every expert's replicas (on distinct
  // GPUs) all-reducing in (layer, expert) order, gradient collection, then the dense parameters
  // across all GPUs.
  auto collective_ns = [&](Collective kind, double bytes, const std::vector<int>& gpus) {
    constexpr std::size_t kMemoBound = 1 << 16;
    auto key = std::make_tuple(static_cast<int>(kind), bytes, gpus);
    auto it = collective_memo_.find(key);
    if (it == collective_memo_.end()) {
      if (collective_memo_.size() >= kMemoBound) collective_memo_.clear();
      it = collective_memo_.emplace(std::move(key), network_.collective(kind, bytes, gpus).time_ns).first;
    }
    return it->second;
  };
  auto add_ops = [&](const std::vector<CollectiveOp>& ops, Phase phase) {
    for (const CollectiveOp& op : ops) {
      if (op.gpus.size() < 2) continue;
      add_collective(op.gpus, collective_ns(op.kind, op.bytes, op.gpus), phase);
      res.grad_sync_bytes += op.bytes;
    }
  };
  auto add_transfers = [&](const std::vector<Transfer>& ts, Phase phase) {
    if (ts.empty()) return;
    std::vector<TimeNs> busy = network_.transfers(ts);
    for (const Transfer& t : ts) res.grad_sync_bytes += t.bytes;
    // A receiver cannot go on before its data arrived: all leave with the busiest GPU.
    add_collective(all_gpus_, *std::max_element(busy.begin(), busy.end()), phase);
  };
  label("policy collectives");
  add_ops(sync.pre_collectives, Phase::GradSync);
  label("policy decision");
  // The policy decides once the counts are known (after the popularity exchange, if any).
  for (int g = 0; g < static_cast<int>(sync.decision_ns.size()); ++g) add_local(g, Phase::Movement, sync.decision_ns[g]);
  label("expert gradient all-reduce among replicas");
  if (sync.replica_allreduce) {
    const double expert_grad_bytes = model_.expert_params() * training_.grad_bytes_per_param;
    for (std::size_t l = 0; l < placement.expert_of_slot.size(); ++l) {
      std::vector<std::vector<int>> holders(model_.experts);
      for (int sl = 0; sl < slots; ++sl) {
        const int e = placement.expert_of_slot[l][sl];
        if (e >= 0) holders[e].push_back(sl / S);
      }
      for (auto& h : holders) {
        h.erase(std::unique(h.begin(), h.end()), h.end());  // slots are in GPU order
        if (h.size() < 2) continue;
        add_collective(h, collective_ns(Collective::AllReduce, expert_grad_bytes, h), Phase::GradSync);
        res.grad_sync_bytes += expert_grad_bytes;
      }
    }
  }
  label("expert gradient collectives");
  add_ops(sync.grad_collectives, Phase::GradSync);
  label("gradient collection to optimizer owners");
  add_transfers(sync.gradient_transfers, Phase::GradSync);
  label("dense gradient all-reduce");
  if (gpus_ > 1) {
    add_collective(all_gpus_, dense_grad_sync_ns_, Phase::GradSync);
    res.grad_sync_bytes += dense_params_ * training_.grad_bytes_per_param;
  }

  // Optimizer step: dense parameters where training.optimizer_offload says, expert parameters
  // where the sync plan says. A host's Adam serves all GPUs of its node at once.
  label("optimizer step");
  const ClusterSpec& cs = cluster_.spec();
  const int eb = dtype_bytes(model_.dtype);
  std::vector<double> host_params(cs.nodes, 0.0);
  for (int n = 0; n < cs.nodes; ++n) {
    host_params[n] = sync.host_optimizer_params.empty() ? 0.0 : sync.host_optimizer_params[n];
    if (training_.optimizer_offload) host_params[n] += dense_params_ * cs.gpus_per_node;
  }
  for (int g = 0; g < gpus_; ++g) {
    const auto at = [g](const std::vector<double>& v) { return v.empty() ? 0.0 : v[g]; };
    double gpu_params = at(sync.gpu_optimizer_params);
    double down = at(sync.d2h_bytes), up = at(sync.h2d_bytes);
    if (training_.optimizer_offload) {
      down += dense_params_ * training_.grad_bytes_per_param;
      up += dense_params_ * eb;
    } else {
      gpu_params += dense_params_;
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
  label("updated weights: collectives");
  add_ops(sync.post_collectives, Phase::GradSync);
  label("updated weights sent to the next placement");
  add_transfers(sync.weight_transfers, Phase::GradSync);

  // Execute the programs.
  pc_.assign(gpus_, 0);
  arrival_.assign(gpus_, 0);
  end_.assign(gpus_, start_ns);
  busy_.assign(gpus_, std::array<TimeNs, kNumPhases>{});
  for (int g = 0; g < gpus_; ++g) engine.schedule_at(start_ns, [this, g](Engine& e) { step(e, g); });
  engine.run();

  int crit = 0;
  for (int g = 1; g < gpus_; ++g)
    if (end_[g] > end_[crit]) crit = g;
  res.critical_gpu = crit;
  res.iteration_ns = end_[crit] - start_ns;
  res.phase_ns = busy_[crit];
  return res;
}

}  // namespace moesim
