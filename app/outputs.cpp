#include "app/outputs.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "app/convergence_band.hpp"
#include "core/error.hpp"

namespace moesim {

namespace {
double best_ttc_ns(const std::vector<PolicyResult>& results) {
  double best = 0.0;
  for (const auto& r : results)
    if (r.converged && !r.oom && (best == 0.0 || static_cast<double>(r.time_to_convergence_ns) < best))
      best = static_cast<double>(r.time_to_convergence_ns);
  return best;
}
}  // namespace

nlohmann::json summary_json(const Scenario& s, const std::vector<PolicyResult>& results) {
  using nlohmann::json;
  json scen = s.to_json();
  json pols = json::array();
  json res = json::array();
  const double best = best_ttc_ns(results);
  const ConvergenceBand band = convergence_band(results);
  for (std::size_t ri = 0; ri < results.size(); ++ri) {
    const PolicyResult& r = results[ri];
    json p = r.parameters;
    pols.push_back({{"label", r.label}, {"name", r.name}, {"parameters", p}});
    json phases;
    for (int i = 0; i < kNumPhases; ++i) phases[std::string(to_string(static_cast<Phase>(i))) + "_ns"] = r.mean_phase_ns[i];
    json j{{"label", r.label},
           {"policy", r.name},
           {"converged", r.converged},
           {"iterations_to_converge", r.converged ? json(r.iterations_to_converge) : json(nullptr)},
           {"time_to_convergence_ns", r.converged ? json(r.time_to_convergence_ns) : json(nullptr)},
           {"time_to_convergence_s", r.converged ? json(ns_to_s(r.time_to_convergence_ns)) : json(nullptr)},
           {"ratio_to_best", r.converged && best > 0 ? json(static_cast<double>(r.time_to_convergence_ns) / best) : json(nullptr)},
           {"iterations_run", r.iterations_run},
           {"simulated_ns", r.simulated_ns},
           {"mean_iteration_ns", r.mean_iteration_ns},
           {"p99_iteration_ns", r.p99_iteration_ns},
           {"mean_phase_ns", phases},
           {"mean_exposed_comm_ns", r.mean_exposed_comm_ns},
           {"drop_rate", r.drop_rate},
           {"mean_survival", r.mean_survival},
           {"mean_a2a_bytes_per_iteration", r.mean_a2a_bytes},
           {"mean_grad_sync_bytes_per_iteration", r.mean_grad_sync_bytes},
           {"mean_moved_bytes_per_iteration", r.mean_moved_bytes},
           {"mean_expert_load_imbalance", r.mean_expert_imbalance},
           {"events", r.events},
           {"peak_gpu_memory_bytes", r.peak_gpu_memory_bytes},
           {"peak_memory_gpu", r.peak_memory_gpu},
           {"peak_memory_components_bytes",
            {{"weights", r.peak_memory.weights_bytes},
             {"gradients", r.peak_memory.gradients_bytes},
             {"optimizer", r.peak_memory.optimizer_bytes},
             {"activations", r.peak_memory.activations_bytes},
             {"dispatch_buffers", r.peak_memory.dispatch_buffer_bytes},
             {"move_temporaries", r.peak_memory.move_temporary_bytes}}},
           {"peak_host_memory_bytes", r.peak_host_memory_bytes},
           {"slot_budget", r.slot_budget},
           {"max_filled_slots", r.max_filled_slots},
           {"compute_fallback", r.compute_fallback.empty() ? json(nullptr) : json(r.compute_fallback)},
           {"measured_collectives", r.collectives_note.empty() ? json(nullptr) : json(r.collectives_note)},
           {"oom", r.oom},
           {"oom_iteration", r.oom ? json(r.oom_iteration) : json(nullptr)},
           {"oom_report", r.oom ? json(r.oom_report) : json(nullptr)}};
    if (!band.forms.empty()) j["convergence_band"] = band_json(band, r, ri);
    res.push_back(j);
  }
  scen["policies"] = pols;
  json out{{"moesim_version", "0.1.0"}, {"scenario", scen}, {"results", res}};
  if (!band.forms.empty()) out["convergence_band"] = band_json(band);
  return out;
}

std::string iterations_csv(const std::vector<PolicyResult>& results) {
  std::string out =
      "policy,iteration,iteration_ns,compute_ns,a2a_ns,grad_sync_ns,optimizer_ns,movement_ns,wait_ns,"
      "pipeline_bubble_ns,tp_comm_ns,exposed_comm_ns,critical_gpu,tokens_routed,tokens_dropped,survival,a2a_bytes,grad_sync_bytes,moved_bytes,"
      "expert_load_imbalance,progress,end_ns\n";
  for (const auto& r : results) {
    for (const auto& row : r.rows) {
      const IterationResult& x = row.result;
      fmt::format_to(std::back_inserter(out), "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                     r.label, row.iteration, x.iteration_ns, x.phase_ns[0], x.phase_ns[1], x.phase_ns[2],
                     x.phase_ns[3], x.phase_ns[4], x.phase_ns[5], x.phase_ns[6], x.phase_ns[7], x.exposed_comm_ns,
                     x.critical_gpu, x.tokens_routed, x.tokens_dropped, x.survival,
                     x.a2a_bytes, x.grad_sync_bytes, x.moved_bytes, x.expert_compute_imbalance, row.progress,
                     row.end_ns);
    }
  }
  return out;
}

std::string experts_csv(const std::vector<PolicyResult>& results) {
  std::string out = "policy,iteration,layer,expert,tokens_routed,tokens_processed,replicas\n";
  for (const auto& r : results) {
    const auto E = static_cast<std::size_t>(std::max(r.experts, 1));
    for (const ExpertSample& x : r.expert_samples) {
      for (std::size_t i = 0; i < x.routed.size(); ++i) {
        fmt::format_to(std::back_inserter(out), "{},{},{},{},{},{},{}\n", r.label, x.iteration, i / E, i % E,
                       x.routed[i], x.processed[i], x.replicas[i]);
      }
    }
  }
  return out;
}

std::string compare_csv(const std::vector<PolicyResult>& results) {
  std::string out =
      "policy,name,status,iterations_to_converge,time_to_convergence_s,ratio_to_best,mean_iteration_ns,"
      "p99_iteration_ns,compute_ns,a2a_ns,grad_sync_ns,optimizer_ns,movement_ns,wait_ns,pipeline_bubble_ns,"
      "tp_comm_ns,exposed_comm_ns,drop_rate,"
      "moved_bytes_per_iteration,a2a_bytes_per_iteration,peak_gpu_memory_bytes";
  // With the convergence band: each policy's range of times to convergence over the forms.
  const ConvergenceBand band = convergence_band(results);
  out += band.forms.empty() ? "\n" : ",min_time_to_convergence_s,max_time_to_convergence_s\n";
  const double best = best_ttc_ns(results);
  for (std::size_t ri = 0; ri < results.size(); ++ri) {
    const PolicyResult& r = results[ri];
    const bool ok = r.converged && !r.oom;
    fmt::format_to(std::back_inserter(out), "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}", r.label,
                   r.name,
                   r.oom ? "oom" : r.converged ? "converged" : "not_converged",
                   ok ? std::to_string(r.iterations_to_converge) : "",
                   ok ? fmt::format("{}", ns_to_s(r.time_to_convergence_ns)) : "",
                   ok && best > 0 ? fmt::format("{}", static_cast<double>(r.time_to_convergence_ns) / best) : "",
                   r.mean_iteration_ns, r.p99_iteration_ns, r.mean_phase_ns[0], r.mean_phase_ns[1], r.mean_phase_ns[2],
                   r.mean_phase_ns[3], r.mean_phase_ns[4], r.mean_phase_ns[5], r.mean_phase_ns[6], r.mean_phase_ns[7],
                   r.mean_exposed_comm_ns, r.drop_rate, r.mean_moved_bytes, r.mean_a2a_bytes, r.peak_gpu_memory_bytes);
    if (!band.forms.empty()) {
      const auto s = [](const std::optional<TimeNs>& t) { return t ? fmt::format("{}", ns_to_s(*t)) : std::string(); };
      fmt::format_to(std::back_inserter(out), ",{},{}", s(band.min_ns[ri]), s(band.max_ns[ri]));
    }
    out += "\n";
  }
  return out;
}

std::string summary_table(const Scenario& s, const std::vector<PolicyResult>& results) {
  std::string out = fmt::format("scenario {} ({} x {} GPUs {}, model {}, {} slots/GPU, seed {})\n", s.name,
                                s.cluster.nodes, s.cluster.gpus_per_node, s.cluster.gpu.name, s.model.name,
                                s.slots_per_gpu, s.seed);
  std::size_t w = 6;
  for (const auto& r : results) w = std::max(w, r.label.size());
  // A parallel layout adds its own parts of the iteration: the pipeline bubble and the
  // tensor-parallel collectives.
  const bool layout = !s.layout.is_default();
  const ConvergenceBand band = convergence_band(results);
  const bool banded = !band.forms.empty();
  out += fmt::format("{:<{}} {:>6} {:>9}{} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}{} {:>6} {:>9} {:>7}\n",
                     "policy", w, "iters", "ttc_s", banded ? fmt::format(" {:>9} {:>9}", "ttc_lo_s", "ttc_hi_s") : "",
                     "ratio", "iter_ms", "p99_ms", "comp_ms", "a2a_ms", "sync_ms", "opt_ms",
                     "move_ms", "wait_ms", layout ? fmt::format(" {:>8} {:>8}", "bubl_ms", "tp_ms") : "", "drop_%",
                     "moved_MB", "peak_GB");
  const double best = best_ttc_ns(results);
  auto ms = [](double ns) { return ns / 1e6; };
  auto range = [&](std::size_t i) {
    if (!banded) return std::string();
    auto cell = [](const std::optional<TimeNs>& t) { return t ? fmt::format("{:.2f}", ns_to_s(*t)) : std::string("-"); };
    return fmt::format(" {:>9} {:>9}", cell(band.min_ns[i]), cell(band.max_ns[i]));
  };
  bool beyond_data = false;
  for (std::size_t ri = 0; ri < results.size(); ++ri) {
    const PolicyResult& r = results[ri];
    const bool ok = r.converged && !r.oom;
    beyond_data = beyond_data || (!r.oom && r.mean_survival > s.convergence.data_max_survival);
    out += fmt::format(
        "{:<{}} {:>6} {:>9}{} {:>6} {:>8.2f} {:>8.2f} {:>8.2f} {:>8.2f} {:>8.2f} {:>8.2f} {:>8.2f} {:>8.2f}{} {:>6.2f} {:>9.1f} "
        "{:>7.2f}\n",
        r.label, w, ok ? std::to_string(r.iterations_to_converge) : "-",
        r.oom ? "OOM" : r.converged ? fmt::format("{:.2f}", ns_to_s(r.time_to_convergence_ns)) : "not conv.", range(ri),
        ok && best > 0 ? fmt::format("{:.3f}", static_cast<double>(r.time_to_convergence_ns) / best) : "-",
        ms(r.mean_iteration_ns), ms(r.p99_iteration_ns), ms(r.mean_phase_ns[0]), ms(r.mean_phase_ns[1]),
        ms(r.mean_phase_ns[2]), ms(r.mean_phase_ns[3]), ms(r.mean_phase_ns[4]), ms(r.mean_phase_ns[5]),
        layout ? fmt::format(" {:>8.2f} {:>8.2f}", ms(r.mean_phase_ns[6]), ms(r.mean_phase_ns[7])) : "",
        100.0 * r.drop_rate, r.mean_moved_bytes / 1e6, r.peak_gpu_memory_bytes / 1e9);
  }
  out += "iters: iterations to converge; ttc_s: simulated time to convergence; ratio: to the fastest; *_ms: mean\n"
         "per iteration on the critical GPU (wait: waiting for slower GPUs); drop_%: assignments dropped by\n"
         "capacity; moved_MB: policy movements per iteration; peak_GB: peak memory of the fullest GPU.\n";
  if (layout)
    out += "bubl_ms: waiting for the neighbouring pipeline stage; tp_ms: tensor-parallel collectives.\n";
  // Every policy gets the same budget; say how much of it each used.
  if (!results.empty()) {
    std::string used;
    for (const auto& r : results)
      used += fmt::format("{}{} {}", used.empty() ? "" : ", ", r.label, r.max_filled_slots);
    out += fmt::format("budget: every policy {} slots per GPU ({} per expert-parallel group) and {:.1f} GB per GPU; "
                       "slots filled at most: {}\n",
                       s.slots_per_gpu, results.front().slot_budget, s.cluster.gpu.hbm_bytes / 1e9, used);
  }
  out += band_text(band);
  if (!s.convergence.note.empty()) out += fmt::format("convergence: NOTE {}\n", s.convergence.note);
  if (beyond_data)
    out += fmt::format("convergence: some policies' mean survival is above {:.2f} %, the highest the {} figures were "
                       "measured at: their iterations to converge are extrapolated ({} form)\n",
                       100.0 * s.convergence.data_max_survival, s.convergence.fitted_for, s.convergence.form);
  for (const auto& r : results)
    if (r.oom) out += fmt::format("{}: {}\n", r.label, r.oom_report);
  if (!results.empty() && !results.back().compute_fallback.empty())
    out += fmt::format("compute: {}\n", results.back().compute_fallback);
  if (!results.empty() && !results.back().collectives_note.empty())
    out += fmt::format("collectives: {}\n", results.back().collectives_note);
  return out;
}

std::string timeline_json(const Scenario& s, const std::vector<PolicyResult>& results) {
  using nlohmann::json;
  json events = json::array();
  const int G = s.cluster.num_gpus();
  // Under pipeline parallelism a lane names its GPU's stage (stages are contiguous rank blocks).
  const int stages = s.layout.pipeline, per_stage = G / std::max(1, stages);
  for (std::size_t pi = 0; pi < results.size(); ++pi) {
    const int pid = static_cast<int>(pi);
    events.push_back({{"name", "process_name"}, {"ph", "M"}, {"pid", pid}, {"args", {{"name", results[pi].label}}}});
    events.push_back({{"name", "process_sort_index"}, {"ph", "M"}, {"pid", pid}, {"args", {{"sort_index", pid}}}});
    for (int g = 0; g < G; ++g) {
      for (int lane = 0; lane < 2; ++lane) {
        const int tid = 2 * g + lane;
        events.push_back({{"name", "thread_name"},
                          {"ph", "M"},
                          {"pid", pid},
                          {"tid", tid},
                          {"args", {{"name", fmt::format("GPU {}{} {}", g,
                                                         stages > 1 ? fmt::format(" stage {}", g / per_stage) : "",
                                                         lane == 0 ? "compute" : "communication")}}}});
        events.push_back({{"name", "thread_sort_index"}, {"ph", "M"}, {"pid", pid}, {"tid", tid}, {"args", {{"sort_index", tid}}}});
      }
    }
    for (const auto& e : results[pi].timeline) events.push_back(e);
  }
  return json{{"traceEvents", events}, {"displayTimeUnit", "ns"}, {"otherData", {{"scenario", s.name}}}}.dump() + "\n";
}

std::string file_safe(const std::string& s) {
  std::string out;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '-' || c == '+' || c == '_';
    out += ok ? c : '-';
  }
  if (out.find_first_not_of('.') == std::string::npos) return "unnamed";
  return out;
}

