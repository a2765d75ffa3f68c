#include "app/outputs.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

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

nlohmann::json results_json(const std::vector<PolicyResult>& results) {
  using nlohmann::json;
  json res = json::array();
  const double best = best_ttc_ns(results);
  const ConvergenceBand band = convergence_band(results);
  for (std::size_t ri = 0; ri < results.size(); ++ri) {
    const PolicyResult& r = results[ri];
    json phases;
    for (int i = 0; i < kNumPhases; ++i) phases[std::string(to_string(static_cast<Phase>(i))) + "_ns"] = r.mean_phase_ns[i];
    json j{{"label", r.label},
           {"policy", r.name},
           {"status", r.oom ? "oom" : r.converged ? "converged" : "not_converged"},
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
  json out{{"results", res}};
  if (!band.forms.empty()) out["convergence_band"] = band_json(band);
  return out;
}

nlohmann::json summary_json(const Scenario& s, const std::vector<PolicyResult>& results) {
  using nlohmann::json;
  json scen = s.to_json();
  json pols = json::array();
  for (const PolicyResult& r : results)
    pols.push_back({{"label", r.label}, {"name", r.name}, {"parameters", json(r.parameters)}});
  scen["policies"] = pols;
  json out = results_json(results);
  out["moesim_version"] = "0.1.0";
  out["scenario"] = scen;
  return out;
}

std::string iterations_csv(const std::vector<PolicyResult>& results) {
  std::string out =
      "label,iteration,iteration_ns,compute_ns,a2a_ns,grad_sync_ns,optimizer_ns,movement_ns,wait_ns,"
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
  std::string out = "label,iteration,layer,expert,tokens_routed,tokens_processed,replicas\n";
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

std::string csv_cell(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

namespace {
// For both JSON flavours: the rows keep their column order (ordered_json), summaries do not.
template <class Json>
std::string any_json_cell(const Json& v) {
  if (v.is_null()) return "";
  if (v.is_boolean()) return v.template get<bool>() ? "true" : "false";
  if (v.is_number_integer()) return fmt::format("{}", v.template get<std::int64_t>());
  if (v.is_number_unsigned()) return fmt::format("{}", v.template get<std::uint64_t>());
  if (v.is_number_float()) return fmt::format("{}", v.template get<double>());
  if (v.is_string()) return csv_cell(v.template get<std::string>());
  return csv_cell(v.dump());
}

}  // namespace

std::string json_cell(const nlohmann::json& v) { return any_json_cell(v); }

std::string result_status(const nlohmann::json& result) {
  // From the flags, not the "status" field: run files written before it existed are still read.
  if (result.value("oom", false)) return "oom";
  return result.value("converged", false) ? "converged" : "not_converged";
}

nlohmann::ordered_json compare_row(const nlohmann::json& x, bool banded) {
  using nlohmann::json;
  nlohmann::ordered_json row;
  const std::string status = result_status(x);
  const bool ok = status == "converged";
  row["label"] = x.at("label");
  row["policy"] = x.at("policy");
  row["status"] = status;
  for (const char* m : {"iterations_to_converge", "time_to_convergence_s", "ratio_to_best"})
    row[m] = ok ? x.value(m, json(nullptr)) : json(nullptr);
  row["mean_iteration_ns"] = x.at("mean_iteration_ns");
  row["p99_iteration_ns"] = x.at("p99_iteration_ns");
  for (int i = 0; i < kNumPhases; ++i) {
    const std::string key = std::string(to_string(static_cast<Phase>(i))) + "_ns";
    row[key] = x.at("mean_phase_ns").at(key);
  }
  row["exposed_comm_ns"] = x.at("mean_exposed_comm_ns");
  row["drop_rate"] = x.at("drop_rate");
  row["moved_bytes_per_iteration"] = x.at("mean_moved_bytes_per_iteration");
  row["a2a_bytes_per_iteration"] = x.at("mean_a2a_bytes_per_iteration");
  row["peak_gpu_memory_bytes"] = x.at("peak_gpu_memory_bytes");
  if (banded) {
    const json band = x.value("convergence_band", json::object());
    row["min_time_to_convergence_s"] = band.value("min_time_to_convergence_s", json(nullptr));
    row["max_time_to_convergence_s"] = band.value("max_time_to_convergence_s", json(nullptr));
  }
  return row;
}

std::vector<std::string> compare_columns(bool banded) {
  std::vector<std::string> c{"label", "policy", "status", "iterations_to_converge", "time_to_convergence_s",
                             "ratio_to_best", "mean_iteration_ns", "p99_iteration_ns"};
  for (int i = 0; i < kNumPhases; ++i) c.push_back(std::string(to_string(static_cast<Phase>(i))) + "_ns");
  for (const char* k : {"exposed_comm_ns", "drop_rate", "moved_bytes_per_iteration", "a2a_bytes_per_iteration",
                        "peak_gpu_memory_bytes"})
    c.emplace_back(k);
  if (banded) c.insert(c.end(), {"min_time_to_convergence_s", "max_time_to_convergence_s"});
  return c;
}

nlohmann::ordered_json compare_rows(const nlohmann::json& summary) {
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  const bool banded = summary.contains("convergence_band");
  for (const auto& x : summary.at("results")) rows.push_back(compare_row(x, banded));
  return rows;
}

std::string rows_csv(const nlohmann::ordered_json& rows) {
  if (rows.empty()) return "";
  std::string out;
  for (const auto& [key, unused] : rows.front().items()) {
    (void)unused;
    if (!out.empty()) out += ',';
    out += csv_cell(key);
  }
  out += "\n";
  for (const auto& row : rows) {
    bool first = true;
    for (const auto& [key, value] : row.items()) {
      (void)key;
      if (!first) out += ',';
      first = false;
      out += any_json_cell(value);
    }
    out += "\n";
  }
  return out;
}

std::string compare_csv(const std::vector<PolicyResult>& results) {
  return rows_csv(compare_rows(results_json(results)));
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

std::vector<std::pair<std::string, std::string>> output_files(const Scenario& s,
                                                              const std::vector<PolicyResult>& results,
                                                              bool comparison) {
  const nlohmann::json summary = summary_json(s, results);
  std::vector<std::pair<std::string, std::string>> files;
  files.emplace_back("summary.json", summary.dump(2) + "\n");
  files.emplace_back("iterations.csv", iterations_csv(results));
  bool sampled = false;
  for (const auto& r : results) sampled = sampled || !r.expert_samples.empty();
  if (sampled) files.emplace_back("experts.csv", experts_csv(results));
  if (comparison) {
    // Both from the same rows, so the CSV and the JSON carry the same fields under the same names.
    const nlohmann::ordered_json rows = compare_rows(summary);
    files.emplace_back("compare.csv", rows_csv(rows));
    files.emplace_back("compare.json", rows.dump(2) + "\n");
  }
  return files;
}

void write_outputs(OutputFolder& folder, const Scenario& s, const std::vector<PolicyResult>& results,
                   bool comparison) {
  for (const auto& [name, content] : output_files(s, results, comparison)) folder.write(name, content);
}

void write_outputs(const std::string& dir, const Scenario& s, const std::vector<PolicyResult>& results,
                   bool comparison) {
  OutputFolder folder(dir, output_folder_names());
  write_outputs(folder, s, results, comparison);
  folder.commit();
}

}  // namespace moesim
