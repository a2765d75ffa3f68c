#include "app/runner.hpp"

#include "app/sim_memory.hpp"
#include "app/staged_policy.hpp"
#include "traces/cross_layer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <atomic>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "models/profile.hpp"
#include "models/roofline.hpp"
#include "policies/registry.hpp"
#include "core/error.hpp"
#include "sim/flow_network.hpp"
#include "sim/measured_collectives.hpp"
#include "sim/memory.hpp"
#include "traces/binary.hpp"
#include "traces/importers.hpp"
#include "traces/prefetch.hpp"
#include "traces/replay.hpp"

namespace moesim {

MemoryUse estimate_gpu_memory(const Scenario& s) {
  const MoeModelSpec& m = s.model;
  const LayoutGroups groups(s.layout, s.cluster.num_gpus(), m.layers);
  const std::vector<double> dense = stage_dense_params(m, groups);
  // The fullest stage: its dense share, every slot of its MoE layers filled, and the activations
  // its schedule keeps in flight. Only the dense optimizer state is certain to be on the GPU:
  // where the experts' state lives is the policy's choice, accounted every iteration.
  MemoryUse worst;
  for (int st = 0; st < groups.stages(); ++st) {
    int moe = 0;
    for (int l = 0; l < m.layers; ++l) moe += m.is_moe_layer(l) && groups.stage_of_layer(l) == st ? 1 : 0;
    // With expert_tensor each GPU holds 1/etp of every expert of its group rank's slots.
    const double experts = static_cast<double>(s.slots_per_gpu) * moe * m.expert_params() / s.layout.expert_tensor;
    const MemoryUse e = gpu_state_memory(m, s.training, groups, dense[static_cast<std::size_t>(st)],
                                         in_flight_chunks(groups, st), experts, 0.0);
    if (e.total() > worst.total()) worst = e;
  }
  return worst;
}

namespace {

std::unique_ptr<TraceSource> open_trace(const Scenario& s, const TraceShape& shape) {
  if (s.trace.kind == "csv") return open_csv_trace(s.trace.path, shape);
  if (s.trace.kind == "binary") return open_binary_trace(s.trace.path, shape);
  if (s.trace.kind == "import") {
    // Recorded counts without per-GPU detail are spread over the GPUs at the model's batch size.
    ImportOptions o;
    o.shape = shape;
    o.tokens_per_gpu = tokens_per_source(s);
    o.top_k = s.model.top_k;
    o.seed = s.seed;
    o.select = s.trace.select;
    o.iterations = s.run.max_iterations;
    return open_trace_file(s.trace.path, o).source;
  }
  SyntheticTraceSpec spec = s.trace.synthetic;
  spec.tokens_per_gpu = tokens_per_source(s);
  spec.top_k = s.model.top_k;
  return make_synthetic_trace(shape, spec);
}

// The scenario's cross-layer pair profile over all MoE layers, or nullopt without one.
std::optional<CrossLayerPairs> load_cross_layer(const Scenario& s) {
  const CrossLayerConfig& x = s.trace.cross_layer;
  if (!x.present) return std::nullopt;
  if (x.path.empty()) {
    SyntheticTraceSpec spec = s.trace.synthetic;
    return synthetic_cross_layer(TraceShape{s.model.num_moe_layers(), 1, s.model.experts}, spec, x.affinity);
  }
  CrossLayerCsvOptions o;
  o.layers = s.model.num_moe_layers();
  o.experts = s.model.experts;
  o.select = x.select;
  o.map_recorded_layers = s.trace.kind == "import";
  return load_cross_layer_csv(x.path, o);
}

// The all-reduce curves of a profile's `collectives:` section. The measured all-to-all is uniform,
// and the simulator's all-to-all-v is not, so it is only compared (moesim calibrate), not used.
std::vector<MeasuredCollective> measured_collectives(const std::string& name_or_path, const std::string& scenario) {
  const ComputeProfile p = load_profile(name_or_path);
  if (!p.collectives.present)
    throw InputError(fmt::format("{}: network.collective_profile: {} has no collectives: section (write one with "
                                 "moesim calibrate --backend cuda --collectives on a machine with several GPUs)",
                                 scenario, name_or_path));
  std::vector<MeasuredCollective> out;
  for (const CollectiveSeries& series : p.collectives.series) {
    if (series.collective != "all_reduce" || series.points.empty()) continue;
    MeasuredCollective m;
    m.collective = Collective::AllReduce;
    m.ranks = p.collectives.gpus;
    for (const CollectivePoint& q : series.points) {
      m.bytes.push_back(q.bytes);
      m.time_ns.push_back(q.median_ns);
    }
    out.push_back(std::move(m));
  }
  if (out.empty())
    throw InputError(fmt::format("{}: network.collective_profile: {} measures no all_reduce", scenario, name_or_path));
  return out;
}

double percentile(std::vector<TimeNs> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  // Nearest-rank percentile.
  const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(v.size())));
  return static_cast<double>(v[std::clamp<std::size_t>(rank, 1, v.size()) - 1]);
}

