// The command line as a user runs it: determinism of the outputs, exit codes, no partial output.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tests/cli_fixture.hpp"

namespace fs = std::filesystem;

namespace {

using moesim::testing::read_file;

int run(const std::string& args, const fs::path& log) {
  return moesim::testing::shell(std::string(MOESIM_BINARY) + " " + args + " > " + log.string() + " 2>&1");
}

fs::path fresh_dir(const std::string& name) { return moesim::testing::fresh_dir("moesim_cli_", name); }

const std::string kQuickstart = std::string(MOESIM_SOURCE_DIR) + "/scenarios/quickstart.yaml";

}  // namespace

TEST_CASE("same inputs and seed give bit-identical outputs", "[cli][determinism]") {
  fs::path a = fresh_dir("det_a"), b = fresh_dir("det_b"), c = fresh_dir("det_c");
  const std::string common = kQuickstart + " --set run.max_iterations=40 --quiet --out ";
  REQUIRE(run("run " + common + a.string(), fresh_dir("log") += ".a") == 0);
  REQUIRE(run("run " + common + b.string(), fresh_dir("log") += ".b") == 0);
  REQUIRE(run("run " + common + c.string() + " --seed 7", fresh_dir("log") += ".c") == 0);
  for (const char* f : {"summary.json", "iterations.csv"}) {
    std::string x = read_file(a / f), y = read_file(b / f);
    REQUIRE(!x.empty());
    CHECK(x == y);
  }
  // Another seed draws another trace.
  CHECK(read_file(a / "iterations.csv") != read_file(c / "iterations.csv"));
  // The CSV has one row per policy and iteration, plus the header.
  std::string csv = read_file(a / "iterations.csv");
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 1 + 5 * 40);
  CHECK(csv.rfind("label,iteration,iteration_ns,compute_ns,a2a_ns,grad_sync_ns,optimizer_ns,movement_ns,wait_ns", 0) == 0);
}

TEST_CASE("bad input exits 2 with the file and key, and writes nothing", "[cli]") {
  fs::path out = fresh_dir("bad_out");
  fs::path scen = fresh_dir("bad.yaml");
  std::ofstream(scen) << "cluster:\n  preset: dgx-a100\n  nodez: 2\nmodel: {preset: gpt-small-moe}\npolicies: [static]\n";
  fs::path log = fresh_dir("bad_log");
  CHECK(run("run " + scen.string() + " --out " + out.string(), log) == 2);
  std::string msg = read_file(log);
  CHECK_THAT(msg, Catch::Matchers::Contains(scen.string() + ":3:3: unknown key 'cluster.nodez'"));
  CHECK_FALSE(fs::exists(out));
  // A missing scenario file and an unknown option are input errors too.
  CHECK(run("run /nonexistent/scenario.yaml", log) == 2);
  CHECK_THAT(read_file(log), Catch::Matchers::Contains("/nonexistent/scenario.yaml: cannot open file"));
  CHECK(run("run " + kQuickstart + " --bogus", log) == 2);
  CHECK(run("frobnicate", log) == 2);
}

TEST_CASE("help explains every option of run", "[cli]") {
  fs::path log = fresh_dir("help_log");
  REQUIRE(run("run --help", log) == 0);
  std::string h = read_file(log);
  for (const char* opt : {"--out", "--seed", "--set", "--quiet"}) CHECK_THAT(h, Catch::Matchers::Contains(opt));
  REQUIRE(run("--help", log) == 0);
  CHECK_THAT(read_file(log), Catch::Matchers::Contains("moesim run SCENARIO.yaml"));
  REQUIRE(run("list", log) == 0);
  CHECK_THAT(read_file(log), Catch::Matchers::Contains("static"));
  CHECK_THAT(read_file(log), Catch::Matchers::Contains("swiftmoe-cloud"));
}

TEST_CASE("options are checked, and every command answers --help", "[cli]") {
  fs::path out = fresh_dir("opt_out");
  fs::path log = fresh_dir("opt_log");
  // --seed has the scenario key's range [0, 2^62]: a negative seed must not wrap around.
  CHECK(run("run " + kQuickstart + " --seed -3 --out " + out.string(), log) == 2);
  CHECK_THAT(read_file(log),
             Catch::Matchers::Contains("--seed: '-3' is not allowed; allowed: an integer in [0, 4611686018427387904]"));
  CHECK(run("run " + kQuickstart + " --seed 4611686018427387905 --out " + out.string(), log) == 2);
  CHECK(run("run " + kQuickstart + " --seed 7x --out " + out.string(), log) == 2);
  // --timeline-iterations chooses what --timeline shows: alone it is an error.
  CHECK(run("run " + kQuickstart + " --timeline-iterations 1 --out " + out.string(), log) == 2);
  CHECK_THAT(read_file(log), Catch::Matchers::Contains("--timeline-iterations: only with --timeline"));
  CHECK_FALSE(fs::exists(out));
  // An iteration the run does not reach gets a warning (the timeline has nothing for it).
  const fs::path timeline = fresh_dir("opt_timeline.json");
  CHECK(run("run " + kQuickstart + " -q --set run.max_iterations=3 --timeline " + timeline.string() +
                " --timeline-iterations 1,7 --out " + out.string(),
            log) == 0);
  CHECK_THAT(read_file(log), Catch::Matchers::Contains("warning: --timeline-iterations: iteration 7 was not run"));
  CHECK_FALSE(read_file(log).find("iteration 1 was not run") != std::string::npos);
  // A mapping created by --set names the assignment in its errors.
  CHECK(run("run " + kQuickstart + " --set cluster.gpu.zz=1", log) == 2);
  CHECK_THAT(read_file(log), Catch::Matchers::Contains("--set 'cluster.gpu.zz=1': unknown key 'cluster.gpu.zz'"));
  // Every command and subcommand has --help (exit 0); list takes no arguments.
  for (const char* cmd : {"run", "compare", "sweep", "report", "regress", "validate", "validate collectives",
                          "calibrate", "fit", "trace", "trace convert", "trace stats", "list"}) {
    CAPTURE(cmd);
    CHECK(run(std::string(cmd) + " --help", log) == 0);
    CHECK_FALSE(read_file(log).empty());
  }
  CHECK(run("list --bogus", log) == 2);
  CHECK_THAT(read_file(log), Catch::Matchers::Contains("moesim list: unexpected argument '--bogus'"));
}

