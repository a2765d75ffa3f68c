// `moesim sweep`: the command line, and under mpirun the spread of runs over the ranks, whose run
// files are gathered on rank 0, which writes the table.
#include "app/sweep.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include "app/outputs.hpp"
#include "app/sweep/internal.hpp"
#include "core/error.hpp"

#ifdef MOESIM_HAVE_MPI
#include <mpi.h>
#endif

namespace moesim {

using namespace sweep_internal;

namespace {

constexpr const char* kSweepUsage =
    "moesim sweep STUDY.yaml [options]\n"
    "  -o [ --out ] DIR      directory for runs/<id>.json, study.csv and study.json (default: out/<study name>)\n"
    "  -j [ --jobs ] N       runs simulated at once on this machine (default: the number of cores; 1 per rank\n"
    "                        under MPI)\n"
    "  --details             also write each run's full results to runs/<id>/ (compare.csv, iterations.csv,\n"
    "                        experts.csv, summary.json) for scripts/plot.py and moesim report\n"
    "  --collect             compute nothing: build study.csv and study.json from the run files present\n"
    "  -q [ --quiet ]        print nothing but errors\n"
    "  -h [ --help ]         show this help\n"
    "Under mpirun (when built with MPI) the runs are spread over the ranks and rank 0 writes the table.\n"
    "A rerun skips the runs already done. The study keys are described in docs/tutorial.md.\n";

}  // namespace

#ifdef MOESIM_HAVE_MPI
bool sweep_has_mpi() { return true; }
#else
bool sweep_has_mpi() { return false; }
#endif

namespace {

// Launchers set these in every rank's environment; without one, MPI is not initialised at all
// (a singleton MPI_Init can be slow or fail where no launcher runs).
bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"})
    if (std::getenv(v) != nullptr) return true;
  return false;
}

#ifndef MOESIM_HAVE_MPI
int launcher_rank() {
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"}) {
    if (const char* s = std::getenv(v)) return std::atoi(s);
  }
  return 0;
}
#endif

#ifdef MOESIM_HAVE_MPI
class MpiSession {
 public:
  MpiSession() {
    if (!launched_by_mpi()) return;
    int provided = 0;
    // Only the main thread calls MPI; the workers simulate.
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) return;
    active_ = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiSession() {
    if (active_) MPI_Finalize();
  }
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  [[nodiscard]] bool active() const { return active_; }
  [[nodiscard]] int rank() const { return rank_; }
  [[nodiscard]] int size() const { return size_; }

  // Every rank's `blob`, on rank 0 (empty elsewhere).
  [[nodiscard]] std::vector<std::string> gather(const std::string& blob) const {
    if (blob.size() > static_cast<std::size_t>(INT_MAX)) throw std::runtime_error("MPI gather: result over 2 GiB");
    int len = static_cast<int>(blob.size());
    std::vector<int> lens(static_cast<std::size_t>(size_), 0);
    MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
    std::vector<int> displs(lens.size(), 0);
    long long total = 0;
    for (std::size_t i = 0; i < lens.size(); ++i) {
      displs[i] = static_cast<int>(total);
      total += lens[i];
    }
    if (rank_ == 0 && total > INT_MAX) throw std::runtime_error("MPI gather: results over 2 GiB");
    std::string all(rank_ == 0 ? static_cast<std::size_t>(total) : 0, '\0');
    MPI_Gatherv(blob.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR, 0, MPI_COMM_WORLD);
    std::vector<std::string> out;
    if (rank_ == 0)
      for (std::size_t i = 0; i < lens.size(); ++i)
        out.push_back(all.substr(static_cast<std::size_t>(displs[i]), static_cast<std::size_t>(lens[i])));
    return out;
  }
  [[nodiscard]] int broadcast(int value) const {
    MPI_Bcast(&value, 1, MPI_INT, 0, MPI_COMM_WORLD);
    return value;
  }