ExpertSample sample_experts(std::int64_t iteration, const IterationCounts& counts, const Placement& placement,
                            const std::vector<GroupDispatch>& dispatch) {
  const TraceShape& sh = counts.shape;
  ExpertSample x;
  x.iteration = iteration;
  const auto n = static_cast<std::size_t>(sh.layers) * static_cast<std::size_t>(sh.experts);
  x.routed.assign(n, 0);
  x.processed.assign(n, 0);
  x.replicas.assign(n, 0);
  for (int l = 0; l < sh.layers; ++l) {
    const std::size_t base = static_cast<std::size_t>(l) * static_cast<std::size_t>(sh.experts);
    const std::int64_t* c = counts.layer_ptr(l);
    for (int src = 0; src < sh.gpus; ++src)
      for (int e = 0; e < sh.experts; ++e) x.routed[base + static_cast<std::size_t>(e)] += c[static_cast<std::size_t>(src) * sh.experts + e];
    const std::vector<int>& slots = placement.expert_of_slot[static_cast<std::size_t>(l)];
    for (const int e : slots)
      if (e >= 0) ++x.replicas[base + static_cast<std::size_t>(e)];
    // Row by row (a column walk of the [src][slot] matrices thrashed the cache); integer sums,
    // so the order does not change them.
    for (const LayerDispatch& d : dispatch[static_cast<std::size_t>(l)])
      for (int src = 0; src < d.gpus; ++src) {
        const std::int64_t* row = d.accepted.data() + static_cast<std::size_t>(src) * static_cast<std::size_t>(d.num_slots);
        for (std::size_t slot = 0; slot < slots.size(); ++slot)
          if (slots[slot] >= 0) x.processed[base + static_cast<std::size_t>(slots[slot])] += row[slot];
      }
  }
  return x;
}

}  // namespace

std::int64_t auto_expert_stats_samples(const Scenario& s) {
  const std::int64_t cells = std::max<std::int64_t>(1, static_cast<std::int64_t>(s.model.num_moe_layers()) * s.model.experts);
  return std::clamp<std::int64_t>(200000 / cells, 2, 100);
}

namespace {
// Impossible clusters are input errors, found before anything runs.
void check_memory(const Scenario& s) {
  MemoryUse mem = estimate_gpu_memory(s);
  if (mem.total() > s.cluster.gpu.hbm_bytes) {
    throw InputError(fmt::format(
        "{}: placement.slots_per_gpu {}: each GPU needs {:.2f} GB (weights {:.2f}, gradients {:.2f}, optimizer "
        "{:.2f}, activations {:.2f}) but {} has {:.2f} GB; lower placement.slots_per_gpu, model.micro_batch_per_gpu or "
        "model.seq_len, {}shard with parallelism.tensor, parallelism.pipeline or parallelism.zero_stage, or use more "
        "GPUs",
        s.file, s.slots_per_gpu, mem.total() / 1e9, mem.weights_bytes / 1e9, mem.gradients_bytes / 1e9,
        mem.optimizer_bytes / 1e9, mem.activations_bytes / 1e9, s.cluster.gpu.name, s.cluster.gpu.hbm_bytes / 1e9,
        s.training.optimizer_offload ? "" : "set training.optimizer_offload, "));
  }
}
}  // namespace

