#pragma once
#include <map>
#include <string>
#include <string_view>

namespace moesim {
// Preset files keyed by their path under models/ (e.g. "clusters/dgx-a100.yaml").
[[nodiscard]] const std::map<std::string, std::string_view>& embedded_presets();
}  // namespace moesim