void write_file_atomic(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw InputError(fmt::format("{}: cannot write", tmp));
    f << content;
    f.flush();
    if (!f) throw InputError(fmt::format("{}: write failed", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw InputError(fmt::format("{}: cannot rename to {}: {}", tmp, path, ec.message()));
}

void write_outputs(const std::string& dir, const Scenario& s, const std::vector<PolicyResult>& results,
                   bool comparison) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw InputError(fmt::format("--out {}: cannot create directory: {}", dir, ec.message()));
  // Render both before writing either, so a failure leaves no mismatched pair.
  const std::string summary = summary_json(s, results).dump(2) + "\n";
  const std::string csv = iterations_csv(results);
  bool sampled = false;
  for (const auto& r : results) sampled = sampled || !r.expert_samples.empty();
  const std::string experts_path = (std::filesystem::path(dir) / "experts.csv").string();
  if (sampled) {
    write_file_atomic(experts_path, experts_csv(results));
  } else {
    std::filesystem::remove(experts_path, ec);  // a stale one would be plotted against these results
  }
  if (comparison) {
    nlohmann::json rows = summary_json(s, results)["results"];
    write_file_atomic((std::filesystem::path(dir) / "compare.csv").string(), compare_csv(results));
    write_file_atomic((std::filesystem::path(dir) / "compare.json").string(), rows.dump(2) + "\n");
  }
  write_file_atomic((std::filesystem::path(dir) / "iterations.csv").string(), csv);
  write_file_atomic((std::filesystem::path(dir) / "summary.json").string(), summary);
}

}  // namespace moesim
