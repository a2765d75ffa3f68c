#pragma once
#include <memory>
#include <string>
#include <vector>

#include "traces/trace.hpp"

namespace moesim {

// Every policy replays the same trace: the first pass keeps the iterations it read (up to a
// memory budget) so that the others need not regenerate or re-read them.
class ReplayCache final : public TraceSource {
 public:
  ReplayCache(std::unique_ptr<TraceSource> inner, double budget_bytes)
      : inner_(std::move(inner)), budget_bytes_(budget_bytes) {}
  [[nodiscard]] TraceShape shape() const override { return inner_->shape(); }
  bool next(IterationCounts& out) override {
    if (pos_ < cached_.size()) {
      out = cached_[pos_++];
      return true;
    }
    // Past the cache: bring the inner source to iteration pos_ (it may be further on when the
    // cache filled up during an earlier pass).
    if (inner_pos_ > pos_) {
      inner_->rewind();
      inner_pos_ = 0;
    }
    for (; inner_pos_ < pos_; ++inner_pos_)
      if (!inner_->next(out)) return false;
    if (!inner_->next(out)) return false;
    ++inner_pos_;
    if (!full_ && pos_ == cached_.size()) {
      bytes_ += static_cast<double>(out.counts.size() * sizeof(std::int64_t));
      if (bytes_ <= budget_bytes_) cached_.push_back(out);
      else full_ = true;
    }
    ++pos_;
    return true;
  }
  void rewind() override { pos_ = 0; }
  [[nodiscard]] std::string describe() const override { return inner_->describe(); }

 private:
  std::unique_ptr<TraceSource> inner_;
  double budget_bytes_;
  double bytes_ = 0.0;
  bool full_ = false;
  std::vector<IterationCounts> cached_;
  std::size_t pos_ = 0;        // next iteration this source returns
  std::size_t inner_pos_ = 0;  // next iteration the inner source returns
};

}  // namespace moesim