namespace {
// What the runs of a scenario's policies share besides the scenario: a thread of `compare
// --jobs` builds its own, since routes, the flow network's paths and the iteration model fill
// caches as they run.
struct World {
  std::unique_ptr<Cluster> own_cluster;
  const Cluster* cluster = nullptr;
  std::unique_ptr<TraceSource> trace;
  std::unique_ptr<ComputeModel> compute;
  std::unique_ptr<NetworkModel> network;
  std::unique_ptr<MeasuredCollectiveNetwork> measured;
  std::unique_ptr<IterationModel> model;
};

// `cluster`: the one to use, or null for a world's own. `trace_share`: 0 for no trace, else the
// number of worlds sharing the replay cache's memory budget.
World make_world(const Scenario& s, const Cluster* cluster, const TraceShape& shape, std::size_t trace_share,
                 int trace_prefetch, std::vector<std::string>* warnings) {
  World w;
  if (cluster == nullptr) {
    w.own_cluster = std::make_unique<Cluster>(s.cluster);
    cluster = w.own_cluster.get();
  }
  w.cluster = cluster;
  if (trace_share > 0) {
    // 256 MiB of cached iterations covers the usual comparison; beyond it the trace is replayed.
    // A single policy never replays, so it keeps none and its memory does not grow with the run.
    const double budget = s.policies.size() > 1 ? 256.0 * 1024 * 1024 / static_cast<double>(trace_share) : 0.0;
    // Read ahead under the cache: the cache's copies and replays are cheap, the reads are not.
    std::unique_ptr<TraceSource> source = open_trace(s, shape);
    if (trace_prefetch > 0) source = prefetch_trace(std::move(source), trace_prefetch);
    w.trace = std::make_unique<ReplayCache>(std::move(source), budget);
  }
  w.compute = make_compute_model(s.cluster.gpu, s.model, s.compute_profile, s.compute_fallback_roofline, warnings);
  // The flow-level model sees flows share links; the analytical one is faster (docs/network.md).
  if (s.network_model == "flow") w.network = std::make_unique<FlowNetwork>(*cluster);
  else w.network = std::make_unique<AnalyticalNetwork>(*cluster);
  if (!s.collective_profile.empty()) {
    w.measured = std::make_unique<MeasuredCollectiveNetwork>(*w.network, *cluster,
                                                             measured_collectives(s.collective_profile, s.file),
                                                             s.collective_profile);
  }
  const NetworkModel& net = w.measured ? static_cast<const NetworkModel&>(*w.measured) : *w.network;
  w.model = std::make_unique<IterationModel>(*cluster, s.model, s.training, *w.compute, net, s.layout, s.dispatch,
                                             s.overlap);
  return w;
}
}  // namespace

void check_scenario(const Scenario& s) {
  check_memory(s);
  check_simulator_memory(s, 1);
  const LayoutGroups groups(s.layout, s.cluster.num_gpus(), s.model.layers);
  const std::optional<CrossLayerPairs> pairs = load_cross_layer(s);
  for (std::size_t i = 0; i < s.policies.size(); ++i) (void)StagedPolicy(s, groups, i, pairs ? &*pairs : nullptr);
}

