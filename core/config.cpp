#include "core/config.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>

#include "core/error.hpp"
#include "core/strings.hpp"

namespace moesim {

namespace {

// The offset of the first byte that does not begin a valid UTF-8 sequence; npos when all are.
std::size_t utf8_error(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t n = 0;
    unsigned min = 0;
    if ((c & 0xE0) == 0xC0) {
      n = 1;
      min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      min = 0x10000;
    } else {
      return i;
    }
    unsigned cp = c & (0x3FU >> n);
    for (std::size_t k = 1; k <= n; ++k) {
      if (i + k >= s.size()) return i;
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (d & 0x3FU);
    }
    // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8 either.
    if (cp < min || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) return i;
    i += n + 1;
  }
  return std::string_view::npos;
}

}  // namespace

std::string yaml_kind(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null: return "null";
    case YAML::NodeType::Scalar: {
      // Quoted input is capped: a 50 MB scalar must not become a 50 MB message.
      const std::string& v = n.Scalar();
      if (v.size() <= 60) return fmt::format("'{}'", v);
      return fmt::format("'{}...' ({} characters)", v.substr(0, 57), v.size());
    }
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    default: return "nothing";
  }
}

namespace {


}  // namespace

Cfg::Cfg(YAML::Node node, std::string origin, std::string path)
    : node_(std::move(node)), origin_(std::move(origin)), path_(std::move(path)) {
  if (node_ && !node_.IsNull() && !node_.IsMap()) {
    throw InputError(fmt::format("{}: must be a mapping, found {}", where(""), yaml_kind(node_)));
  }
  // yaml-cpp keeps a repeated key and every lookup finds the first: reading is strict, so a
  // second one is an error, not a silently ignored value.
  if (node_ && node_.IsMap()) {
    std::map<std::string, YAML::Mark> seen;
    for (const auto& kv : node_) {
      if (!kv.first.IsScalar()) continue;
      const std::string k = kv.first.Scalar();
      const auto [it, fresh] = seen.emplace(k, kv.first.Mark());
      if (fresh) continue;
      const YAML::Mark m = kv.first.Mark();
      throw InputError(fmt::format("{}:{}:{}: key '{}' is given twice (first at line {}); each key may appear once",
                                   origin_, m.line + 1, m.column + 1, key_path(k), it->second.line + 1));
    }
  }
}

std::string Cfg::key_path(const std::string& key) const {
  if (path_.empty()) return key;
  if (key.empty()) return path_;
  return path_ + "." + key;
}

const std::string* Cfg::override_of(std::string path) const {
  if (!overrides_) return nullptr;
  while (!path.empty()) {
    auto it = overrides_->find(path);
    if (it != overrides_->end()) return &it->second;
    const auto cut = path.find_last_of(".[");
    if (cut == std::string::npos) break;
    path.resize(cut);
  }
  return nullptr;
}

const std::string& Cfg::origin_of(std::string path) const {
  if (!origins_) return origin_;
  while (true) {
    auto it = origins_->find(path);
    if (it != origins_->end()) return it->second;
    const auto cut = path.find_last_of(".[");
    if (cut == std::string::npos) return origin_;
    path.resize(cut);
  }
}

std::string Cfg::where(const std::string& key) const {
  const std::string full = key_path(key);
  if (const std::string* o = override_of(full)) return fmt::format("--set '{}': key '{}'", *o, full);
  YAML::Node n = key.empty() ? YAML::Node() : get(key);
  YAML::Mark m = (n && !n.Mark().is_null()) ? n.Mark() : node_ ? node_.Mark() : YAML::Mark::null_mark();
  // The node's position is in the file it was read from (full's when the key is there, else ours).
  const std::string& file = origin_of(n && !n.Mark().is_null() ? full : path_);
  std::string pos = m.is_null() || m.line < 0
                        ? file
                        : fmt::format("{}:{}:{}", file, m.line + 1, m.column + 1);
  if (full.empty()) return pos;
  return fmt::format("{}: key '{}'", pos, full);
}

void Cfg::fail(const std::string& key, const std::string& message) const {
  throw InputError(fmt::format("{}: {}", where(key), message));
}

YAML::Node Cfg::get(const std::string& key) const {
  if (!node_ || !node_.IsMap()) return YAML::Node();
  const YAML::Node& cn = node_;
  return cn[key];
}

bool Cfg::has(const std::string& key) const {
  YAML::Node n = get(key);
  return n && !n.IsNull();
}

void Cfg::touch(const std::string& key) { known_.insert(key); }

