// Text and hashing helpers the parts of the sweep share.
#include <fmt/format.h>

#include <cstdint>
#include <fstream>
#include <sstream>

#include "app/sweep/internal.hpp"

namespace moesim::sweep_internal {

namespace {

std::uint64_t fnv1a(const std::string& s) {
  std::uint64_t h = 14695981039346656037ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

}  // namespace

// FNV-1a alone barely changes its high bits when only the last byte differs (seed 1 vs 2):
// MurmurHash3's finaliser spreads every input bit over the whole word.
std::string short_hash(const std::string& s) {
  std::uint64_t h = fnv1a(s);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return fmt::format("{:012x}", h >> 16);
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string mark_text(const std::string& origin, const YAML::Node& n) {
  const YAML::Mark m = n.Mark();
  if (m.is_null() || m.line < 0) return origin;
  return fmt::format("{}:{}:{}", origin, m.line + 1, m.column + 1);
}

// The value as `--set` parses it back (quoted where YAML needs it; lists and mappings in flow style).
std::string assignment_value(const YAML::Node& n) {
  YAML::Emitter e;
  e.SetSeqFormat(YAML::Flow);
  e.SetMapFormat(YAML::Flow);
  e << n;
  return e.c_str();
}

// The value as the user wrote it, for table cells and run ids.
std::string display_value(const YAML::Node& n) { return n.IsScalar() ? n.Scalar() : assignment_value(n); }

}  // namespace moesim::sweep_internal
