// Execution and resume: the runs of this rank without a complete run file, simulated on a pool of
// threads, each written atomically to OUT/runs/<id>.json.
#include "app/sweep.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <filesystem>
#include <map>
#include <mutex>
#include <thread>

#include "app/outputs.hpp"
#include "app/progress.hpp"
#include "app/runner.hpp"
#include "app/sweep/internal.hpp"
#include "core/error.hpp"

namespace moesim {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

}  // namespace

using namespace sweep_internal;

std::string run_file_path(const std::string& out, const StudyRun& r) {
  return (fs::path(out) / "runs" / (r.id + ".json")).string();
}

json read_complete_run(const Study& study, const std::string& out, const StudyRun& r) {
  const std::string path = run_file_path(out, r);
  if (!fs::is_regular_file(path)) return json(nullptr);
  json j = json::parse(read_text(path), nullptr, false);
  // A run file is complete when it parses, carries the completion marker and belongs to this
  // study's run; anything else is recomputed.
  if (!j.is_object() || j.value("complete", false) != true || j.value("format", "") != kRunFormat ||
      j.value("id", "") != r.id || j.value("fingerprint", "") != study.fingerprint) {
    return json(nullptr);
  }
  const json& res = j["results"];
  if (!res.is_array() || res.size() != study.policy_labels.size()) return json(nullptr);
  for (std::size_t i = 0; i < res.size(); ++i)
    if (!res[i].is_object() || res[i].value("label", "") != study.policy_labels[i]) return json(nullptr);
  return j;
}

namespace {

std::string run_file_content(const Study& study, const StudyRun& r, const Scenario& s,
                             const std::vector<PolicyResult>& results) {
  json summary = summary_json(s, results);
  json grid = json::object();
  for (const auto& [k, v] : study.points[r.point].values) grid[k] = v;
  json j{{"format", kRunFormat},
         {"version", kRunFormatVersion},
         {"study", study.name},
         {"id", r.id},
         {"point", r.point},
         {"grid", grid},
         {"overrides", study.points[r.point].overrides},
         {"seed", r.seed},
         {"fingerprint", study.fingerprint},
         {"scenario", summary["scenario"]},
         {"results", summary["results"]},
         {"complete", true}};
  return j.dump(1) + "\n";
}

}  // namespace

SweepReport run_sweep(const Study& study, const SweepOptions& opts) {
  std::error_code ec;
  fs::create_directories(fs::path(opts.out) / "runs", ec);
  if (ec) throw InputError(fmt::format("--out {}: cannot create directory: {}", opts.out, ec.message()));
  const int ranks = std::max(opts.ranks, 1);
  std::vector<const StudyRun*> mine;
  for (const auto& r : study.runs)
    if (static_cast<int>(r.index % static_cast<std::size_t>(ranks)) == opts.rank) mine.push_back(&r);

  // Temporaries of sweeps that were killed; a live sweep's own are kept (remove_stale_temporaries).
  remove_stale_temporaries(opts.out);
  remove_stale_temporaries((fs::path(opts.out) / "runs").string());

  SweepReport report;
  std::vector<const StudyRun*> todo;
  for (const StudyRun* r : mine) {
    if (read_complete_run(study, opts.out, *r).is_null()) {
      todo.push_back(r);
    } else {
      report.skipped.push_back(r->id);
    }
  }
  const std::string title = ranks > 1 ? fmt::format("sweep (rank {} of {})", opts.rank, ranks) : "sweep";
  Progress bar(title, static_cast<std::int64_t>(mine.size()), "runs", opts.progress && stderr_is_terminal(), stderr);
  bar.skip(static_cast<std::int64_t>(report.skipped.size()));

  std::atomic<std::size_t> next{0};
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<char> done(todo.size(), 0);
  std::map<std::size_t, std::exception_ptr> failures;  // by run index: the lowest is reported
  auto worker = [&] {
    while (!stop.load()) {
      const std::size_t k = next.fetch_add(1);
      if (k >= todo.size()) return;
      const StudyRun& r = *todo[k];
      try {
        const Scenario s = study.scenario(r);
        RunOptions ro;
        ro.keep_rows = opts.details;
        if (opts.details) {
          ro.expert_stats_every = 1;
          ro.expert_stats_max_samples = auto_expert_stats_samples(s);
        }
        const std::vector<PolicyResult> results = run_scenario(s, ro);
        // The details first: a run counts as done once its run file exists, so a killed sweep never
        // leaves a done run without its details. Each is complete or absent (OutputFolder,
        // AtomicFile), and a rerun replaces a details folder left without its run file.
        if (opts.details) {
          OutputFolder folder((fs::path(opts.out) / "runs" / r.id).string(), output_folder_names(), false);
          write_outputs(folder, s, results, true);
          folder.commit();
        }
        write_file_atomic(run_file_path(opts.out, r), run_file_content(study, r, s, results));
        done[k] = 1;
        bar.advance();
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        failures.emplace(r.index, std::current_exception());
        stop = true;
      }
    }
  };
  const std::size_t threads = std::min<std::size_t>(static_cast<std::size_t>(std::max(opts.jobs, 1)), todo.size());
  if (threads <= 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    for (std::size_t t = 0; t < threads; ++t) pool.emplace_back(worker);
    for (auto& t : pool) t.join();
  }
  bar.finish();
  for (std::size_t k = 0; k < todo.size(); ++k)
    if (done[k]) report.computed.push_back(todo[k]->id);
  if (!failures.empty()) {
    const auto& [index, error] = *failures.begin();
    const StudyRun& r = study.runs[index];
    try {
      std::rethrow_exception(error);
    } catch (const InputError& e) {
      throw InputError(fmt::format("{}: run {} (point {}, seed {}): {}", study.file, r.id, r.point, r.seed, e.what()));
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("{}: run {} (point {}, seed {}): {}", study.file, r.id, r.point, r.seed,
                                           e.what()));
    }
  }
  return report;
}

}  // namespace moesim