double Cfg::need_double(const std::string& key, double min, double max) {
  known_.insert(key);
  if (!has(key)) fail(key, fmt::format("is required (a number in [{}, {}])", min, max));
  return get_double(key, 0.0, min, max);
}

double Cfg::get_double(const std::string& key, double def, double min, double max) {
  known_.insert(key);
  YAML::Node n = get(key);
  if (!n || n.IsNull()) return def;
  double v = 0.0;
  if (!n.IsScalar() || !YAML::convert<double>::decode(n, v) || !std::isfinite(v)) {
    fail(key, fmt::format("expected a number in [{}, {}], found {}", min, max, yaml_kind(n)));
  }
  if (v < min || v > max) fail(key, fmt::format("{} is out of range; allowed [{}, {}]", v, min, max));
  return v;
}

std::int64_t Cfg::need_int(const std::string& key, std::int64_t min, std::int64_t max) {
  known_.insert(key);
  if (!has(key)) fail(key, fmt::format("is required (an integer in [{}, {}])", min, max));
  return get_int(key, 0, min, max);
}

std::int64_t Cfg::get_int(const std::string& key, std::int64_t def, std::int64_t min,
                          std::int64_t max) {
  known_.insert(key);
  YAML::Node n = get(key);
  if (!n || n.IsNull()) return def;
  long long v = 0;
  if (!n.IsScalar() || !YAML::convert<long long>::decode(n, v)) {
    fail(key, fmt::format("expected an integer in [{}, {}], found {}", min, max, yaml_kind(n)));
  }
  if (v < min || v > max) fail(key, fmt::format("{} is out of range; allowed [{}, {}]", v, min, max));
  return v;
}

bool Cfg::get_bool(const std::string& key, bool def) {
  known_.insert(key);
  YAML::Node n = get(key);
  if (!n || n.IsNull()) return def;
  bool v = false;
  if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v)) {
    fail(key, fmt::format("expected true or false, found {}", yaml_kind(n)));
  }
  return v;
}

std::string Cfg::get_string(const std::string& key, const std::string& def) {
  known_.insert(key);
  YAML::Node n = get(key);
  if (!n || n.IsNull()) return def;
  if (!n.IsScalar()) fail(key, fmt::format("expected a string, found {}", yaml_kind(n)));
  // Strings reach summary.json and file names; JSON needs UTF-8 (a `--set` value is not checked
  // by load_yaml_string).
  if (const std::size_t bad = utf8_error(n.Scalar()); bad != std::string_view::npos) {
    fail(key, fmt::format("the string is not valid UTF-8 (byte {} of it)", bad));
  }
  return n.Scalar();
}

std::string Cfg::need_string(const std::string& key) {
  known_.insert(key);
  if (!has(key)) fail(key, "is required (a string)");
  return get_string(key, "");
}

std::string Cfg::get_enum(const std::string& key, const std::string& def,
                          const std::vector<std::string>& allowed) {
  std::string v = get_string(key, def);
  for (const auto& a : allowed)
    if (a == v) return v;
  fail(key, fmt::format("'{}' is not allowed; allowed: {}", v, join(allowed)));
}

std::vector<std::int64_t> Cfg::get_int_list(const std::string& key,
                                            const std::vector<std::int64_t>& def,
                                            std::int64_t min, std::int64_t max) {
  known_.insert(key);
  YAML::Node n = get(key);
  if (!n || n.IsNull()) return def;
  if (!n.IsSequence()) fail(key, fmt::format("expected a list of integers, found {}", yaml_kind(n)));
  std::vector<std::int64_t> out;
  for (std::size_t i = 0; i < n.size(); ++i) {
    long long v = 0;
    if (!n[i].IsScalar() || !YAML::convert<long long>::decode(n[i], v) || v < min || v > max) {
      fail(key, fmt::format("item {} is {}; allowed integers in [{}, {}]", i, yaml_kind(n[i]), min, max));
    }
    out.push_back(v);
  }
  return out;
}

std::vector<double> Cfg::get_double_list(const std::string& key, const std::vector<double>& def,
                                         double min, double max) {
  known_.insert(key);
  YAML::Node n = get(key);
  if (!n || n.IsNull()) return def;
  if (!n.IsSequence()) fail(key, fmt::format("expected a list of numbers, found {}", yaml_kind(n)));
  std::vector<double> out;
  for (std::size_t i = 0; i < n.size(); ++i) {
    double v = 0;
    if (!n[i].IsScalar() || !YAML::convert<double>::decode(n[i], v) || !std::isfinite(v) || v < min ||
        v > max) {
      fail(key, fmt::format("item {} is {}; allowed numbers in [{}, {}]", i, yaml_kind(n[i]), min, max));
    }
    out.push_back(v);
  }
  return out;
}

