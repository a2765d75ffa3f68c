#pragma once
// Small CSV helpers shared by the trace readers (no quoting: none of the supported CSV forms
// needs it).
#include <string_view>
#include <vector>

namespace moesim::csv {

[[nodiscard]] inline std::string_view trim(std::string_view s) {
  const auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// Splits on ',' into `out` (reused), trimming each field; returns the number of fields.
inline std::size_t split(std::string_view line, std::vector<std::string_view>& out) {
  out.clear();
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = line.find(',', start);
    if (comma == std::string_view::npos) {
      out.push_back(trim(line.substr(start)));
      return out.size();
    }
    out.push_back(trim(line.substr(start, comma - start)));
    start = comma + 1;
  }
}

}  // namespace moesim::csv
