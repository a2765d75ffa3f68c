// Studies: grid expansion and stable ids, resume after a kill, tables independent of --jobs and
// of MPI ranks, strict study errors, and the progress bar.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "app/progress.hpp"
#include "app/sweep.hpp"
#include "core/error.hpp"
#include "tests/file_fixture.hpp"

namespace fs = std::filesystem;
using namespace moesim;

namespace {

fs::path fresh_dir(const std::string& name) {
  // Per process, so that concurrent test runs do not share folders.
  fs::path d = fs::temp_directory_path() / ("moesim_sweep_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

using moesim::testing::read_file;

void write_file(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary);
  f << text;
}

const std::string kBase = std::string(MOESIM_SOURCE_DIR) + "/scenarios/swiftmoe-gpt-small.yaml";

// 2 x 2 grid, 2 seeds, 2 policies, 20 iterations: 8 runs of a few milliseconds each.
std::string small_study() {
  return "name: tiny\n"
         "base: " + kBase + "\n"
         "set:\n"
         "  run.max_iterations: 20\n"
         "grid:\n"
         "  trace.skew: [0.5, 1.0]\n"
         "  cluster.nodes: [8, 16]\n"
         "policies:\n"
         "  - static:capacity_factor=1\n"
         "  - {name: flexmoe, label: flexmoe-10, interval: 10}\n"
         "seeds: [1, 2]\n";
}

fs::path write_study(const fs::path& dir, const std::string& text) {
  fs::path f = dir / "study.yaml";
  write_file(f, text);
  return f;
}

std::string error_of(const std::string& text, const fs::path& dir) {
  try {
    (void)load_study(write_study(dir, text).string());
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

int shell(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

}  // namespace

TEST_CASE("a study expands its grid into points and runs with stable ids", "[sweep]") {
  const fs::path dir = fresh_dir("expand");
  const Study st = load_study(write_study(dir, small_study()).string());
  REQUIRE(st.points.size() == 4);
  REQUIRE(st.runs.size() == 8);
  CHECK(st.grid_keys == std::vector<std::string>{"trace.skew", "cluster.nodes"});
  // The last grid key varies fastest; `set` comes before the grid's assignments.
  CHECK(st.points[1].overrides ==
        std::vector<std::string>{"run.max_iterations=20", "trace.skew=0.5", "cluster.nodes=16"});
  CHECK(st.points[2].values[0].second == "1.0");
  CHECK(st.policy_labels == std::vector<std::string>{"static:capacity_factor=1", "flexmoe-10"});
  CHECK(st.param_columns == std::vector<std::string>{"capacity_factor", "interval"});
  // Runs: point-major, then seeds in order.
  CHECK(st.runs[3].point == 1);
  CHECK(st.runs[3].seed == 2);
  // Ids are pinned: a change here orphans every existing result folder.
  CHECK(st.runs[0].id == "nodes-8_skew-0.5_seed-1-f9286437e662");
  CHECK(st.runs[7].id == "nodes-16_skew-1.0_seed-2-e61516c8ba27");

  // Reordering the grid's keys, adding a value, or changing the fixed overrides keeps the ids.
  std::string other = "base: " + kBase +
                      "\nset: {run.max_iterations: 30}\ngrid:\n  cluster.nodes: [8, 16, 4]\n  trace.skew: [0.5, 1.0]\n"
                      "seeds: [2, 1]\npolicies: [static]\n";
  const Study st2 = load_study(write_study(fresh_dir("expand2"), other).string());
  std::set<std::string> ids2;
  for (const auto& r : st2.runs) ids2.insert(r.id);
  for (const auto& r : st.runs) CHECK(ids2.count(r.id) == 1);
  CHECK(st2.fingerprint != st.fingerprint);  // other fixed overrides and policies: results are stale
}

TEST_CASE("policy_grid expands policy parameters into labelled entries", "[sweep]") {
  const fs::path dir = fresh_dir("pgrid");
  const Study st = load_study(write_study(dir, "base: " + kBase +
                                                   "\npolicy_grid:\n"
                                                   "  static: {capacity_factor: [1.0, 2.0], min_capacity: 2}\n"
                                                   "  flexmoe: {interval: [10, 50], capacity_factor: [1.0, 2.0]}\n")
                                          .string());
  CHECK(st.policy_labels == std::vector<std::string>{"static:capacity_factor=1.0:min_capacity=2",
                                                     "static:capacity_factor=2.0:min_capacity=2",
                                                     "flexmoe:interval=10:capacity_factor=1.0",
                                                     "flexmoe:interval=10:capacity_factor=2.0",
                                                     "flexmoe:interval=50:capacity_factor=1.0",
                                                     "flexmoe:interval=50:capacity_factor=2.0"});
  CHECK(st.param_columns == std::vector<std::string>{"capacity_factor", "min_capacity", "interval"});
  // No grid and no seeds: one point, the base scenario's seed.
  REQUIRE(st.runs.size() == 1);
  CHECK(st.runs[0].seed == 1);
  CHECK(st.scenario(st.runs[0]).policies.size() == 6);
}

TEST_CASE("a sweep resumes: only missing runs are computed and the table is unchanged", "[sweep]") {
  const fs::path dir = fresh_dir("resume");
  const Study st = load_study(write_study(dir, small_study()).string());
  SweepOptions so;
  so.out = (dir / "out").string();
  so.jobs = 2;
  so.progress = false;
  const SweepReport first = run_sweep(st, so);
  CHECK(first.computed.size() == 8);
  CHECK(first.skipped.empty());
  const StudyTable t1 = write_study_table(st, so.out);
  CHECK(t1.rows == 8 * 2);
  CHECK(t1.missing.empty());
  const std::string csv1 = read_file(dir / "out" / "study.csv");
  const std::string json1 = read_file(dir / "out" / "study.json");
  CHECK(csv1 == t1.csv);

  // A killed sweep: one result lost, one half-written (no completion marker), a temp file left.
  fs::remove(run_file_path(so.out, st.runs[5]));
  const std::string truncated = read_file(run_file_path(so.out, st.runs[2]));
  write_file(run_file_path(so.out, st.runs[2]), truncated.substr(0, truncated.size() / 2));
  write_file(run_file_path(so.out, st.runs[2]) + ".tmp", "{");
  // --collect on the damaged folder leaves the two runs out.
  const StudyTable partial = collect_study(st, so.out);
  CHECK(partial.missing == std::vector<std::string>{st.runs[2].id, st.runs[5].id});
  CHECK(partial.rows == 6 * 2);

  const auto untouched_mtime = fs::last_write_time(run_file_path(so.out, st.runs[0]));
  const SweepReport second = run_sweep(st, so);
  CHECK(second.computed == std::vector<std::string>{st.runs[2].id, st.runs[5].id});
  CHECK(second.skipped.size() == 6);
  CHECK(fs::last_write_time(run_file_path(so.out, st.runs[0])) == untouched_mtime);
  (void)write_study_table(st, so.out);
  CHECK(read_file(dir / "out" / "study.csv") == csv1);
  CHECK(read_file(dir / "out" / "study.json") == json1);

  // A third run computes nothing.
  CHECK(run_sweep(st, so).computed.empty());
}

TEST_CASE("the study table does not depend on --jobs", "[sweep]") {
  const fs::path dir = fresh_dir("jobs");
  const Study st = load_study(write_study(dir, small_study()).string());
  std::string tables[2];
  for (int jobs : {1, 2}) {
    SweepOptions so;
    so.out = (dir / ("out" + std::to_string(jobs))).string();
    so.jobs = jobs;
    so.progress = false;
    (void)run_sweep(st, so);
    tables[jobs - 1] = write_study_table(st, so.out).csv;
  }
  CHECK(tables[0] == tables[1]);
  // One row per (point, seed, policy) in that order, the grid values and parameters as columns.
  std::istringstream lines(tables[0]);
  std::string header, row1, row2, row3;
  std::getline(lines, header);
  std::getline(lines, row1);
  std::getline(lines, row2);
  std::getline(lines, row3);
  CHECK(header.rfind("point,trace.skew,cluster.nodes,seed,label,policy,capacity_factor,interval,status,"
                     "iterations_to_converge,time_to_convergence_s,ratio_to_best,mean_iteration_ns,",
                     0) == 0);
  CHECK(row1.rfind("0,0.5,8,1,static:capacity_factor=1,static,1,,not_converged,,,,", 0) == 0);
  CHECK(row2.rfind("0,0.5,8,1,flexmoe-10,flexmoe,1,10,not_converged,", 0) == 0);
  CHECK(row3.rfind("0,0.5,8,2,static:capacity_factor=1,static,", 0) == 0);
}

TEST_CASE("study errors name the study file, line and key", "[sweep]") {
  const fs::path dir = fresh_dir("errors");
  const std::string f = (dir / "study.yaml").string();
  const std::string base = "base: " + kBase + "\n";
  // Unknown top-level key.
  CHECK_THAT(error_of(base + "seeds: [1]\ngird:\n  trace.skew: [1]\n", dir),
             Catch::Contains(f + ":3:1: unknown key 'gird'") && Catch::Contains("allowed keys here: base"));
  // A grid value of the wrong type: found and allowed, at the value's position.
  CHECK_THAT(error_of(base + "grid:\n  trace.skew: [0.5, high]\n", dir),
             Catch::Contains(f + ":3:21: grid 'trace.skew' value 'high'") &&
                 Catch::Contains("expected a number in [0, 10], found 'high'"));
  // A grid key the scenario does not have.
  CHECK_THAT(error_of(base + "grid:\n  trace.skwe: [0.5]\n", dir),
             Catch::Contains(f + ":3:16: grid 'trace.skwe' value '0.5'") &&
                 Catch::Contains("unknown key 'trace.skwe'"));
  // A grid entry that is not a list.
  CHECK_THAT(error_of(base + "grid:\n  trace.skew: 0.5\n", dir),
             Catch::Contains(f + ":3:3: key 'grid.trace.skew': expected a non-empty list of values, found '0.5'"));
  CHECK_THAT(error_of(base + "seeds: [1, x]\n", dir), Catch::Contains(f + ":2:8: key 'seeds'"));
  CHECK_THAT(error_of(base + "seeds: [1, 1]\n", dir), Catch::Contains("seed 1 is listed twice"));
  CHECK_THAT(error_of(base + "policies: [statik]\n", dir),
             Catch::Contains(f + ":2:12: key 'policies[0]'") && Catch::Contains("statik"));
  CHECK_THAT(error_of(base + "policy_grid:\n  flexmoe: {interval: [10, {a: 1}]}\n", dir),
             Catch::Contains(f + ":3:28: key 'policy_grid.flexmoe.interval': each value must be a scalar, found a "
                             "mapping"));
  CHECK_THAT(error_of("base: nowhere.yaml\n", dir), Catch::Contains(f + ":1:7: key 'base'") &&
                                                       Catch::Contains("does not exist"));
  CHECK_THAT(error_of(base + "set: {cluster.nodes: 2}\ngrid: {cluster.nodes: [4]}\n", dir),
             Catch::Contains("also fixed under set:"));
  // A bad policy parameter, or a point whose GPUs cannot hold the placement, is found when the
  // study loads (before any output is written), naming the study entry.
  CHECK_THAT(error_of(base + "set: {run.max_iterations: 5}\npolicies: [flexmoe:interval=x]\n", dir),
             Catch::Contains(f + ":3:12: key 'policies[0]'") && Catch::Contains("interval") &&
                 Catch::Contains("'x'") && Catch::Contains("grid point 0"));
  CHECK_THAT(error_of(base + "grid: {model.micro_batch_per_gpu: [1, 4096]}\n", dir),
             Catch::Contains("grid point 1 (model.micro_batch_per_gpu=4096)") &&
                 Catch::Contains("each GPU needs"));
}

TEST_CASE("moesim sweep under mpirun writes the same table as a local sweep", "[sweep][mpi]") {
  if (shell("command -v mpirun > /dev/null 2>&1") != 0) {
    WARN("skipped: mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev)");
    return;
  }
  const fs::path dir = fresh_dir("mpi");
  const fs::path study = write_study(dir, small_study());
  const std::string bin = MOESIM_BINARY;
  REQUIRE(shell(bin + " sweep " + study.string() + " --out " + (dir / "local").string() + " --jobs 2 > " +
                (dir / "local.log").string() + " 2>&1") == 0);
  const int rc = shell("mpirun --allow-run-as-root -np 2 --oversubscribe " + bin + " sweep " + study.string() +
                       " --out " + (dir / "mpi").string() + " > " + (dir / "mpi.log").string() + " 2>&1");
  INFO(read_file(dir / "mpi.log"));
  REQUIRE(rc == 0);
  const std::string local = read_file(dir / "local" / "study.csv");
  REQUIRE(!local.empty());
  CHECK(read_file(dir / "mpi" / "study.csv") == local);
  CHECK(read_file(dir / "mpi" / "study.json") == read_file(dir / "local" / "study.json"));
  if (sweep_has_mpi()) CHECK_THAT(read_file(dir / "mpi.log"), Catch::Contains("over 2 MPI ranks"));
}

TEST_CASE("the progress bar shows done, total and ETA, and is silent when disabled", "[sweep][progress]") {
  CHECK(progress_line("sweep", 10, 40, "runs", 20.0, 10) ==
        "sweep [#######-----------------------] 10/40 runs  25%  0:20 elapsed, ETA 1:00");
  // Resumed runs count as done but not for the rate; no ETA before the first unit of work.
  CHECK(progress_line("sweep", 30, 40, "runs", 20.0, 10) ==
        "sweep [######################--------] 30/40 runs  75%  0:20 elapsed, ETA 0:20");
  CHECK(progress_line("sweep", 5, 40, "runs", 0.0, 0) ==
        "sweep [###---------------------------] 5/40 runs  12%  0:00 elapsed");
  CHECK(progress_line("run", 40, 40, "iterations", 4000.0, 40) ==
        "run [##############################] 40/40 iterations 100%  1:06:40 elapsed");

  std::FILE* f = std::tmpfile();
  REQUIRE(f != nullptr);
  {
    Progress off("sweep", 3, "runs", false, f);
    off.advance();
    off.finish();
  }
  CHECK(std::ftell(f) == 0);
  {
    Progress on("sweep", 3, "runs", true, f);
    on.skip();
    on.advance(2);
    on.finish();
  }
  std::rewind(f);
  char buf[512] = {};
  const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  const std::string text(buf, n);
  // Redraws are throttled: the first state is drawn at once, the later ones within 100 ms.
  CHECK_THAT(text, Catch::StartsWith("\rsweep [##########--------------------] 1/3 runs  33%"));
  // The bar gives way to a summary line.
  CHECK_THAT(text, Catch::Contains("\rsweep: 3 runs in 0:00"));
  CHECK(text.back() == '\n');
}
