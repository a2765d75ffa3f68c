#include "traces/prefetch.hpp"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace moesim {

namespace {

class PrefetchTrace final : public TraceSource {
 public:
  PrefetchTrace(std::unique_ptr<TraceSource> inner, int depth)
      : inner_(std::move(inner)),
        depth_(static_cast<std::size_t>(std::max(depth, 1))),
        shape_(inner_->shape()),
        describe_(inner_->describe()) {
    start();
  }
  PrefetchTrace(const PrefetchTrace&) = delete;
  PrefetchTrace& operator=(const PrefetchTrace&) = delete;
  ~PrefetchTrace() override { stop(); }

  [[nodiscard]] TraceShape shape() const override { return shape_; }
  [[nodiscard]] std::string describe() const override { return describe_; }

  bool next(IterationCounts& out) override {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !ready_.empty(); });
    ++taken_;
    Slot& front = ready_.front();
    // The end and an error stay at the front: the thread has stopped reading, and every later
    // call answers the same until a rewind.
    if (front.error) std::rethrow_exception(front.error);
    if (!front.more) return false;
    std::swap(out, front.counts);
    // The caller's previous buffer is reused for a later iteration. One spare is all the thread
    // needs, so at most depth + 2 iterations are held: the caller's, depth ready, and one spare
    // or being read.
    if (free_.empty()) free_.push_back(std::move(front.counts));
    ready_.pop_front();
    lock.unlock();
    cv_.notify_all();
    return true;
  }

  void rewind() override {
    {
      const std::lock_guard<std::mutex> lock(mu_);
      // Nothing taken since the start: what was read ahead is the trace's beginning already.
      if (taken_ == 0) return;
    }
    stop();
    if (free_.empty() && !ready_.empty()) free_.push_back(std::move(ready_.front().counts));
    ready_.clear();
    taken_ = 0;
    inner_->rewind();
    start();
  }

 private:
  struct Slot {
    IterationCounts counts;
    bool more = true;  // false: the inner source has ended
    std::exception_ptr error;
  };

  void start() {
    stopping_ = false;
    thread_ = std::thread([this] { read_ahead(); });
  }

  void stop() {
    {
      const std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    // An iteration being read is finished first: the inner source is never interrupted.
    if (thread_.joinable()) thread_.join();
  }

  // The thread: keeps up to depth_ iterations ready, in order, and stops at the end of the
  // trace, at an error, or when asked.
  void read_ahead() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stopping_ || ready_.size() < depth_; });
      if (stopping_) return;
      Slot s;
      if (!free_.empty()) {
        s.counts = std::move(free_.back());
        free_.pop_back();
      }
      lock.unlock();
      try {
        // As the runner hands its buffer to a source: zeroed, of the trace's shape.
        s.counts.reset(shape_);
        s.more = inner_->next(s.counts);
      } catch (...) {
        s.error = std::current_exception();
      }
      lock.lock();
      const bool last = !s.more || s.error;
      ready_.push_back(std::move(s));
      cv_.notify_all();
      if (last) return;
    }
  }

  std::unique_ptr<TraceSource> inner_;
  std::size_t depth_;
  TraceShape shape_;
  std::string describe_;
  std::mutex mu_;
  std::condition_variable cv_;         // a slot became ready or free, or the thread is asked to stop
  std::deque<Slot> ready_;             // read ahead, in trace order
  std::vector<IterationCounts> free_;  // buffers to reuse
  std::size_t taken_ = 0;              // next() calls since the start or the last rewind
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace

std::unique_ptr<TraceSource> prefetch_trace(std::unique_ptr<TraceSource> inner, int depth) {
  return std::make_unique<PrefetchTrace>(std::move(inner), depth);
}

}  // namespace moesim
