#pragma once
// The discrete-event core: a binary heap ordered by (time, insertion sequence), so events at the
// same nanosecond run in the order they were scheduled (as in ns-3) and every run is
// reproducible. Single-threaded by design.
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <vector>

#include "core/units.hpp"

namespace moesim {

class Engine {
 public:
  using Handler = std::function<void(Engine&)>;

  // Schedules `h` at absolute time `at_ns`; scheduling in the past is a bug in a model.
  void schedule_at(TimeNs at_ns, Handler h) {
    if (at_ns < now_) throw std::logic_error("Engine: event scheduled in the past");
    heap_.push_back(Event{at_ns, seq_++, std::move(h)});
    sift_up(heap_.size() - 1);
  }
  void schedule_in(TimeNs delay_ns, Handler h) { schedule_at(now_ + delay_ns, std::move(h)); }

  // Runs until the queue is empty. Returns the number of events executed.
  std::uint64_t run() {
    std::uint64_t n = 0;
    while (!heap_.empty()) {
      Event ev = pop();
      now_ = ev.at_ns;
      ev.handler(*this);
      ++n;
    }
    executed_ += n;
    return n;
  }

  // Accounts `events` that a model resolved without the queue (in another order, to the same
  // effect) and moves the clock to `at_ns`, the time of the last of them.
  void advance(TimeNs at_ns, std::uint64_t events) {
    if (at_ns < now_ || !heap_.empty()) throw std::logic_error("Engine: advance past pending events or into the past");
    now_ = at_ns;
    executed_ += events;
  }

  [[nodiscard]] TimeNs now() const { return now_; }
  [[nodiscard]] bool empty() const { return heap_.empty(); }
  [[nodiscard]] std::size_t pending() const { return heap_.size(); }
  [[nodiscard]] std::uint64_t executed() const { return executed_; }

 private:
  struct Event {
    TimeNs at_ns;
    std::uint64_t seq;
    Handler handler;
  };
  static bool before(const Event& a, const Event& b) {
    return a.at_ns < b.at_ns || (a.at_ns == b.at_ns && a.seq < b.seq);
  }
  void sift_up(std::size_t i) {
    Event e = std::move(heap_[i]);
    while (i > 0) {
      std::size_t parent = (i - 1) / 2;
      if (!before(e, heap_[parent])) break;
      heap_[i] = std::move(heap_[parent]);
      i = parent;
    }
    heap_[i] = std::move(e);
  }
  Event pop() {
    Event top = std::move(heap_.front());
    Event last = std::move(heap_.back());
    heap_.pop_back();
    if (!heap_.empty()) {
      std::size_t i = 0, n = heap_.size();
      for (;;) {
        std::size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && before(heap_[c + 1], heap_[c])) ++c;
        if (!before(heap_[c], last)) break;
        heap_[i] = std::move(heap_[c]);
        i = c;
      }
      heap_[i] = std::move(last);
    }
    return top;
  }

  std::vector<Event> heap_;
  std::uint64_t seq_ = 0;
  TimeNs now_ = 0;
  std::uint64_t executed_ = 0;
};

}  // namespace moesim
