#pragma once
// JSON read at the importers' boundary: a size and nesting ceiling checked before the library
// sees the text, and every library exception (syntax, a number too large for a double, ...)
// turned into an InputError naming the file and byte offset. Internal to the importers.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <string_view>

#include "traces/importers/common.hpp"

namespace moesim::importers {

// A load matrix is 3 levels deep under at most one object; safetensors headers and
// meta_info.json are shallower. Deeper input is refused before parsing: the library's own
// recursion (dump, comparisons) would otherwise exhaust the stack on 100,000 levels.
inline constexpr int kMaxJsonDepth = 64;
// JSON inputs are parsed whole (about 20 bytes of memory per byte of text for numbers).
inline constexpr std::uintmax_t kMaxJsonBytes = std::uintmax_t{256} << 20;

inline std::string cap(std::string_view message) {
  return message.size() <= 200 ? std::string(message) : fmt::format("{}...", message.substr(0, 197));
}

// `base` is the text's offset in the file (a safetensors header starts at byte 8).
inline nlohmann::json parse_json_bounded(std::string_view text, const std::string& path, std::uint64_t base = 0) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) {
        fail(at_byte(path, base + i),
             fmt::format("JSON nested more than {} levels deep; a load matrix needs 3 (4 under a key)", kMaxJsonDepth));
      }
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    // The library quotes the token it read last, which may be a whole unterminated string.
    fail(at_byte(path, base + e.byte), fmt::format("invalid JSON: {}", cap(e.what())));
  } catch (const nlohmann::json::exception& e) {
    // E.g. out_of_range.406 "number overflow parsing '1e400'": no position; the token is quoted.
    std::uint64_t at = base;
    const std::string_view w = e.what();
    const auto q = w.find('\'');
    if (q != std::string_view::npos && w.size() > q + 2) {
      const std::string_view token = w.substr(q + 1, w.size() - q - 2);
      if (const auto p = text.find(token); p != std::string_view::npos) at = base + p;
    }
    fail(at_byte(path, at), fmt::format("invalid JSON: {} (numbers must fit a double)", cap(e.what())));
  }
}

inline nlohmann::json read_json_file(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) fail(path, "cannot open: it is a directory, not a file");
  std::ifstream in(path, std::ios::in | std::ios::binary);
  if (!in) fail(path, fs::exists(path, ec) ? "cannot open: not readable" : "cannot open: no such file");
  const std::uintmax_t size = fs::file_size(path, ec);
  if (!ec && size > kMaxJsonBytes) {
    fail(path, fmt::format("the JSON file has {} bytes; at most {} (256 MiB) are read", size, kMaxJsonBytes));
  }
  std::string text(static_cast<std::size_t>(ec ? 0 : size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (in.bad()) fail(path, "read error");
  return parse_json_bounded(text, path);
}

// A value for an error message: scalars as written (at most 40 characters), containers by size.
inline std::string brief(const nlohmann::json& v) {
  if (v.is_array()) return fmt::format("an array of {} values", v.size());
  if (v.is_object()) return fmt::format("an object of {} members", v.size());
  std::string s = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

}  // namespace moesim::importers
