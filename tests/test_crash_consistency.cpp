// Crash consistency (issue 16 item 5): `run`, `compare` and `sweep` killed with SIGKILL at
// pseudo-random moments leave each output folder complete or absent, never a mix of two runs nor
// a visible temporary; a sweep resumed after a kill ends byte-identical to an uninterrupted one.
// 20 kills in all, each a fraction of a second of simulation.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "app/atomic_files.hpp"
#include "tests/file_fixture.hpp"

extern char** environ;

namespace fs = std::filesystem;
using moesim::is_temporary_name;
using moesim::testing::read_file;
using moesim::testing::TempDir;
using nlohmann::json;

namespace {

const std::string kBin = MOESIM_BINARY;
const std::string kSource = MOESIM_SOURCE_DIR;

pid_t spawn(const std::vector<std::string>& args) {
  std::vector<std::string> argv_s{kBin};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, kBin.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  REQUIRE(rc == 0);
  return pid;
}

int wait_for(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

// Runs to the end; the wall time, the scale of the kill moments.
double run_whole(const std::vector<std::string>& args) {
  const auto t0 = std::chrono::steady_clock::now();
  REQUIRE(wait_for(spawn(args)) == 0);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void kill_after(const std::vector<std::string>& args, double seconds) {
  const pid_t pid = spawn(args);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  ::kill(pid, SIGKILL);
  (void)wait_for(pid);  // killed, or finished first: both are legitimate outcomes
}

std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::size_t lines_of(const std::string& text) { return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n')); }

// A run or compare folder is complete and of one run: every file present and whole, and the files
// agree with each other (two runs of different lengths would not). Returns the iterations run.
std::int64_t check_complete(const fs::path& dir, bool comparison) {
  std::vector<std::string> want{"experts.csv", "iterations.csv", "summary.json"};
  if (comparison) want.insert(want.begin(), {"compare.csv", "compare.json"});
  REQUIRE(names_in(dir) == want);
  const json summary = json::parse(read_file(dir / "summary.json"));
  std::int64_t total = 0, longest = 0;
  for (const auto& r : summary["results"]) {
    total += r["iterations_run"].get<std::int64_t>();
    longest = std::max(longest, r["iterations_run"].get<std::int64_t>());
  }
  const std::string iterations = read_file(dir / "iterations.csv");
  CHECK(iterations.back() == '\n');
  CHECK(lines_of(iterations) == 1 + static_cast<std::size_t>(total));
  CHECK(read_file(dir / "experts.csv").back() == '\n');
  if (comparison) {
    const json rows = json::parse(read_file(dir / "compare.json"));
    REQUIRE(rows.size() == summary["results"].size());
    for (std::size_t i = 0; i < rows.size(); ++i)
      CHECK(rows[i]["mean_iteration_ns"] == summary["results"][i]["mean_iteration_ns"]);
    CHECK(lines_of(read_file(dir / "compare.csv")) == 1 + rows.size());
  }
  return longest;
}

bool any_temporary(const fs::path& dir) {
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (is_temporary_name(e.path().filename().string())) return true;
  return false;
}

// Every file and folder below `dir` by relative path, with its bytes.
std::map<std::string, std::string> tree(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    out[fs::relative(e.path(), dir).string()] = e.is_regular_file() ? read_file(e.path()) : "<dir>";
  return out;
}

}  // namespace

TEST_CASE("crash consistency: run and compare killed at random moments leave complete or absent folders",
          "[outputs][crash]") {
  TempDir d;
  std::mt19937 rng(20240516);  // fixed: the same moments (relative to the run's length) every time
  const std::string scen = kSource + "/scenarios/quickstart.yaml";
  int trials = 0, complete = 0, absent = 0;
  for (const bool comparison : {false, true}) {
    const std::string cmd = comparison ? "compare" : "run";
    auto args = [&](const fs::path& out, int iterations) {
      return std::vector<std::string>{cmd, scen, "--quiet", "--set", "run.max_iterations=" + std::to_string(iterations),
                                      "--out", out.string()};
    };
    const double whole = run_whole(args(d.path() / (cmd + "_timing"), 20));
    std::uniform_real_distribution<double> moment(0.2 * whole, 1.1 * whole);
    for (int k = 0; k < 6 + (comparison ? 1 : 0); ++k, ++trials) {
      // Half the trials replace an earlier, shorter run: a kill must not leave a mix of both.
      const fs::path out = d.path() / fmt::format("{}_{}", cmd, k);
      const bool replace = k % 2 == 1;
      if (replace) {
        (void)run_whole(args(out, 12));
        REQUIRE(check_complete(out, comparison) == 12);
      }
      kill_after(args(out, 20), moment(rng));
      INFO(cmd << " trial " << k << (replace ? " (replacing an earlier run)" : ""));
      if (!fs::exists(out)) {
        ++absent;
        continue;
      }
      const std::int64_t ran = check_complete(out, comparison);
      CHECK((ran == 20 || (replace && ran == 12)));
      ++complete;
    }
  }
  CHECK(trials == 13);
  // What a killed writer left beside the folders (hidden) goes with the next write there.
  (void)run_whole({"run", scen, "--quiet", "--set", "run.max_iterations=2", "--out", (d.path() / "last").string()});
  CHECK_FALSE(any_temporary(d.path()));
  WARN(fmt::format("run/compare: {} kills left a complete folder, {} none", complete, absent));
}

TEST_CASE("crash consistency: a sweep killed and resumed ends byte-identical to an uninterrupted one",
          "[outputs][crash][sweep]") {
  TempDir d;
  const std::string study = d.write("study.yaml", "name: tiny\nbase: " + kSource +
                                                      "/scenarios/swiftmoe-gpt-small.yaml\n"
                                                      "set:\n  run.max_iterations: 20\n"
                                                      "grid:\n  trace.skew: [0.5, 1.0]\n  cluster.nodes: [8, 16]\n"
                                                      "policies:\n  - static:capacity_factor=1\n"
                                                      "  - {name: flexmoe, label: flexmoe-10, interval: 10}\n"
                                                      "seeds: [1]\n");
  auto args = [&](const fs::path& out) {
    return std::vector<std::string>{"sweep", study, "--jobs", "2", "--details", "--quiet", "--out", out.string()};
  };
  const double whole = run_whole(args(d.path() / "reference"));
  const auto reference = tree(d.path() / "reference");
  REQUIRE(reference.count("study.csv") == 1);
  REQUIRE(reference.size() == 2 + 1 + 4 + 4 * 6);  // study.csv/json, runs/, 4 run files, 4 folders of 5
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> moment(0.05 * whole, 1.05 * whole);
  for (int k = 0; k < 7; ++k) {
    INFO("sweep trial " << k);
    const fs::path out = d.path() / fmt::format("sweep_{}", k);
    kill_after(args(out), moment(rng));
    if (fs::exists(out / "runs")) {
      for (const auto& e : fs::directory_iterator(out / "runs")) {
        const std::string n = e.path().filename().string();
        if (is_temporary_name(n)) continue;  // hidden; the resumed sweep removes it
        if (e.is_directory()) {
          check_complete(e.path(), true);
        } else {
          // A run file is whole: it parses and carries the completion marker.
          CHECK(json::parse(read_file(e.path()))["complete"] == true);
        }
      }
    }
    REQUIRE(wait_for(spawn(args(out))) == 0);
    CHECK(tree(out) == reference);
  }
}
