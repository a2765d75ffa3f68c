#include "app/progress.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>

namespace moesim {
namespace {

constexpr int kBarWidth = 30;
// Redrawing more often than this costs terminal time and is not readable anyway.
constexpr auto kRedrawEvery = std::chrono::milliseconds(100);

std::string clock_text(double s) {
  const auto t = static_cast<std::int64_t>(std::llround(std::max(0.0, s)));
  if (t >= 3600) return fmt::format("{}:{:02}:{:02}", t / 3600, (t / 60) % 60, t % 60);
  return fmt::format("{}:{:02}", t / 60, t % 60);
}

}  // namespace

bool stderr_is_terminal() { return ::isatty(2) == 1; }

std::string progress_line(const std::string& title, std::int64_t done, std::int64_t total, const std::string& unit,
                          double elapsed_s, std::int64_t counted) {
  const std::int64_t shown = std::clamp<std::int64_t>(done, 0, std::max<std::int64_t>(total, 0));
  const double frac = total > 0 ? static_cast<double>(shown) / static_cast<double>(total) : 1.0;
  const auto filled = static_cast<int>(std::floor(frac * kBarWidth));
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar.append(static_cast<std::size_t>(kBarWidth - filled), '-');
  std::string line = fmt::format("{} [{}] {}/{} {} {:>3}%  {} elapsed", title, bar, shown, total, unit,
                                 static_cast<int>(std::floor(frac * 100.0)), clock_text(elapsed_s));
  if (shown < total && counted > 0) {
    const double eta = elapsed_s / static_cast<double>(counted) * static_cast<double>(total - shown);
    line += ", ETA " + clock_text(eta);
  }
  return line;
}

Progress::Progress(std::string title, std::int64_t total, std::string unit)
    : Progress(std::move(title), total, std::move(unit), stderr_is_terminal(), stderr) {}

Progress::Progress(std::string title, std::int64_t total, std::string unit, bool enabled, std::FILE* out)
    : title_(std::move(title)),
      unit_(std::move(unit)),
      total_(total),
      enabled_(enabled && out != nullptr),
      out_(out),
      start_(std::chrono::steady_clock::now()) {}

Progress::~Progress() { finish(); }

void Progress::advance(std::int64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  done_ += n;
  draw(false);
}

void Progress::skip(std::int64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  skipped_ += n;
  draw(false);
}

void Progress::set(std::int64_t done) {
  std::lock_guard<std::mutex> lock(mu_);
  done_ = done;
  draw(false);
}

void Progress::finish() {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  finished_ = true;
  if (!enabled_) return;
  // The bar gives way to one line of what was done: a run that converged early did fewer
  // iterations than the bar's total, which is no failure.
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const std::int64_t done = done_ + skipped_;
  const std::string line = done >= total_ ? fmt::format("{}: {} {} in {}", title_, done, unit_, clock_text(elapsed))
                                          : fmt::format("{}: {}/{} {} in {}", title_, done, total_, unit_,
                                                        clock_text(elapsed));
  const std::size_t pad = last_width_ > line.size() ? last_width_ - line.size() : 0;
  std::fprintf(out_, "\r%s%*s\n", line.c_str(), static_cast<int>(pad), "");
  std::fflush(out_);
}

void Progress::draw(bool force) {
  if (!enabled_ || finished_) return;
  const auto now = std::chrono::steady_clock::now();
  if (!force && last_width_ > 0 && now - last_draw_ < kRedrawEvery) return;
  last_draw_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const std::string line = progress_line(title_, done_ + skipped_, total_, unit_, elapsed, done_);
  // Pad over the previous line's tail: the ETA text can get shorter.
  const std::size_t pad = last_width_ > line.size() ? last_width_ - line.size() : 0;
  std::fprintf(out_, "\r%s%*s", line.c_str(), static_cast<int>(pad), "");
  std::fflush(out_);
  last_width_ = line.size();
}

std::function<void(const std::string&, std::int64_t)> Progress::iteration_hook(const Scenario& s) {
  // Disabled: no callback at all, so the runner does not pay for one per iteration.
  if (!enabled_) return {};
  auto index = std::make_shared<std::map<std::string, std::int64_t>>();
  for (std::size_t i = 0; i < s.policies.size(); ++i) (*index)[s.policies[i].label] = static_cast<std::int64_t>(i);
  const std::int64_t per_policy = s.run.max_iterations;
  return [this, index, per_policy](const std::string& label, std::int64_t iteration) {
    auto it = index->find(label);
    if (it != index->end()) set(it->second * per_policy + iteration + 1);
  };
}

}  // namespace moesim
