#include "app/outputs.hpp"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>

#include "sim/error.hpp"

namespace moesim {

nlohmann::json summary_json(const Scenario& s, const std::vector<PolicyResult>& results) {
  using nlohmann::json;
  json scen = s.to_json();
  json pols = json::array();
  json res = json::array();
  double best = 0.0;
  for (const auto& r : results)
    if (r.converged && (best == 0.0 || static_cast<double>(r.time_to_convergence_ns) < best))
      best = static_cast<double>(r.time_to_convergence_ns);
  for (const auto& r : results) {
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
           {"oom", r.oom},
           {"oom_iteration", r.oom ? json(r.oom_iteration) : json(nullptr)},
           {"oom_report", r.oom ? json(r.oom_report) : json(nullptr)}};
    res.push_back(j);
  }
  scen["policies"] = pols;
  return json{{"moesim_version", "0.1.0"}, {"scenario", scen}, {"results", res}};
}

std::string iterations_csv(const std::vector<PolicyResult>& results) {
  std::string out =
      "policy,iteration,iteration_ns,compute_ns,a2a_ns,grad_sync_ns,optimizer_ns,movement_ns,wait_ns,"
      "critical_gpu,tokens_routed,tokens_dropped,survival,a2a_bytes,grad_sync_bytes,moved_bytes,"
      "expert_load_imbalance,progress,end_ns\n";
  for (const auto& r : results) {
    for (const auto& row : r.rows) {
      const IterationResult& x = row.result;
      fmt::format_to(std::back_inserter(out), "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n", r.label,
                     row.iteration, x.iteration_ns, x.phase_ns[0], x.phase_ns[1], x.phase_ns[2], x.phase_ns[3],
                     x.phase_ns[4], x.phase_ns[5], x.critical_gpu, x.tokens_routed, x.tokens_dropped, x.survival,
                     x.a2a_bytes, x.grad_sync_bytes, x.moved_bytes, x.expert_compute_imbalance, row.progress,
                     row.end_ns);
    }
  }
  return out;
}

std::string summary_table(const Scenario& s, const std::vector<PolicyResult>& results) {
  std::string out = fmt::format("scenario {} ({} x {} GPUs {}, model {}, {} slots/GPU, seed {})\n", s.name,
                                s.cluster.nodes, s.cluster.gpus_per_node, s.cluster.gpu.name, s.model.name,
                                s.slots_per_gpu, s.seed);
  out += fmt::format("{:<18} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>6}\n", "policy",
                     "iters", "ttc_s", "iter_ms", "comp_ms", "a2a_ms", "sync_ms", "opt_ms", "move_ms", "wait_ms",
                     "drop_%", "imbal");
  for (const auto& r : results) {
    auto ms = [](double ns) { return ns / 1e6; };
    out += fmt::format("{:<18} {:>9} {:>10} {:>9.3f} {:>9.3f} {:>9.3f} {:>9.3f} {:>9.3f} {:>9.3f} {:>9.3f} {:>7.2f} {:>6.2f}\n",
                       r.label, r.converged ? std::to_string(r.iterations_to_converge) : "-",
                       r.oom ? "OOM" : r.converged ? fmt::format("{:.3f}", ns_to_s(r.time_to_convergence_ns)) : "not conv.",
                       ms(r.mean_iteration_ns), ms(r.mean_phase_ns[0]), ms(r.mean_phase_ns[1]),
                       ms(r.mean_phase_ns[2]), ms(r.mean_phase_ns[3]), ms(r.mean_phase_ns[4]),
                       ms(r.mean_phase_ns[5]), 100.0 * r.drop_rate, r.mean_expert_imbalance);
  }
  out += "iters: iterations to converge; ttc_s: simulated time to convergence (s); *_ms: mean per iteration on the\n"
         "critical GPU; wait: time spent waiting for slower GPUs; drop_%: assignments dropped by capacity;\n"
         "imbal: max/mean expert tokens per GPU.\n";
  for (const auto& r : results)
    if (r.oom) out += fmt::format("{}: {}\n", r.label, r.oom_report);
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

void write_outputs(const std::string& dir, const Scenario& s, const std::vector<PolicyResult>& results) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw InputError(fmt::format("--out {}: cannot create directory: {}", dir, ec.message()));
  // Render both before writing either, so a failure leaves no mismatched pair.
  const std::string summary = summary_json(s, results).dump(2) + "\n";
  const std::string csv = iterations_csv(results);
  write_file_atomic((std::filesystem::path(dir) / "iterations.csv").string(), csv);
  write_file_atomic((std::filesystem::path(dir) / "summary.json").string(), summary);
}

}  // namespace moesim
