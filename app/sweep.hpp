#pragma once
// Studies: a base scenario, a grid of scenario overrides, the policies and the seeds. A point is
// one combination of grid values; a run is (point, seed): one run_scenario call for every policy
// of the point, written atomically to OUT/runs/<id>.json. A rerun skips complete run files, so a
// killed sweep resumes; the table (OUT/study.csv, OUT/study.json) is built from the run files
// only, which makes it independent of --jobs, of MPI ranks and of interruptions.
#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "app/scenario.hpp"

namespace moesim {

struct StudyPoint {
  std::size_t index = 0;
  // (grid key, value as written), in the grid's key order.
  std::vector<std::pair<std::string, std::string>> values;
  // `key=value` assignments for load_scenario: the study's `set` first, then the grid's.
  std::vector<std::string> overrides;
};

struct StudyRun {
  std::size_t index = 0;  // point-major, then the seeds in the study's order
  std::size_t point = 0;
  std::uint64_t seed = 0;
  // Readable part from the grid values and the seed, plus a hash of the point's grid
  // assignments and the seed: stable when grid keys are reordered or values added.
  std::string id;
};

struct Study {
  std::string file;
  std::string text;  // the study file as read: each run re-parses it (no YAML node is shared by threads)
  std::string name;
  std::string description;
  std::string base;  // the base scenario, relative paths resolved against the study file
  std::vector<std::string> fixed;  // `set:` as key=value
  std::vector<std::string> grid_keys;
  std::vector<StudyPoint> points;
  std::vector<std::uint64_t> seeds;
  bool own_policies = false;  // `policies` / `policy_grid` given: they replace the base's list
  std::vector<std::string> policy_labels;
  // Policy parameters set explicitly anywhere in the policy list: one table column each, filled
  // with the policy's resolved value (empty where the policy has no such parameter).
  std::vector<std::string> param_columns;
  // Everything else a run's result depends on (base file contents, `set`, policies): a run file
  // with another fingerprint is stale and recomputed.
  std::string fingerprint;
  std::vector<StudyRun> runs;

  // The run's scenario, parsed afresh (safe to call from several threads at once).
  [[nodiscard]] Scenario scenario(const StudyRun& r) const;
};

// A study's size: every point's scenario is loaded (and checked) before anything runs, so a grid
// of 10^8 points would take minutes and gigabytes before a word is printed.
inline constexpr std::uint64_t kMaxStudyPoints = 10000;
inline constexpr std::uint64_t kMaxStudyRuns = 100000;  // points x seeds

// Reads and validates a study: strict keys, and every point's scenario is loaded once, so a bad
// grid value fails before anything runs (the error names the study file, line and key).
[[nodiscard]] Study load_study(const std::string& file);
[[nodiscard]] Study load_study_text(const std::string& text, const std::string& origin);

struct SweepOptions {
  std::string out;
  int jobs = 1;
  bool progress = true;  // a bar on stderr when it is a terminal
  // Also write each run's full outputs (write_outputs) to <out>/runs/<id>/. Under MPI each rank
  // writes the runs it computed, so the folders gather in one place only on a shared filesystem.
  bool details = false;
  // Runs assigned to this process: run i belongs to rank i % ranks (MPI); 0 / 1 when alone.
  int rank = 0;
  int ranks = 1;
};

struct SweepReport {
  std::vector<std::string> computed;  // run ids computed now, in run order
  std::vector<std::string> skipped;   // already complete
};

// Computes the runs of this rank that have no complete result file. Throws the error of the
// lowest failed run after the runs in flight have finished (their results are kept).
SweepReport run_sweep(const Study& study, const SweepOptions& opts);

[[nodiscard]] std::string run_file_path(const std::string& out, const StudyRun& r);
// The run file's JSON when it is complete and belongs to this study (fingerprint), else null.
[[nodiscard]] nlohmann::json read_complete_run(const Study& study, const std::string& out, const StudyRun& r);

struct StudyTable {
  std::string csv;
  nlohmann::json json;
  std::size_t rows = 0;
  std::vector<std::string> missing;  // run ids without a complete result
};
// One row per (point, seed, policy) from the run files; missing runs are left out.
[[nodiscard]] StudyTable collect_study(const Study& study, const std::string& out);
// Writes OUT/study.csv and OUT/study.json atomically.
StudyTable write_study_table(const Study& study, const std::string& out);

// Whether this build can spread a sweep over MPI ranks.
[[nodiscard]] bool sweep_has_mpi();

// `moesim sweep STUDY.yaml [--out DIR] [--jobs N] [--collect] [--quiet]`.
int cmd_sweep(const std::vector<std::string>& args);

}  // namespace moesim
