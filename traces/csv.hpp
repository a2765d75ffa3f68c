#pragma once
// Small CSV helpers shared by the trace readers (no quoting: none of the supported CSV forms
// needs it).
#include <cstdint>
#include <istream>
#include <string>
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

// Reads `in` up to the next line that is neither blank nor a '#' comment and sets `content` to it,
// trimmed (`line` holds the text, `line_no` counts the lines read). A UTF-8 byte-order mark
// (spreadsheet exports) on line 1 is not part of the content. False at the end of the stream or
// on a read error, which the caller tells apart with `in.bad()` and reports with its own location.
inline bool next_content_line(std::istream& in, std::string& line, std::int64_t& line_no,
                              std::string_view& content) {
  while (std::getline(in, line)) {
    ++line_no;
    std::string_view s = line;
    if (line_no == 1 && s.substr(0, 3) == "\xEF\xBB\xBF") s.remove_prefix(3);
    s = trim(s);
    if (s.empty() || s.front() == '#') continue;
    content = s;
    return true;
  }
  return false;
}

}  // namespace moesim::csv