TEST_CASE("compare writes one row per policy and marks a policy that runs out of memory", "[cli][compare]") {
  // Quickstart's static estimate (weights 0.587 GB + gradients 0.587 GB + activations 0.642 GB,
  // optimizer offloaded) is 1.816 GB; the padded dispatch buffers add 6.3 MB at capacity factor 1
  // and 12.6 MB at 2. With 1.825 GB of HBM the first fits and the second does not.
  fs::path scen = fresh_dir("oom.yaml");
  std::ofstream(scen) << "cluster:\n  preset: swiftmoe-cloud\n  gpu: {preset: a100-pcie-80gb, hbm_bytes: 1.825e9}\n"
                         "model: {preset: gpt-small-moe}\nplacement: {slots_per_gpu: 4}\n"
                         "training: {optimizer_offload: true}\nrun: {max_iterations: 30}\npolicies: [static]\n";
  fs::path out = fresh_dir("cmp_out"), log = fresh_dir("cmp_log");
  REQUIRE(run("compare " + scen.string() + " --policies static:min_capacity=2,static:capacity_factor=2 --out " +
                  out.string(),
              log) == 0);
  const std::string table = read_file(log);
  CHECK_THAT(table, Catch::Matchers::Contains("static:capacity_factor=2: OOM on GPU 0 at iteration 0"));
  CHECK_THAT(table, Catch::Matchers::Contains("dispatch buffers 0.01"));
  const std::string csv = read_file(out / "compare.csv");
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 3);
  CHECK_THAT(csv, Catch::Matchers::Contains("\nstatic:min_capacity=2,static,not_converged,"));
  CHECK_THAT(csv, Catch::Matchers::Contains("\nstatic:capacity_factor=2,static,oom,"));
  CHECK(fs::exists(out / "compare.json"));
  // A bad --policies spec is an input error.
  CHECK(run("compare " + scen.string() + " --policies static:capacity_factor", log) == 2);
  CHECK_THAT(read_file(log), Catch::Matchers::Contains("parameter 'capacity_factor' must be key=value"));
}

TEST_CASE("regress passes on its baseline and reports a moved result", "[cli][regress]") {
  const std::string suite = std::string(MOESIM_SOURCE_DIR) + "/scenarios/regression";
  fs::path log = fresh_dir("regress_log");
  REQUIRE(run("regress " + suite + " --baseline " + suite + "/baseline.json", log) == 0);
  CHECK_THAT(read_file(log), Catch::Matchers::Contains("policy results in 2 scenarios match"));
  // A baseline whose static drop rate differs by 1 % makes it fail and name the metric.
  auto doc = nlohmann::json::parse(read_file(fs::path(suite) / "baseline.json"));
  const double d = doc["scenarios"]["dgx-olmoe.yaml"]["static"]["drop_rate"].get<double>();
  doc["scenarios"]["dgx-olmoe.yaml"]["static"]["drop_rate"] = d * 1.01;
  fs::path moved = fresh_dir("baseline.json");
  std::ofstream(moved) << doc.dump(2);
  CHECK(run("regress " + suite + " --baseline " + moved.string(), log) == 1);
  CHECK_THAT(read_file(log), Catch::Matchers::Contains("dgx-olmoe.yaml / static: drop_rate"));
  // --update rewrites it; then it passes.
  REQUIRE(run("regress " + suite + " --baseline " + moved.string() + " --update", log) == 0);
  CHECK(run("regress " + suite + " --baseline " + moved.string(), log) == 0);
}

TEST_CASE("validate collectives prints predictions next to the published figures", "[cli][validate]") {
  fs::path log = fresh_dir("validate_log");
  REQUIRE(run("validate collectives", log) == 0);
  const std::string out = read_file(log);
  // 1 GiB all-reduce on one DGX-A100 node: 238.3 GB/s predicted against 232.5 measured (tolerance 5 %).
  CHECK_THAT(out, Catch::Matchers::Contains("all_reduce          1024     7885.4      ring/Simple      238.3      232.5     +2.5      5"));
  CHECK(run("validate collectives --nodes 2 --nics-per-node 4", log) == 0);
  CHECK_THAT(read_file(log), Catch::Matchers::Contains("93.0"));
  CHECK(run("validate links", log) == 2);
}
