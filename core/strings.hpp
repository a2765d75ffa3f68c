#pragma once
// Small string helpers shared by the error messages of several layers.
#include <string>
#include <string_view>
#include <vector>

namespace moesim {

// "a, b, c" (or with another separator): the lists of allowed values in error messages.
[[nodiscard]] inline std::string join(const std::vector<std::string>& v, std::string_view sep = ", ") {
  std::string out;
  for (const std::string& s : v) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

}  // namespace moesim
