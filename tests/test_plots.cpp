// scripts/plot.py renders the pictures and the report of a small compare run (issue 7).
// Needs python3 with matplotlib (Debian python3-matplotlib, installed by scripts/setup.sh); without
// it the test warns and passes, so that a machine without Python still builds and tests.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/cli_fixture.hpp"

namespace fs = std::filesystem;

namespace {

using moesim::testing::read_file;
using moesim::testing::shell;

fs::path plots_dir(const std::string& name) { return moesim::testing::fresh_dir("moesim_plots_", name); }

// The first interpreter that can import matplotlib: the one on PATH, else Debian's.
std::string python_with_matplotlib() {
  for (const char* py : {"python3", "/usr/bin/python3"}) {
    if (shell(std::string(py) + " -c \"import matplotlib\" > /dev/null 2>&1") == 0) return py;
  }
  return "";
}

const std::string kPlotScript = std::string(MOESIM_SOURCE_DIR) + "/scripts/plot.py";

}  // namespace

TEST_CASE("plot.py draws the pictures and the report of a compare run", "[plots]") {
  const std::string py = python_with_matplotlib();
  if (py.empty()) {
    WARN("python3 with matplotlib not found: plot test skipped (scripts/setup.sh installs python3-matplotlib)");
    return;
  }
  const fs::path out = plots_dir("run");
  const fs::path log = plots_dir("log");
  REQUIRE(shell(std::string(MOESIM_BINARY) + " compare " + MOESIM_SOURCE_DIR +
                "/scenarios/quickstart.yaml --set run.max_iterations=30 --quiet --out " + out.string() + " > " +
                log.string() + " 2>&1") == 0);
  REQUIRE(fs::exists(out / "compare.csv"));
  REQUIRE(fs::exists(out / "iterations.csv"));

  const int rc = shell(py + " " + kPlotScript + " " + out.string() + " --report > " + log.string() + " 2>&1");
  INFO(read_file(log));
  REQUIRE(rc == 0);

  const std::string report = read_file(out / "report.md");
  REQUIRE(!report.empty());
  CHECK(report.find("| static-cf1 |") != std::string::npos);  // the compare table
  REQUIRE(fs::exists(out / "experts.csv"));  // moesim compare samples per-expert data by default
  for (const char* name : {"time_to_convergence.png", "iteration_breakdown.png", "convergence_progress.png",
                           "drop_rate.png", "expert_load_heatmap.png", "replicas_per_expert.png"}) {
    INFO(name);
    const fs::path png = out / "plots" / name;
    REQUIRE(fs::exists(png));
    CHECK(fs::file_size(png) > 1000);
    CHECK(read_file(png).rfind("\x89PNG\r\n\x1a\n", 0) == 0);
    CHECK(report.find(std::string("](plots/") + name + ")") != std::string::npos);
  }

  // Without per-expert data those pictures are not invented, and the note says why.
  const fs::path bare = plots_dir("bare");
  REQUIRE(shell(std::string(MOESIM_BINARY) + " compare " + MOESIM_SOURCE_DIR +
                "/scenarios/quickstart.yaml --set run.max_iterations=5 --expert-stats 0 --quiet --out " +
                bare.string() + " > " + log.string() + " 2>&1") == 0);
  CHECK(!fs::exists(bare / "experts.csv"));
  REQUIRE(shell(py + " " + kPlotScript + " " + bare.string() + " > " + log.string() + " 2>&1") == 0);
  CHECK(!fs::exists(bare / "plots" / "expert_load_heatmap.png"));
  CHECK(!fs::exists(bare / "plots" / "replicas_per_expert.png"));
  CHECK(read_file(log).find("experts.csv is missing") != std::string::npos);
  fs::remove_all(bare);

  // Same inputs, same pictures.
  const std::string first = read_file(out / "plots" / "convergence_progress.png");
  REQUIRE(shell(py + " " + kPlotScript + " " + out.string() + " > " + log.string() + " 2>&1") == 0);
  CHECK(read_file(out / "plots" / "convergence_progress.png") == first);

  fs::remove_all(out);
  fs::remove(log);
}

