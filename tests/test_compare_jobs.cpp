// `moesim compare --jobs N` runs policies on N threads (app/runner.cpp): every output file must be
// byte for byte the one of --jobs 1, including the compute profile's roofline notes, which count
// lookups over the policies run so far.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

#include "tests/cli_fixture.hpp"

using namespace moesim::testing;
namespace fs = std::filesystem;

namespace {

void compare_jobs(const std::string& scenario, const std::string& args, const std::string& name) {
  const fs::path dir = fresh_dir("moesim_jobs_", name);
  fs::create_directories(dir);
  for (const char* jobs : {"1", "3"}) {
    const std::string cmd = std::string(MOESIM_BINARY) + " compare " + std::string(MOESIM_SOURCE_DIR) + "/scenarios/" +
                            scenario + " " + args + " --quiet --jobs " + jobs + " --out " + (dir / jobs).string() +
                            " > " + (dir / (std::string(jobs) + ".log")).string() + " 2>&1";
    REQUIRE(shell(cmd) == 0);
  }
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir / "1")) {
    INFO(scenario << ": " << e.path().filename().string());
    REQUIRE(fs::exists(dir / "3" / e.path().filename()));
    CHECK(read_file(e.path()) == read_file(dir / "3" / e.path().filename()));
    ++files;
  }
  CHECK(files >= 5);  // compare.csv, compare.json, summary.json, iterations.csv, experts.csv
  fs::remove_all(dir);
}

}  // namespace

TEST_CASE("compare --jobs: the same output files as one thread", "[cli][jobs]") {
  // Eight policies on the default layout (more policies than threads).
  compare_jobs("swiftmoe-gpt-small.yaml", "--set run.max_iterations=120", "swiftmoe");
  // A parallel layout on a measured compute profile with roofline fallbacks.
  compare_jobs("mixtral-4x8-h100.yaml",
               "--set run.max_iterations=3 --policies static:capacity_factor=1.25,symi,eplb:interval=1,flexmoe:interval=1",
               "mixtral");
  const fs::path dir = fresh_dir("moesim_jobs_", "bad");
  CHECK(shell(std::string(MOESIM_BINARY) + " compare " + MOESIM_SOURCE_DIR + "/scenarios/quickstart.yaml --jobs 0 > " +
              dir.string() + ".log 2>&1") == 2);
}
