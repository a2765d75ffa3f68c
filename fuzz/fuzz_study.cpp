// Study files (`moesim sweep`): strict keys, grid, and every point's scenario loaded once.
#include "app/sweep.hpp"
#include "fuzz/common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace moesim;
  return fuzz::guarded([&] {
    // In studies/ so that the seeds' relative `base` paths resolve.
    (void)load_study_text(std::string(fuzz::as_view(data, size)), MOESIM_SOURCE_DIR "/studies/fuzz.yaml");
  });
}