 private:
  bool active_ = false;
  int rank_ = 0;
  int size_ = 1;
};

// Records "<tag> <id> <bytes>\n<bytes>": R a run file, E an input error, X an internal error.
void put_record(std::string& blob, char tag, const std::string& id, const std::string& content) {
  blob += fmt::format("{} {} {}\n", tag, id, content.size());
  blob += content;
}

struct Record {
  char tag;
  std::string id;
  std::string content;
};

std::vector<Record> parse_records(const std::string& blob) {
  std::vector<Record> out;
  std::size_t at = 0;
  while (at < blob.size()) {
    const std::size_t nl = blob.find('\n', at);
    if (nl == std::string::npos) throw std::runtime_error("MPI gather: truncated record");
    std::istringstream head(blob.substr(at, nl - at));
    Record r{};
    std::size_t len = 0;
    head >> r.tag >> r.id >> len;
    if (!head || nl + 1 + len > blob.size()) throw std::runtime_error("MPI gather: malformed record");
    r.content = blob.substr(nl + 1, len);
    at = nl + 1 + len;
    out.push_back(std::move(r));
  }
  return out;
}
#endif

}  // namespace

int cmd_sweep(const std::vector<std::string>& args) {
  // Parsed by hand: the tests link this file without Boost.Program_options.
  std::string study_file, out_dir;
  int jobs_given = 0;
  bool quiet = false, collect_only = false, details = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i], value;
    const auto eq = a.find('=');
    const bool has_eq = a.rfind("--", 0) == 0 && eq != std::string::npos;
    if (has_eq) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
    }
    auto need_value = [&]() -> std::string {
      if (has_eq) return value;
      if (i + 1 >= args.size()) throw InputError(fmt::format("moesim sweep: {} needs a value", a));
      return args[++i];
    };
    if (a == "--help" || a == "-h") {
      std::cout << kSweepUsage;
      return 0;
    } else if (a == "--out" || a == "-o") {
      out_dir = need_value();
    } else if (a == "--jobs" || a == "-j") {
      const std::string v = need_value();
      std::size_t used = 0;
      try {
        jobs_given = std::stoi(v, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != v.size() || jobs_given < 1) {
        throw InputError(fmt::format("moesim sweep: --jobs '{}': expected an integer of at least 1", v));
      }
    } else if (a == "--details" && !has_eq) {
      details = true;
    } else if (a == "--collect" && !has_eq) {
      collect_only = true;
    } else if ((a == "--quiet" || a == "-q") && !has_eq) {
      quiet = true;
    } else if (a.size() > 1 && a[0] == '-') {
      throw InputError(fmt::format("moesim sweep: unknown option '{}'; options: --out, --jobs, --details, --collect, --quiet, "
                                   "--help",
                                   args[i]));
    } else if (study_file.empty()) {
      study_file = a;
    } else {
      throw InputError(fmt::format("moesim sweep: one study at a time; '{}' is a second one", a));
    }
  }
  if (study_file.empty()) throw InputError("moesim sweep: missing STUDY.yaml (see moesim sweep --help)");

  int rank = 0, ranks = 1;
#ifdef MOESIM_HAVE_MPI
  MpiSession mpi;
  if (mpi.active()) {
    rank = mpi.rank();
    ranks = mpi.size();
  }
#else
  if (launched_by_mpi() && launcher_rank() > 0) {
    // Several copies would all compute every run into the same folder: rank 0 alone does it.
    std::cerr << fmt::format("moesim sweep: built without MPI; rank {} leaves the sweep to rank 0\n", launcher_rank());
    return 0;
  }
