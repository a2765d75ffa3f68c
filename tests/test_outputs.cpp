// Output files: atomic writes with unique temporaries, output folders that are complete or absent,
// early checks of the destinations, compare.csv / compare.json agreement and `moesim list --json`
// (issue 16 item 5, issue 17 item 5).
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "app/outputs.hpp"
#include "core/error.hpp"
#include "models/specs.hpp"
#include "policies/registry.hpp"
#include "tests/cli_fixture.hpp"

namespace fs = std::filesystem;
using namespace moesim;
using moesim::testing::read_file;
using moesim::testing::shell;
using moesim::testing::TempDir;

namespace {

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// A pid that no process has: a child that has exited and been reaped.
long long dead_pid() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return pid;
}

const std::string kBin = MOESIM_BINARY;
const std::string kQuickstart = std::string(MOESIM_SOURCE_DIR) + "/scenarios/quickstart.yaml";

}  // namespace

TEST_CASE("outputs: temporaries are hidden and named by writer", "[outputs][atomic]") {
  CHECK(is_temporary_name(".summary.json.tmp-123-0"));
  CHECK(is_temporary_name(".quickstart.new-4242-17"));
  CHECK(is_temporary_name(".quickstart.old-1-2"));
  CHECK_FALSE(is_temporary_name("summary.json.tmp"));  // the old shared name: not hidden, no writer
  CHECK_FALSE(is_temporary_name(".summary.json.tmp-x-0"));
  CHECK_FALSE(is_temporary_name(".summary.json.bak-12-0"));
  CHECK_FALSE(is_temporary_name(".hidden"));
}

