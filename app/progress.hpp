#pragma once
// A one-line progress bar on stderr (done / total, percent, elapsed, ETA) for long runs and
// sweeps. It draws only when stderr is a terminal, so logs and pipes stay clean.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <mutex>
#include <string>

#include "app/scenario.hpp"

namespace moesim {

[[nodiscard]] bool stderr_is_terminal();

// The bar's text without terminal control characters, e.g.
// "sweep [#########---------------] 12/40 runs  30%  0:07 elapsed, ETA 0:18".
// `counted` is how many of `done` took time (resumed runs are done but took none): the ETA
// assumes the remaining units take as long as those did on average. No ETA before the first.
[[nodiscard]] std::string progress_line(const std::string& title, std::int64_t done, std::int64_t total,
                                        const std::string& unit, double elapsed_s, std::int64_t counted);

class Progress {
 public:
  // `enabled` defaults to "stderr is a terminal"; tests pass a file and true.
  Progress(std::string title, std::int64_t total, std::string unit);
  Progress(std::string title, std::int64_t total, std::string unit, bool enabled, std::FILE* out);
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  ~Progress();

  // Thread-safe. `advance`: n more units done by work; `skip`: n more done without work.
  void advance(std::int64_t n = 1);
  void skip(std::int64_t n = 1);
  // Sets the count of units done by work (for callers that know the position, not the step).
  void set(std::int64_t done);
  // Replaces the bar with "title: done[/total] unit in m:ss" and ends the line; later calls do
  // nothing.
  void finish();
  [[nodiscard]] bool enabled() const { return enabled_; }

  // RunOptions::on_iteration for `moesim run` / `compare`: one bar over every policy's
  // iterations (total = policies x run.max_iterations; a policy that converges early jumps
  // ahead to the next policy's share). The bar must outlive the run.
  [[nodiscard]] std::function<void(const std::string& label, std::int64_t iteration)> iteration_hook(
      const Scenario& s);

 private:
  void draw(bool force);  // mutex held
  std::string title_;
  std::string unit_;
  std::int64_t total_;
  std::int64_t done_ = 0;
  std::int64_t skipped_ = 0;
  bool enabled_;
  bool finished_ = false;
  std::FILE* out_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_{};
  std::size_t last_width_ = 0;
  std::mutex mu_;
};

}  // namespace moesim
