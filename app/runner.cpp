#include "app/runner.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <memory>

#include "models/roofline.hpp"
#include "policies/registry.hpp"
#include "sim/error.hpp"

namespace moesim {

MemoryEstimate estimate_gpu_memory(const Scenario& s) {
  const MoeModelSpec& m = s.model;
  const double params = m.dense_params_total() + static_cast<double>(s.slots_per_gpu) * m.num_moe_layers() * m.expert_params();
  MemoryEstimate e;
  e.weights_bytes = params * dtype_bytes(m.dtype);
  e.gradients_bytes = params * s.training.grad_bytes_per_param;
  e.optimizer_bytes = s.training.optimizer_offload ? 0.0 : params * s.training.optimizer_bytes_per_param;
  // source: Korthikanti et al., "Reducing Activation Recomputation in Large Transformer Models"
  // (MLSys 2023): s*b*h*(34 + 5*a*s/h) bytes per layer; the 5as/h attention-score term is not
  // stored with FlashAttention (or selective recomputation), which every current MoE trainer uses.
  const double sbh = static_cast<double>(m.seq_len) * m.micro_batch_per_gpu * m.hidden;
  e.activations_bytes = m.layers * sbh * 34.0;
  return e;
}

namespace {

std::unique_ptr<TraceSource> open_trace(const Scenario& s, const TraceShape& shape) {
  if (s.trace.kind == "csv") return open_csv_trace(s.trace.path, shape);
  SyntheticTraceSpec spec = s.trace.synthetic;
  spec.tokens_per_gpu = s.model.tokens_per_gpu();
  spec.top_k = s.model.top_k;
  return make_synthetic_trace(shape, spec);
}

double percentile(std::vector<TimeNs> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  // Nearest-rank percentile.
  const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
  return static_cast<double>(v[std::clamp<std::size_t>(rank, 1, v.size()) - 1]);
}

}  // namespace

std::vector<PolicyResult> run_scenario(const Scenario& s, const RunOptions& opts) {
  Cluster cluster(s.cluster);
  const int G = cluster.num_gpus();

  // Impossible clusters are input errors, found before anything runs.
  MemoryEstimate mem = estimate_gpu_memory(s);
  if (mem.total() > s.cluster.gpu.hbm_bytes) {
    throw InputError(fmt::format(
        "{}: placement.slots_per_gpu {}: each GPU needs {:.2f} GB (weights {:.2f}, gradients {:.2f}, optimizer "
        "{:.2f}, activations {:.2f}) but {} has {:.2f} GB; lower placement.slots_per_gpu, model.micro_batch_per_gpu or "
        "model.seq_len, set training.optimizer_offload, or use more GPUs (this simulator holds every dense "
        "parameter on every GPU: no tensor or pipeline parallelism)",
        s.file, s.slots_per_gpu, mem.total() / 1e9, mem.weights_bytes / 1e9, mem.gradients_bytes / 1e9,
        mem.optimizer_bytes / 1e9, mem.activations_bytes / 1e9, s.cluster.gpu.name, s.cluster.gpu.hbm_bytes / 1e9));
  }

  PolicyContext ctx;
  ctx.cluster = &s.cluster;
  ctx.model = &s.model;
  ctx.gpus = G;
  ctx.slots_per_gpu = s.slots_per_gpu;
  ctx.moe_layers = s.model.num_moe_layers();
  ctx.experts = s.model.experts;
  ctx.tokens_per_gpu = s.model.tokens_per_gpu();
  ctx.top_k = s.model.top_k;
  ctx.expert_weight_bytes = s.model.expert_params() * dtype_bytes(s.model.dtype);
  ctx.expert_optimizer_bytes = s.model.expert_params() * s.training.optimizer_bytes_per_param;

  // Build every policy first: a bad parameter in the last one must fail before the first runs.
  std::vector<std::unique_ptr<Policy>> policies;
  for (std::size_t i = 0; i < s.policies.size(); ++i) {
    const PolicyEntry& e = s.policies[i];
    Cfg p(e.params, e.origin, fmt::format("policies[{}]", i));
    policies.push_back(make_policy(ctx, p));
  }

  const TraceShape shape{ctx.moe_layers, G, ctx.experts};
  std::unique_ptr<TraceSource> trace = open_trace(s, shape);
  RooflineCompute compute(s.cluster.gpu);
  AnalyticalNetwork network(cluster);
  IterationModel model(cluster, s.model, s.training, compute, network);

  std::vector<PolicyResult> results;
  IterationCounts counts;
  std::vector<LayerDispatch> dispatch(ctx.moe_layers);
  for (std::size_t pi = 0; pi < policies.size(); ++pi) {
    Policy& policy = *policies[pi];
    PolicyResult r;
    r.label = s.policies[pi].label;
    r.name = policy.name();
    r.parameters = policy.parameters();
    trace->rewind();
    Engine engine;
    Placement placement = policy.initial_placement();
    std::vector<Movement> pending;
    TimeNs now = 0;
    double progress = 0.0;
    std::int64_t routed = 0, dropped = 0;
    std::array<double, kNumPhases> phase_sum{};
    double a2a_sum = 0, sync_sum = 0, moved_sum = 0, imb_sum = 0;
    std::vector<TimeNs> times;
    for (std::int64_t it = 0; it < s.run.max_iterations; ++it) {
      counts.reset(shape);
      if (!trace->next(counts)) {
        if (s.trace.on_end == "stop" || it == 0) {
          throw InputError(fmt::format("{}: trace '{}' ended after {} iterations before the run did (trace.on_end: "
                                       "stop); use on_end: loop or lower run.max_iterations",
                                       s.file, trace->describe(), it));
        }
        trace->rewind();
        counts.reset(shape);
        trace->next(counts);
      }
      for (int l = 0; l < ctx.moe_layers; ++l) policy.dispatch(l, counts.layer_ptr(l), placement, dispatch[l]);
      IterationRow row;
      row.iteration = it;
      row.result = model.run(engine, now, placement, dispatch, pending);
      now += row.result.iteration_ns;
      row.end_ns = now;
      progress += 1.0 / s.convergence.iterations_needed(row.result.survival);
      row.progress = progress;
      routed += row.result.tokens_routed;
      dropped += row.result.tokens_dropped;
      for (int p = 0; p < kNumPhases; ++p) phase_sum[p] += static_cast<double>(row.result.phase_ns[p]);
      a2a_sum += row.result.a2a_bytes;
      sync_sum += row.result.grad_sync_bytes;
      moved_sum += row.result.moved_bytes;
      imb_sum += row.result.expert_compute_imbalance;
      times.push_back(row.result.iteration_ns);
      if (!r.converged && progress >= 1.0) {
        r.converged = true;
        r.iterations_to_converge = it + 1;
        r.time_to_convergence_ns = now;
      }
      PolicyDecision d = policy.after_iteration(static_cast<int>(it), counts, placement);
      if (d.new_placement) placement = std::move(d.placement);
      pending = std::move(d.movements);
      if (opts.keep_rows) r.rows.push_back(row);
      if (opts.on_iteration) opts.on_iteration(r.label, it);
      if (r.converged && s.run.stop_at_convergence) break;
    }
    const auto n = static_cast<double>(times.size());
    r.iterations_run = static_cast<std::int64_t>(times.size());
    r.simulated_ns = now;
    r.mean_iteration_ns = static_cast<double>(now) / n;
    r.p99_iteration_ns = percentile(times, 0.99);
    for (int p = 0; p < kNumPhases; ++p) r.mean_phase_ns[p] = phase_sum[p] / n;
    r.drop_rate = routed > 0 ? static_cast<double>(dropped) / static_cast<double>(routed) : 0.0;
    r.mean_survival = 1.0 - r.drop_rate;
    r.mean_a2a_bytes = a2a_sum / n;
    r.mean_grad_sync_bytes = sync_sum / n;
    r.mean_moved_bytes = moved_sum / n;
    r.mean_expert_imbalance = imb_sum / n;
    r.events = engine.executed();
    results.push_back(std::move(r));
  }
  return results;
}

}  // namespace moesim