TEST_CASE("outputs: a file is replaced whole, never through a shared temporary", "[outputs][atomic]") {
  TempDir d;
  const std::string target = d.file("run.json");
  write_file_atomic(target, "old\n");
  // Eight threads writing one path at once: with one shared ".tmp" they truncated each other's
  // file or renamed it away under each other; with their own temporaries the last rename wins.
  std::vector<std::string> contents;
  for (int t = 0; t < 8; ++t) contents.push_back(std::string(20000 + 1000 * t, static_cast<char>('a' + t)) + "\n");
  std::vector<std::thread> pool;
  std::atomic<int> errors{0};
  for (int t = 0; t < 8; ++t) {
    pool.emplace_back([&, t] {
      for (int k = 0; k < 20; ++k) {
        try {
          write_file_atomic(target, contents[static_cast<std::size_t>(t)]);
        } catch (const std::exception&) {
          ++errors;
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  CHECK(errors == 0);
  const std::string now = read_file(target);
  CHECK(std::find(contents.begin(), contents.end(), now) != contents.end());
  CHECK(entries(d.path()) == std::vector<std::string>{"run.json"});
}

TEST_CASE("outputs: a failed write names the path and the OS reason and leaves nothing behind",
          "[outputs][atomic]") {
  TempDir d;
  const std::string target = d.file("iterations.csv");
  write_file_atomic(target, "the earlier file\n");
  // A file size limit stands in for a full disk: write(2) fails with EFBIG instead of ENOSPC.
  struct sigaction ignore {}, before {};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGXFSZ, &ignore, &before);
  rlimit saved{};
  ::getrlimit(RLIMIT_FSIZE, &saved);
  rlimit small = saved;
  small.rlim_cur = 4096;
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
  std::string message;
  try {
    write_file_atomic(target, std::string(100000, 'x'));
  } catch (const InputError& e) {
    message = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &saved);
  ::sigaction(SIGXFSZ, &before, nullptr);
  CHECK_THAT(message, Catch::Contains(target) && Catch::Contains("write failed") &&
                          Catch::Contains(std::strerror(EFBIG)));
  CHECK(read_file(target) == "the earlier file\n");
  CHECK(entries(d.path()) == std::vector<std::string>{"iterations.csv"});
  // A destination that cannot exist fails when the file is claimed, before any work.
  d.write("plain", "x");
  CHECK_THROWS_WITH(AtomicFile(d.file("plain") + "/t.json"),
                    Catch::Contains("plain/t.json: cannot write") && Catch::Contains(std::strerror(ENOTDIR)));
  CHECK_THROWS_WITH(AtomicFile(d.path().string()), Catch::Contains("is a folder"));
}

TEST_CASE("outputs: a folder is replaced as a whole or not at all", "[outputs][atomic]") {
  TempDir d;
  const std::string dir = d.file("cmp");
  {
    OutputFolder f(dir, output_folder_names());
    f.write("summary.json", "{\"run\": 1}\n");
    f.write("experts.csv", "run 1\n");
    f.commit();
  }
  CHECK(entries(dir) == std::vector<std::string>{"experts.csv", "summary.json"});
  {
    // Abandoned before commit (the simulation failed): the earlier folder stays as it was.
    OutputFolder f(dir, output_folder_names());
    f.write("summary.json", "{\"run\": 2}\n");
  }
  CHECK(read_file(fs::path(dir) / "summary.json") == "{\"run\": 1}\n");
  {
    // The next run has no experts.csv: the earlier one must not stay beside the new summary.
    OutputFolder f(dir, output_folder_names());
    f.write("summary.json", "{\"run\": 3}\n");
    f.commit();
  }
  CHECK(entries(dir) == std::vector<std::string>{"summary.json"});
  CHECK(read_file(fs::path(dir) / "summary.json") == "{\"run\": 3}\n");
  CHECK(entries(d.path()) == std::vector<std::string>{"cmp"});  // no staging or old folder left
}

TEST_CASE("outputs: a folder holding other files is refused, not deleted", "[outputs][atomic]") {
  TempDir d;
  d.write("mine/notes.txt", "keep me\n");
  d.write("mine/summary.json", "{}\n");
  CHECK_THROWS_WITH(OutputFolder(d.file("mine"), output_folder_names()),
                    Catch::Contains("mine: holds 'notes.txt', which is not one of moesim's outputs"));
  CHECK(read_file(d.path() / "mine" / "notes.txt") == "keep me\n");
  for (const char* dot : {".", "..", "/"})
    CHECK_THROWS_WITH(OutputFolder(dot, output_folder_names()), Catch::Contains("not allowed as an output folder"));
  d.write("file", "x");
  CHECK_THROWS_WITH(OutputFolder(d.file("file"), output_folder_names()), Catch::Contains("is not a folder"));
  CHECK(entries(d.path()) == (std::vector<std::string>{"file", "mine"}));
}

TEST_CASE("outputs: temporaries of dead writers are removed, a live writer's kept", "[outputs][atomic]") {
  TempDir d;
  const std::string dead = fmt::format(".a.json.tmp-{}-0", dead_pid());
  const std::string dead_dir = fmt::format(".cmp.new-{}-3", dead_pid());
  const std::string live = fmt::format(".a.json.tmp-{}-9", static_cast<long long>(::getpid()));
  d.write(dead, "partial");
  d.write(dead_dir + "/summary.json", "partial");
  d.write(live, "in progress");
  d.write(".config", "not ours");
  CHECK(remove_stale_temporaries(d.path().string()) == 2);
  CHECK(entries(d.path()) == (std::vector<std::string>{live, ".config"}));
}

TEST_CASE("outputs: compare rows have compare_columns' keys, CSV and JSON alike", "[outputs]") {
  nlohmann::json x{{"label", "a,b"},  // a comma: the CSV cell is quoted
                   {"policy", "static"},
                   {"converged", true},
                   {"oom", false},
                   {"iterations_to_converge", 7},
                   {"time_to_convergence_s", 1.5},
                   {"ratio_to_best", 1.0},
                   {"mean_iteration_ns", 2.5e8},
                   {"p99_iteration_ns", 3e8},
                   {"mean_phase_ns", nlohmann::json::object()},
                   {"mean_exposed_comm_ns", 4.0},
                   {"drop_rate", 0.25},
                   {"mean_moved_bytes_per_iteration", 0.0},
                   {"mean_a2a_bytes_per_iteration", 1e9},
                   {"peak_gpu_memory_bytes", 2e9},
                   {"convergence_band", {{"min_time_to_convergence_s", 1.0}, {"max_time_to_convergence_s", nullptr}}}};
  for (int i = 0; i < kNumPhases; ++i) x["mean_phase_ns"][std::string(to_string(static_cast<Phase>(i))) + "_ns"] = i;
  for (const bool banded : {false, true}) {
    const nlohmann::ordered_json row = compare_row(x, banded);
    std::vector<std::string> keys;
    for (const auto& [k, v] : row.items()) keys.push_back(k);
    CHECK(keys == compare_columns(banded));
  }
  const std::string csv = rows_csv(nlohmann::ordered_json::array({compare_row(x, true)}));
  CHECK(csv.substr(csv.find('\n') + 1) ==
        "\"a,b\",static,converged,7,1.5,1,250000000,300000000,0,1,2,3,4,5,6,7,4,0.25,0,1000000000,2000000000,1,\n");
  // Out of memory: no time to convergence even where the flags say converged.
  x["oom"] = true;
  const nlohmann::ordered_json oom = compare_row(x, false);
  CHECK(oom["status"] == "oom");
  CHECK(oom["iterations_to_converge"].is_null());
  CHECK(oom["ratio_to_best"].is_null());
}

TEST_CASE("moesim list --json lists what moesim list prints", "[outputs][cli]") {
  TempDir d;
  REQUIRE(shell(kBin + " list --json > " + d.file("list.json")) == 0);
  REQUIRE(shell(kBin + " list > " + d.file("list.txt")) == 0);
  const nlohmann::json j = nlohmann::json::parse(read_file(d.file("list.json")));
  CHECK(j["gpu_presets"].get<std::vector<std::string>>() == gpu_preset_names());
  CHECK(j["cluster_presets"].get<std::vector<std::string>>() == cluster_preset_names());
  CHECK(j["model_presets"].get<std::vector<std::string>>() == model_preset_names());
  const std::vector<PolicyInfo> registry = policy_registry();  // a copy: run-time entries may be added
  REQUIRE(j["policies"].size() == registry.size());
  const std::string text = read_file(d.file("list.txt"));
  for (std::size_t i = 0; i < registry.size(); ++i) {
    const PolicyInfo& p = registry[i];
    CHECK(j["policies"][i]["name"] == p.name);
    CHECK(j["policies"][i]["description"] == p.description);
    CHECK_THAT(text, Catch::Contains(fmt::format("  {:<12} {}\n", p.name, p.description)));
  }
  CHECK(shell(kBin + " list --json extra > /dev/null 2>&1") == 2);
}

TEST_CASE("moesim run: unwritable --out or --timeline fails before anything is written", "[outputs][cli]") {
  TempDir d;
  d.write("plain", "a file where a folder is expected\n");
  const std::string log = d.file("log");
  const std::string common = kBin + " run " + kQuickstart + " --set run.max_iterations=2 --quiet ";
  CHECK(shell(common + "--out " + d.file("plain") + "/sub > " + log + " 2>&1") == 2);
  CHECK_THAT(read_file(log), Catch::Contains("plain/sub") && Catch::Contains("cannot"));
  // The timeline is claimed with the folder: the folder is not written when the timeline cannot be.
  CHECK(shell(common + "--out " + d.file("o") + " --timeline " + d.file("plain") + "/t.json > " + log + " 2>&1") == 2);
  CHECK_THAT(read_file(log), Catch::Contains("plain/t.json: cannot write") && Catch::Contains(std::strerror(ENOTDIR)));
  CHECK_FALSE(fs::exists(d.path() / "o"));
  // A timeline inside --out is one file of the set; a folder with a stranger's file is refused.
  REQUIRE(shell(common + "--out " + d.file("o") + " --timeline " + d.file("o") + "/t.json > " + log + " 2>&1") == 0);
  CHECK(entries(d.path() / "o") == (std::vector<std::string>{"experts.csv", "iterations.csv", "summary.json", "t.json"}));
  d.write("o/mine.txt", "x");
  CHECK(shell(common + "--out " + d.file("o") + " > " + log + " 2>&1") == 2);
  CHECK_THAT(read_file(log), Catch::Contains("holds 'mine.txt'"));
  CHECK(entries(d.path()) == (std::vector<std::string>{"log", "o", "plain"}));
}

TEST_CASE("moesim run: a scenario name cannot put the default output outside out/", "[outputs][cli]") {
  TempDir d;
  fs::create_directories(d.path() / "a" / "b");
  REQUIRE(shell("cd " + (d.path() / "a" / "b").string() + " && " + kBin + " run " + kQuickstart +
                " --set name=../../escape --set run.max_iterations=2 --quiet") == 0);
  CHECK(fs::is_regular_file(d.path() / "a" / "b" / "out" / "..-..-escape" / "summary.json"));
  CHECK(entries(d.path() / "a" / "b") == std::vector<std::string>{"out"});
  CHECK(entries(d.path() / "a" / "b" / "out") == std::vector<std::string>{"..-..-escape"});
  CHECK(entries(d.path()) == std::vector<std::string>{"a"});
}