Cfg Cfg::child(const std::string& key) {
  known_.insert(key);
  YAML::Node n = get(key);
  if (n && !n.IsNull() && !n.IsMap()) {
    fail(key, fmt::format("expected a mapping, found {}", yaml_kind(n)));
  }
  Cfg c(n ? n : YAML::Node(YAML::NodeType::Map), origin_, key_path(key));
  c.overrides_ = overrides_;
  c.origins_ = origins_;
  return c;
}

void Cfg::finish() const {
  if (!node_ || !node_.IsMap()) return;
  for (auto it = node_.begin(); it != node_.end(); ++it) {
    std::string k = it->first.Scalar();
    if (known_.count(k)) continue;
    std::vector<std::string> allowed(known_.begin(), known_.end());
    if (const std::string* o = override_of(key_path(k))) {
      throw InputError(
          fmt::format("--set '{}': unknown key '{}'; allowed keys here: {}", *o, key_path(k), join(allowed)));
    }
    YAML::Mark m = it->first.Mark();
    const std::string& file = origin_of(key_path(k));
    std::string pos = m.is_null() || m.line < 0
                          ? file
                          : fmt::format("{}:{}:{}", file, m.line + 1, m.column + 1);
    throw InputError(fmt::format("{}: unknown key '{}'; allowed keys here: {}", pos, key_path(k),
                                 join(allowed)));
  }
}

std::string apply_override(YAML::Node& root, const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw InputError(fmt::format("--set '{}': expected key.path=value", assignment));
  }
  std::string path = assignment.substr(0, eq);
  std::string value = assignment.substr(eq + 1);
  std::vector<std::string> parts;
  std::stringstream ss(path);
  for (std::string p; std::getline(ss, p, '.');) {
    if (p.empty()) throw InputError(fmt::format("--set '{}': empty key in path '{}'", assignment, path));
    parts.push_back(p);
  }
  YAML::Node parsed;
  try {
    parsed = YAML::Load(value);
  } catch (const YAML::Exception& e) {
    throw InputError(fmt::format("--set '{}': value is not valid YAML: {}", assignment, e.msg));
  }
  // Walk with fresh handles: yaml-cpp's operator[] on a non-const node creates missing keys.
  std::vector<YAML::Node> chain{root};
  std::string created;  // the outermost mapping this assignment creates, if any
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node cur = chain.back();
    YAML::Node next = cur[parts[i]];
    if (!next.IsDefined() || next.IsNull()) {
      cur[parts[i]] = YAML::Node(YAML::NodeType::Map);
      next = cur[parts[i]];
      if (created.empty()) {
        for (std::size_t k = 0; k <= i; ++k) created += (k ? "." : "") + parts[k];
      }
    }
    if (!next.IsMap()) {
      throw InputError(fmt::format("--set '{}': key '{}' is not a mapping", assignment, parts[i]));
    }
    chain.push_back(next);
  }
  chain.back()[parts.back()] = parsed;
  return created.empty() ? path : created;
}

YAML::Node load_yaml_string(const std::string& text, const std::string& origin) {
  if (const std::size_t bad = utf8_error(text); bad != std::string_view::npos) {
    const auto end = text.begin() + static_cast<std::ptrdiff_t>(bad);
    const auto line = 1 + std::count(text.begin(), end, '\n');
    const std::size_t nl = bad == 0 ? std::string::npos : text.rfind('\n', bad - 1);
    const std::size_t col = bad - (nl == std::string::npos ? 0 : nl + 1) + 1;
    throw InputError(fmt::format("{}:{}:{}: the file is not valid UTF-8 (byte offset {}); YAML files must be UTF-8",
                                 origin, line, col, bad));
  }
  try {
    YAML::Node n = YAML::Load(text);
    return n;
  } catch (const YAML::Exception& e) {
    throw InputError(fmt::format("{}:{}:{}: YAML syntax error: {}", origin, e.mark.line + 1,
                                 e.mark.column + 1, e.msg));
  }
}

YAML::Node load_yaml_file(const std::string& file) {
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) {
    throw InputError(fmt::format("{}: cannot open file: it is a directory", file));
  }
  std::ifstream in(file);
  // The OS reason (no such file, permission denied) is what the user needs to fix it.
  if (!in) throw InputError(fmt::format("{}: cannot open file: {}", file, std::strerror(errno)));
  std::stringstream ss;
  ss << in.rdbuf();
  return load_yaml_string(ss.str(), file);
}

}  // namespace moesim
