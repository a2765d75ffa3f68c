// Calibration profiles, their measured collectives section included (models/profile.cpp).
#include "fuzz/common.hpp"
#include "models/profile.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace moesim;
  return fuzz::guarded([&] { (void)parse_profile(std::string(fuzz::as_view(data, size)), "fuzz-profile.yaml"); });
}