TEST_CASE("moesim report draws a sweep's study pictures and an HTML page", "[plots][sweep]") {
  const std::string py = python_with_matplotlib();
  // moesim report starts python3 from PATH; plot.py moves to Debian's interpreter when that one
  // lacks matplotlib, so any interpreter with matplotlib will do.
  if (py.empty()) {
    WARN("python3 with matplotlib not found: moesim report test skipped (scripts/setup.sh installs it)");
    return;
  }
  const fs::path dir = plots_dir("study");
  const fs::path log = plots_dir("studylog");
  fs::create_directories(dir);
  // A 2-point grid x 2 seeds, with a policy parameter grid: small enough for a unit test.
  std::ofstream(dir / "study.yaml") << "name: tiny\n"
                                       "base: " MOESIM_SOURCE_DIR "/scenarios/quickstart.yaml\n"
                                       "set: {run.max_iterations: 20}\n"
                                       "grid: {trace.skew: [0.5, 1.0]}\n"
                                       "policies: [oracle, symi]\n"
                                       "policy_grid: {static: {capacity_factor: [1.0, 2.0]}}\n"
                                       "seeds: [1, 2]\n";
  const fs::path out = dir / "out";
  REQUIRE(shell(std::string(MOESIM_BINARY) + " sweep " + (dir / "study.yaml").string() + " --out " + out.string() +
                " --details --jobs 1 --quiet > " + log.string() + " 2>&1") == 0);
  REQUIRE(fs::exists(out / "study.csv"));
  const int rc = shell(std::string(MOESIM_BINARY) + " report " + out.string() + " --format html > " + log.string() +
                       " 2>&1");
  INFO(read_file(log));
  REQUIRE(rc == 0);
  const std::string html = read_file(out / "report.html");
  CHECK(html.rfind("<!DOCTYPE html>", 0) == 0);
  CHECK(html.find("moesim study: tiny") != std::string::npos);
  CHECK(html.find("static:capacity_factor=2.0 @ trace.skew=0.5") != std::string::npos);
  for (const char* name : {"study_time_to_convergence.png", "study_parameters.png", "study_breakdown.png",
                           "study_tradeoff.png"}) {
    INFO(name);
    const fs::path png = out / "plots" / name;
    REQUIRE(fs::exists(png));
    CHECK(read_file(png).rfind("\x89PNG\r\n\x1a\n", 0) == 0);
    CHECK(html.find(std::string("plots/") + name) != std::string::npos);
  }
  // The first run in detail, from its runs/<id>/ folder: per-expert pictures included.
  std::size_t detailed = 0;
  for (const auto& e : fs::directory_iterator(out / "plots"))
    if (e.path().filename().string().find("_expert_load_heatmap.png") != std::string::npos) ++detailed;
  CHECK(detailed == 1);
  // Bad input: an unknown format is refused before anything runs.
  CHECK(shell(std::string(MOESIM_BINARY) + " report " + out.string() + " --format pdf > " + log.string() +
              " 2>&1") == 2);
  CHECK(read_file(log).find("allowed: md, html") != std::string::npos);
  fs::remove_all(dir);
  fs::remove(log);
}

TEST_CASE("plot.py rejects a missing folder or missing results with exit status 2", "[plots]") {
  if (shell("python3 --version > /dev/null 2>&1") != 0) {
    WARN("python3 not found: plot test skipped");
    return;
  }
  const fs::path log = plots_dir("errlog");
  const fs::path missing = plots_dir("missing");
  CHECK(shell("python3 " + kPlotScript + " " + missing.string() + " > " + log.string() + " 2>&1") == 2);
  CHECK(read_file(log).find("no such directory") != std::string::npos);

  const fs::path empty = plots_dir("empty");
  fs::create_directories(empty);
  CHECK(shell("python3 " + kPlotScript + " " + empty.string() + " > " + log.string() + " 2>&1") == 2);
  CHECK(read_file(log).find("compare.csv") != std::string::npos);

  std::ofstream(empty / "compare.csv") << "label,status\n";
  CHECK(shell("python3 " + kPlotScript + " " + empty.string() + " > " + log.string() + " 2>&1") == 2);
  CHECK(read_file(log).find("iterations.csv") != std::string::npos);

  fs::remove_all(empty);
  fs::remove(log);
}
