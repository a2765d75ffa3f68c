#include "app/report.hpp"

#include <fmt/format.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <system_error>

#include "core/error.hpp"

extern char** environ;

namespace moesim {
namespace {

constexpr const char* kReportUsage =
    "moesim report RESULTS_DIR [options]\n"
    "  RESULTS_DIR           a folder written by `moesim compare --out` or `moesim sweep --out`\n"
    "  --format md|html      the report page: RESULTS_DIR/report.md (default) or report.html\n"
    "  --out DIR             folder for the PNG pictures (default RESULTS_DIR/plots)\n"
    "  --run ID              for a sweep folder: the run (runs/<ID>/, written by sweep --details) whose\n"
    "                        per-iteration pictures go in the report (default: the first run with details)\n"
    "  -h [ --help ]         show this help\n"
    "Needs python3 with matplotlib (Debian: python3-matplotlib). The pictures are drawn by scripts/plot.py;\n"
    "set MOESIM_PLOT_SCRIPT to use another copy of it.\n";

std::string plot_script() {
  if (const char* env = std::getenv("MOESIM_PLOT_SCRIPT"); env != nullptr && *env != '\0') return env;
#ifdef MOESIM_PLOT_SCRIPT_FROM_BIN
  // An installed CLI (cmake --install) uses the copy installed with it, so it needs no source tree.
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto installed = exe.parent_path() / MOESIM_PLOT_SCRIPT_FROM_BIN;
    if (std::filesystem::is_regular_file(installed, ec)) return installed.lexically_normal().string();
  }
#endif
#ifdef MOESIM_PLOT_SCRIPT_PATH
  return MOESIM_PLOT_SCRIPT_PATH;
#else
  return "scripts/plot.py";
#endif
}

}  // namespace

int cmd_report(const std::vector<std::string>& args) {
  std::string dir, format = "md", out, run;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&](const char* name) -> std::string {
      if (i + 1 >= args.size()) throw InputError(fmt::format("moesim report: {} needs a value", name));
      return args[++i];
    };
    if (a == "--help" || a == "-h") {
      std::cout << kReportUsage;
      return 0;
    } else if (a == "--format") {
      format = value("--format");
      if (format != "md" && format != "html")
        throw InputError(fmt::format("moesim report: --format '{}': allowed: md, html", format));
    } else if (a == "--out") {
      out = value("--out");
    } else if (a == "--run") {
      run = value("--run");
    } else if (a.size() > 1 && a[0] == '-') {
      throw InputError(fmt::format("moesim report: unknown option '{}'; options: --format, --out, --run, --help", a));
    } else if (dir.empty()) {
      dir = a;
    } else {
      throw InputError(fmt::format("moesim report: one RESULTS_DIR expected, got '{}' and '{}'", dir, a));
    }
  }
  if (dir.empty()) throw InputError("moesim report: missing RESULTS_DIR (see moesim report --help)");
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) throw InputError(fmt::format("moesim report: {}: no such directory", dir));
  const std::string script = plot_script();
  if (!std::filesystem::is_regular_file(script, ec))
    throw InputError(fmt::format("moesim report: the plotting script {} is missing; set MOESIM_PLOT_SCRIPT to the "
                                 "path of scripts/plot.py",
                                 script));

  std::vector<std::string> argv_s{"python3", script, dir, "--report", "--format", format};
  if (!out.empty()) argv_s.insert(argv_s.end(), {"--out", out});
  if (!run.empty()) argv_s.insert(argv_s.end(), {"--run", run});
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  std::cout.flush();
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, "python3", nullptr, nullptr, argv.data(), environ);
  if (rc != 0)
    throw InputError(fmt::format("moesim report: cannot start python3: {} (Debian: apt-get install python3 "
                                 "python3-matplotlib)",
                                 std::strerror(rc)));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw std::runtime_error(fmt::format("moesim report: waitpid: {}", std::strerror(errno)));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  throw std::runtime_error(fmt::format("moesim report: {} stopped by signal {}", script, WTERMSIG(status)));
}

}  // namespace moesim
