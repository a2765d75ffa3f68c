#pragma once
// A routing trace held in memory, for tests with exact expectations.
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "traces/trace.hpp"

namespace moesim::testing {

class VectorTrace final : public TraceSource {
 public:
  explicit VectorTrace(std::vector<IterationCounts> its) : its_(std::move(its)) {}
  [[nodiscard]] TraceShape shape() const override { return its_.front().shape; }
  bool next(IterationCounts& out) override {
    if (pos_ >= its_.size()) return false;
    out = its_[pos_++];
    return true;
  }
  void rewind() override { pos_ = 0; }
  [[nodiscard]] std::string describe() const override { return "vector"; }

 private:
  std::vector<IterationCounts> its_;
  std::size_t pos_ = 0;
};

}  // namespace moesim::testing
