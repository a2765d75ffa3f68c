// The scenario loader (YAML, includes resolved next to the shipped scenarios).
#include "app/scenario.hpp"
#include "fuzz/common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace moesim;
  return fuzz::guarded([&] {
    // The origin sits in scenarios/ so that relative includes and trace paths of the seeds resolve.
    const Scenario s = load_scenario_text(std::string(fuzz::as_view(data, size)),
                                          MOESIM_SOURCE_DIR "/scenarios/fuzz.yaml", {}, std::nullopt);
    // A run writes the resolved scenario into summary.json: that must not throw either.
    (void)s.to_json().dump();
  });
}
