#pragma once
// MT19937-64 with exactly std::mt19937_64's output sequence (the C++ standard fixes it; a test
// compares the two), generated 312 words at a time into a buffer of tempered outputs. libstdc++'s
// engine branches on a random bit in every twist step and tempers each output on the call; this
// one twists and tempers in branch-free loops the compiler vectorises, about 4x cheaper per word,
// which matters to the synthetic generator (2.5 M words per DeepSeek-V3 iteration).
#include <cstddef>
#include <cstdint>

namespace moesim {

class Mt64 {
 public:
  using result_type = std::uint64_t;
  static constexpr std::size_t kStateWords = 312;

  explicit Mt64(std::uint64_t seed_value = 5489U) { seed(seed_value); }

  // Same state as std::mt19937_64::seed(seed_value).
  void seed(std::uint64_t seed_value);

  [[nodiscard]] static constexpr result_type min() { return 0; }
  [[nodiscard]] static constexpr result_type max() { return ~result_type{0}; }

  result_type operator()() {
    if (pos_ == kStateWords) refill();
    return out_[pos_++];
  }

 private:
  void refill();  // one twist of the state, then tempering into out_

  std::uint64_t state_[kStateWords];
  std::uint64_t out_[kStateWords];
  std::size_t pos_ = kStateWords;
};

}  // namespace moesim