std::vector<PolicyResult> run_scenario(const Scenario& s, const RunOptions& opts) {
  check_memory(s);
  check_simulator_memory(s, opts.jobs, opts.trace_prefetch);
  Cluster cluster(s.cluster);
  const int G = cluster.num_gpus();

  const LayoutGroups groups(s.layout, G, s.model.layers);
  // Every policy of the scenario, built before any runs: a bad parameter in the last one must
  // fail before the first runs.
  const std::optional<CrossLayerPairs> pairs = load_cross_layer(s);
  const CrossLayerPairs* cross_layer = pairs ? &*pairs : nullptr;
  std::vector<std::unique_ptr<StagedPolicy>> policies;
  for (std::size_t i = 0; i < s.policies.size(); ++i)
    policies.push_back(std::make_unique<StagedPolicy>(s, groups, i, cross_layer));

  // One source per GPU of a stage: the MoE layers of a stage route its GPUs' tokens.
  const TraceShape shape{s.model.num_moe_layers(), groups.gpus_per_stage(), s.model.experts};
  const std::size_t threads =
      std::min<std::size_t>(static_cast<std::size_t>(std::max(opts.jobs, 1)), policies.size());
  // Measured collectives count their lookups over the whole scenario: one world keeps that exact.
  const bool parallel = threads > 1 && s.collective_profile.empty();
  std::vector<std::string> compute_warnings;
  World main = make_world(s, &cluster, shape, parallel ? 0 : 1, opts.trace_prefetch, &compute_warnings);
  for (const auto& w : compute_warnings) std::cerr << "warning: " << w << "\n";

  std::mutex hook_mu;
  auto run_policy = [&](std::size_t pi, World& w) {
    TraceSource* trace = w.trace.get();
    IterationModel& model = *w.model;
    model.set_forward_only(opts.forward_only);
    model.set_cross_layer(cross_layer);
    IterationCounts counts;
    StagedPolicy& policy = *policies[pi];
    PolicyResult r;
    r.label = s.policies[pi].label;
    r.name = policy.first().name();
    r.parameters = policy.first().parameters();
    r.experts = s.model.experts;
    std::int64_t expert_every = opts.expert_stats_every;
    trace->rewind();
    Engine engine;
    policy.begin();
    TimeNs now = 0;
    double progress = 0.0;
    // N equal shares of 1/N sum to a hair under 1 in floating point: they still complete the run.
    constexpr double kConverged = 1.0 - 1e-9;
    std::vector<ConvergenceSpec> band_specs;
    std::vector<double> band_progress;
    if (opts.convergence_band)
      for (const std::string& f : kConvergenceForms) {
        band_specs.push_back(s.convergence.with_form(f));
        r.band.push_back(PolicyResult::BandEntry{f});
        band_progress.push_back(0.0);
      }
    std::int64_t routed = 0, dropped = 0;
    std::array<double, kNumPhases> phase_sum{};
    double a2a_sum = 0, sync_sum = 0, moved_sum = 0, imb_sum = 0, exposed_sum = 0;
    std::vector<TimeNs> times;
    for (std::int64_t it = 0; it < s.run.max_iterations; ++it) {
      // Read ahead, every iteration replaces `counts` whole (the cache copies or the read-ahead
      // swaps it in), and zeroing 15 MB an iteration (DeepSeek-V3) first would be wasted.
      if (opts.trace_prefetch <= 0) counts.reset(shape);
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
      policy.plan(static_cast<int>(it), counts);
      const Placement& placement = policy.placement();
      const std::vector<GroupDispatch>& dispatch = policy.dispatch();
      const std::vector<Movement>& pending = policy.pending();
      const SyncPlan& sync = policy.sync();
      r.slot_budget = placement.num_slots();
      for (const std::vector<int>& layer : placement.expert_of_slot)
        r.max_filled_slots = std::max(
            r.max_filled_slots, static_cast<int>(std::count_if(layer.begin(), layer.end(), [](int e) { return e >= 0; })));

      // Memory before time: a GPU that cannot hold this iteration stops the run.
      std::vector<MemoryUse> mem_gpu = gpu_memory(s.model, s.training, groups, placement, dispatch, pending, sync);
      std::vector<double> mem_host = host_memory(s.cluster, s.model, s.training, groups, sync);
      for (int g = 0; g < G && !r.oom; ++g) {
        const double total = mem_gpu[g].total();
        if (total > r.peak_gpu_memory_bytes) {
          r.peak_gpu_memory_bytes = total;
          r.peak_memory_gpu = g;
        }
        r.peak_memory.max_with(mem_gpu[g]);
        if (total > s.cluster.gpu.hbm_bytes) {
          // Name the first few transfers into the GPU and count the rest: a re-plan can move
          // hundreds of experts, and a report that long hides its own conclusion.
          constexpr int kNamed = 6;
          std::string steps;
          int incoming = 0;
          for (const Movement& mv : pending) {
            if (mv.transfer.dst.host || mv.transfer.dst.index != g) continue;
            if (incoming++ < kNamed) steps += (steps.empty() ? "" : "; ") + mv.what;
          }
          if (incoming > kNamed) steps += fmt::format("; and {} more, {} transfers in all", incoming - kNamed, incoming);
          r.oom = true;
          r.oom_iteration = it;
          r.oom_report = fmt::format("OOM on GPU {} at iteration {} ({}): needs {} but {} has {:.2f} GB", g, it,
                                     steps.empty() ? "training step" : "receiving " + steps, describe(mem_gpu[g]),
                                     s.cluster.gpu.name, s.cluster.gpu.hbm_bytes / 1e9);
        }
      }
      for (int n = 0; n < s.cluster.nodes && !r.oom; ++n) {
        r.peak_host_memory_bytes = std::max(r.peak_host_memory_bytes, mem_host[n]);
        if (mem_host[n] > s.cluster.host_memory_bytes) {
          r.oom = true;
          r.oom_iteration = it;
          r.oom_report = fmt::format("OOM on the host of node {} at iteration {}: optimizer state {:.2f} GB but the "
                                     "host has {:.2f} GB",
                                     n, it, mem_host[n] / 1e9, s.cluster.host_memory_bytes / 1e9);
        }
      }
      if (r.oom) break;

      if (expert_every > 0 && it % expert_every == 0) {
        r.expert_samples.push_back(sample_experts(it, counts, placement, dispatch));
        if (opts.expert_stats_max_samples > 0 &&
            static_cast<std::int64_t>(r.expert_samples.size()) > opts.expert_stats_max_samples) {
          expert_every *= 2;
          std::erase_if(r.expert_samples, [&](const ExpertSample& x) { return x.iteration % expert_every != 0; });
        }
      }

      model.set_compute_slowdown(s.heterogeneity.slowdown_at(it, G));
      const bool record = std::find(opts.timeline_iterations.begin(), opts.timeline_iterations.end(), it) !=
                          opts.timeline_iterations.end();
      model.set_recording(record);
      IterationRow row;
      row.iteration = it;
      row.result = model.run(engine, now, placement, dispatch, pending, sync);
      if (record && opts.on_recorded) opts.on_recorded(r.label, it, model, row.result);
      if (record) {
        for (const IterationModel::Span& sp : model.spans()) {
          r.timeline.push_back({{"name", model.labels()[static_cast<std::size_t>(sp.label)]},
                                {"cat", sp.comm ? "communication" : "compute"},
                                {"ph", "X"},
                                {"ts", static_cast<double>(sp.start_ns) / 1e3},
                                {"dur", static_cast<double>(sp.duration_ns) / 1e3},
                                {"pid", static_cast<int>(pi)},
                                {"tid", 2 * sp.gpu + (sp.comm ? 1 : 0)},
                                {"args", {{"iteration", it}, {"start_ns", sp.start_ns}, {"duration_ns", sp.duration_ns}}}});
        }
      }
      now += row.result.iteration_ns;
      row.end_ns = now;
      progress += 1.0 / s.convergence.iterations_needed(row.result.survival);
      row.progress = progress;
      routed += row.result.tokens_routed;
      dropped += row.result.tokens_dropped;
      for (int p = 0; p < kNumPhases; ++p) phase_sum[p] += static_cast<double>(row.result.phase_ns[p]);
      a2a_sum += row.result.a2a_bytes;
      exposed_sum += static_cast<double>(row.result.exposed_comm_ns);
      sync_sum += row.result.grad_sync_bytes;
      moved_sum += row.result.moved_bytes;
      imb_sum += row.result.expert_compute_imbalance;
      times.push_back(row.result.iteration_ns);
      if (!r.converged && progress >= kConverged) {
        r.converged = true;
        r.iterations_to_converge = it + 1;
        r.time_to_convergence_ns = now;
      }
      bool band_done = true;
      for (std::size_t f = 0; f < band_specs.size(); ++f) {
        band_progress[f] += 1.0 / band_specs[f].iterations_needed(row.result.survival);
        PolicyResult::BandEntry& b = r.band[f];
        if (!b.converged && band_progress[f] >= kConverged) {
          b.converged = true;
          b.iterations_to_converge = it + 1;
          b.time_to_convergence_ns = now;
        }
        band_done = band_done && b.converged;
      }
      policy.commit();
      if (opts.keep_rows) r.rows.push_back(row);
      if (opts.on_iteration) {
        const std::lock_guard<std::mutex> lock(hook_mu);
        opts.on_iteration(r.label, it);
      }
      if (r.converged && band_done && s.run.stop_at_convergence) break;
    }
    const auto n = static_cast<double>(std::max<std::size_t>(times.size(), 1));
    r.iterations_run = static_cast<std::int64_t>(times.size());
    r.simulated_ns = now;
    r.mean_iteration_ns = static_cast<double>(now) / n;
    r.p99_iteration_ns = percentile(times, 0.99);
    for (int p = 0; p < kNumPhases; ++p) r.mean_phase_ns[p] = phase_sum[p] / n;
    r.drop_rate = routed > 0 ? static_cast<double>(dropped) / static_cast<double>(routed) : 0.0;
    r.mean_survival = 1.0 - r.drop_rate;
    r.mean_a2a_bytes = a2a_sum / n;
    r.mean_exposed_comm_ns = exposed_sum / n;
    r.mean_grad_sync_bytes = sync_sum / n;
    r.mean_moved_bytes = moved_sum / n;
    r.mean_expert_imbalance = imb_sum / n;
    r.events = engine.executed();
    return r;
  };

  std::vector<PolicyResult> results;
  if (!parallel) {
    for (std::size_t pi = 0; pi < policies.size(); ++pi) {
      results.push_back(run_policy(pi, main));
      results.back().compute_fallback = compute_fallback_note(*main.compute);
    }
  } else {
    // compare --jobs: each thread has a world of its own and takes the next policy; results go
    // to their policy's place, and the roofline lookups are merged in policy order into the
    // first world's model, so every figure is what one thread gives.
    results.resize(policies.size());
    std::vector<ProfileCompute::RooflineLog> lookups(policies.size());
    std::vector<std::exception_ptr> errors(policies.size());
    std::atomic<std::size_t> next{0};
    auto worker = [&] {
      std::unique_ptr<World> w;
      for (std::size_t pi; (pi = next.fetch_add(1)) < policies.size();) {
        try {
          if (!w) w = std::make_unique<World>(make_world(s, nullptr, shape, threads, opts.trace_prefetch, nullptr));
          auto* pc = dynamic_cast<ProfileCompute*>(w->compute.get());
          if (pc != nullptr) (void)pc->take_roofline_log();  // start-up's, counted once in `main`
          results[pi] = run_policy(pi, *w);
          if (pc != nullptr) lookups[pi] = pc->take_roofline_log();
        } catch (...) {
          errors[pi] = std::current_exception();
          next = policies.size();  // as one thread would, stop at the first failing policy
        }
      }
    };
    std::vector<std::thread> pool;
    for (std::size_t t = 0; t < threads; ++t) pool.emplace_back(worker);
    for (std::thread& t : pool) t.join();
    for (std::size_t pi = 0; pi < policies.size(); ++pi) {
      if (errors[pi]) std::rethrow_exception(errors[pi]);
      auto* pc = dynamic_cast<ProfileCompute*>(main.compute.get());
      if (pc != nullptr) pc->merge_roofline_log(lookups[pi]);
      results[pi].compute_fallback = compute_fallback_note(*main.compute);
    }
  }
  // The iteration model looks each collective shape up once (the dense all-reduce when it is
  // built), so the counts are for the whole scenario, not per policy.
  if (main.measured)
    for (PolicyResult& r : results) r.collectives_note = main.measured->report();
  return results;
}

}  // namespace moesim
