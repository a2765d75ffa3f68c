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

namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int shell(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

fs::path plots_dir(const std::string& name) {
  // Per process, so that concurrent test runs do not share folders.
  fs::path d = fs::temp_directory_path() / ("moesim_plots_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(d);
  return d;
}

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
  INFO(slurp(log));
  REQUIRE(rc == 0);

  const std::string report = slurp(out / "report.md");
  REQUIRE(!report.empty());
  CHECK(report.find("| static-cf1 |") != std::string::npos);  // the compare table
  for (const char* name : {"time_to_convergence.png", "iteration_breakdown.png", "convergence_progress.png",
                           "drop_rate.png"}) {
    INFO(name);
    const fs::path png = out / "plots" / name;
    REQUIRE(fs::exists(png));
    CHECK(fs::file_size(png) > 1000);
    CHECK(slurp(png).rfind("\x89PNG\r\n\x1a\n", 0) == 0);
    CHECK(report.find(std::string("](plots/") + name + ")") != std::string::npos);
  }
  // No per-expert data in a compare run: those pictures are not invented, and the note says why.
  CHECK(!fs::exists(out / "plots" / "expert_load_heatmap.png"));
  CHECK(!fs::exists(out / "plots" / "replicas_per_expert.png"));
  CHECK(slurp(log).find("expert_load.csv is missing") != std::string::npos);

  // Same inputs, same pictures.
  const std::string first = slurp(out / "plots" / "convergence_progress.png");
  REQUIRE(shell(py + " " + kPlotScript + " " + out.string() + " > " + log.string() + " 2>&1") == 0);
  CHECK(slurp(out / "plots" / "convergence_progress.png") == first);

  fs::remove_all(out);
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
  CHECK(slurp(log).find("no such directory") != std::string::npos);

  const fs::path empty = plots_dir("empty");
  fs::create_directories(empty);
  CHECK(shell("python3 " + kPlotScript + " " + empty.string() + " > " + log.string() + " 2>&1") == 2);
  CHECK(slurp(log).find("compare.csv") != std::string::npos);

  std::ofstream(empty / "compare.csv") << "policy,status\n";
  CHECK(shell("python3 " + kPlotScript + " " + empty.string() + " > " + log.string() + " 2>&1") == 2);
  CHECK(slurp(log).find("iterations.csv") != std::string::npos);

  fs::remove_all(empty);
  fs::remove(log);
}
