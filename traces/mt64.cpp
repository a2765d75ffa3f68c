#include "traces/mt64.hpp"

namespace moesim {

namespace {

// The parameters of std::mt19937_64 ([rand.predef]).
constexpr std::size_t kN = Mt64::kStateWords;
constexpr std::size_t kM = 156;
constexpr std::uint64_t kMatrixA = 0xB5026F5AA96619E9ULL;
constexpr std::uint64_t kUpper = ~std::uint64_t{0} << 31;
constexpr std::uint64_t kLower = ~kUpper;

// One twist step: the branch-free form of "(y & 1) ? a : 0".
inline std::uint64_t twist(std::uint64_t cur, std::uint64_t next, std::uint64_t far) {
  const std::uint64_t y = (cur & kUpper) | (next & kLower);
  return far ^ (y >> 1) ^ ((std::uint64_t{0} - (y & 1U)) & kMatrixA);
}

}  // namespace

void Mt64::seed(std::uint64_t seed_value) {
  state_[0] = seed_value;
  for (std::size_t i = 1; i < kN; ++i) {
    state_[i] = 6364136223846793005ULL * (state_[i - 1] ^ (state_[i - 1] >> 62)) + i;
  }
  pos_ = kN;
}

void Mt64::refill() {
  std::uint64_t* x = state_;
  // The standard's three ranges: in each, a step reads words the same loop has either not yet
  // written or written at least 156 steps before, so the loops vectorise.
  for (std::size_t k = 0; k < kN - kM; ++k) x[k] = twist(x[k], x[k + 1], x[k + kM]);
  for (std::size_t k = kN - kM; k < kN - 1; ++k) x[k] = twist(x[k], x[k + 1], x[k + kM - kN]);
  x[kN - 1] = twist(x[kN - 1], x[0], x[kM - 1]);
  for (std::size_t k = 0; k < kN; ++k) {
    std::uint64_t z = x[k];
    z ^= (z >> 29) & 0x5555555555555555ULL;
    z ^= (z << 17) & 0x71D67FFFEDA60000ULL;
    z ^= (z << 37) & 0xFFF7EEE000000000ULL;
    z ^= z >> 43;
    out_[k] = z;
  }
  pos_ = 0;
}

}  // namespace moesim
