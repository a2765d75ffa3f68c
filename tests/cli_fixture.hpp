#pragma once
// For the tests that run the moesim binary or scripts through the shell.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "tests/file_fixture.hpp"

namespace moesim::testing {

// The exit status of `cmd` run by the shell; -1 when it did not exit normally.
[[nodiscard]] inline int shell(const std::string& cmd) {
  const int rc = std::system(cmd.c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// An absent folder `<temp>/<prefix><pid>_<name>`: per process, so that concurrent test runs do
// not share folders, and emptied of what an earlier run left.
[[nodiscard]] inline std::filesystem::path fresh_dir(const std::string& prefix, const std::string& name) {
  std::filesystem::path d =
      std::filesystem::temp_directory_path() / (prefix + std::to_string(::getpid()) + "_" + name);
  std::filesystem::remove_all(d);
  return d;
}

}  // namespace moesim::testing