#endif
  const bool root = rank == 0;
  const auto started = std::chrono::steady_clock::now();

  const Study study = load_study(study_file);
  const std::string out = !out_dir.empty() ? out_dir : "out/" + study.name;
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const int jobs = jobs_given > 0 ? jobs_given : ranks > 1 ? 1 : static_cast<int>(cores);

  SweepReport report;
  if (!collect_only) {
    if (root && !quiet) {
      std::cout << fmt::format("sweep {}: {} point{} x {} seed{} = {} runs of {} polic{}, --jobs {}{}\n", study.name,
                               study.points.size(), study.points.size() == 1 ? "" : "s", study.seeds.size(),
                               study.seeds.size() == 1 ? "" : "s", study.runs.size(), study.policy_labels.size(),
                               study.policy_labels.size() == 1 ? "y" : "ies", jobs,
                               ranks > 1 ? fmt::format(" on each of {} MPI ranks", ranks) : "");
      std::cout.flush();
    }
    SweepOptions so;
    so.out = out;
    so.jobs = jobs;
    so.details = details;
    so.rank = rank;
    so.ranks = ranks;
    so.progress = !quiet;
#ifdef MOESIM_HAVE_MPI
    if (ranks > 1) {
      // Each rank sends its run files to rank 0 (so no shared file system is needed) along with
      // its error, if any; rank 0 writes what it lacks, reports and decides the exit status.
      std::string blob;
      try {
        report = run_sweep(study, so);
      } catch (const InputError& e) {
        put_record(blob, 'E', std::to_string(rank), e.what());
      } catch (const std::exception& e) {
        put_record(blob, 'X', std::to_string(rank), e.what());
      }
      for (const auto& r : study.runs) {
        if (static_cast<int>(r.index % static_cast<std::size_t>(ranks)) != rank) continue;
        if (!read_complete_run(study, out, r).is_null()) put_record(blob, 'R', r.id, read_text(run_file_path(out, r)));
      }
      const std::vector<std::string> gathered = mpi.gather(blob);
      std::string input_error, internal_error;
      if (root) {
        std::map<std::string, const StudyRun*> by_id;
        for (const auto& r : study.runs) by_id[r.id] = &r;
        for (const auto& part : gathered) {
          for (const Record& rec : parse_records(part)) {
            if (rec.tag == 'E' && input_error.empty()) input_error = rec.content;
            if (rec.tag == 'X' && internal_error.empty()) internal_error = rec.content;
            if (rec.tag != 'R') continue;
            auto it = by_id.find(rec.id);
            if (it == by_id.end()) continue;
            if (read_complete_run(study, out, *it->second).is_null())
              write_file_atomic(run_file_path(out, *it->second), rec.content);
          }
        }
      }
      const int rc = mpi.broadcast(!internal_error.empty() ? 1 : !input_error.empty() ? 2 : 0);
      if (!root) return rc;
      if (!internal_error.empty()) throw std::runtime_error(internal_error);
      if (!input_error.empty()) throw InputError(input_error);
    } else {
      report = run_sweep(study, so);
    }
#else
    report = run_sweep(study, so);
#endif
  }
  if (!root) return 0;
  const StudyTable table = write_study_table(study, out);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (!table.missing.empty()) {
    std::cerr << fmt::format("moesim sweep: {} of {} runs have no result yet (first: {}); the table leaves them out: "
                             "run the sweep without --collect to compute them\n",
                             table.missing.size(), study.runs.size(), table.missing.front());
  }
  if (!quiet) {
    if (!collect_only && ranks == 1) {
      std::cout << fmt::format("{} run{} computed, {} already done, in {:.2f} s\n", report.computed.size(),
                               report.computed.size() == 1 ? "" : "s", report.skipped.size(), seconds);
    } else if (!collect_only) {
      std::cout << fmt::format("{} runs over {} MPI ranks in {:.2f} s\n", study.runs.size(), ranks, seconds);
    }
    std::cout << fmt::format("wrote {0}/study.csv and {0}/study.json: {1} rows from {2} of {3} runs\n", out, table.rows,
                             study.runs.size() - table.missing.size(), study.runs.size());
  }
  return 0;
}

}  // namespace moesim
