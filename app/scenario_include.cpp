#include "app/scenario_include.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "core/error.hpp"

namespace moesim {
namespace {

namespace fs = std::filesystem;

std::string join_path(const std::string& path, const std::string& key) { return path.empty() ? key : path + "." + key; }

std::string position(const std::string& file, const YAML::Node& n) {
  const YAML::Mark m = n.Mark();
  return m.is_null() || m.line < 0 ? file : fmt::format("{}:{}:{}", file, m.line + 1, m.column + 1);
}

// Every mapping key path of `n` (not into lists: a list's items are reported at the list's file).
void record(const YAML::Node& n, const std::string& path, const std::string& file, Cfg::Origins& out) {
  if (!n.IsMap()) return;
  for (auto it = n.begin(); it != n.end(); ++it) {
    const std::string p = join_path(path, it->first.Scalar());
    out[p] = file;
    record(it->second, p, file, out);
  }
}

// Entries of `from` for `path` and everything under it.
void copy_subtree(const Cfg::Origins& from, const std::string& path, Cfg::Origins& to) {
  for (auto it = from.lower_bound(path); it != from.end() && it->first.starts_with(path); ++it) {
    const std::string& k = it->first;
    if (k.size() == path.size() || k[path.size()] == '.' || k[path.size()] == '[') to[k] = it->second;
  }
}

// Puts `lower` under `upper` at key path `path`: upper's values win, mappings merge.
void merge_under(YAML::Node upper, const YAML::Node& lower, const std::string& path, Cfg::Origins& upper_origins,
                 const Cfg::Origins& lower_origins) {
  for (auto it = lower.begin(); it != lower.end(); ++it) {
    const std::string key = it->first.Scalar();
    const std::string p = join_path(path, key);
    const YAML::Node& const_upper = upper;  // const lookup: operator[] on a non-const node inserts
    const YAML::Node u = const_upper[key];
    const YAML::Node v = it->second;  // a copy: the iterator hands out a temporary
    if (!u || u.IsNull()) {
      // Not given above: the lower layer's value, reported at its own file.
      upper[key] = v;
      copy_subtree(lower_origins, p, upper_origins);
      continue;
    }
    if (v.IsNull()) continue;
    if (u.IsMap() && v.IsMap()) {
      merge_under(u, v, p, upper_origins, lower_origins);
      continue;
    }
    if (u.IsMap() != v.IsMap()) {
      auto at = [](const Cfg::Origins& o, const std::string& k) {
        auto f = o.find(k);
        return f == o.end() ? std::string("?") : f->second;
      };
      throw InputError(fmt::format(
          "{}: key '{}': {} cannot be merged with {} that {} gives it ({}); a mapping merges only with a "
          "mapping: write the whole value in one of the files (e.g. gpu: {{preset: NAME, ...}})",
          position(at(upper_origins, p), u), p, u.IsMap() ? "a mapping" : yaml_kind(u),
          v.IsMap() ? "the mapping" : yaml_kind(v), at(lower_origins, p), position(at(lower_origins, p), v)));
    }
    // Both are scalars or lists: the upper one stands.
  }
}

struct Layer {
  YAML::Node root;
  Cfg::Origins origins;
  bool included = false;  // any file merged in
};

Layer resolve(YAML::Node root, const std::string& origin, std::vector<std::string>& stack) {
  Layer out;
  out.root = root;
  record(root, "", origin, out.origins);
  if (!root.IsMap()) return out;  // the scenario parser reports it
  const YAML::Node& const_root = root;
  const YAML::Node inc = const_root["include"];
  if (!inc) return out;
  const std::string at = fmt::format("{}: key 'include'", position(origin, inc));
  std::vector<YAML::Node> items;
  if (inc.IsScalar()) {
    items.push_back(inc);
  } else if (inc.IsSequence()) {
    for (std::size_t i = 0; i < inc.size(); ++i) {
      if (!inc[i].IsScalar())
        throw InputError(fmt::format("{}: item {} is {}; allowed: a path to a scenario fragment (YAML)", at, i,
                                     yaml_kind(inc[i])));
      items.push_back(inc[i]);
    }
  } else {
    throw InputError(fmt::format("{}: expected a path or a list of paths, found {}", at, yaml_kind(inc)));
  }
  root.remove("include");
  out.origins.erase("include");
  const fs::path dir = origin.empty() || origin.front() == '<' ? fs::path() : fs::path(origin).parent_path();
  // The last include is the highest of them: merge it under the file first.
  for (auto item = items.rbegin(); item != items.rend(); ++item) {
    fs::path file(item->Scalar());
    if (file.is_relative()) file = dir / file;
    file = file.lexically_normal();
    const std::string where = fmt::format("{}: key 'include'", position(origin, *item));
    std::error_code ec;
    if (!fs::is_regular_file(file, ec))
      throw InputError(fmt::format("{}: '{}' is not a file (paths are relative to the including file)", where,
                                   file.string()));
    const std::string canonical = fs::weakly_canonical(file, ec).string();
    if (std::find(stack.begin(), stack.end(), canonical) != stack.end()) {
      std::string chain;
      for (const std::string& s : stack) chain += s + " -> ";
      throw InputError(fmt::format("{}: '{}' includes itself: {}{}; an include cycle", where, file.string(), chain,
                                   canonical));
    }
    YAML::Node loaded = load_yaml_file(file.string());
    if (!loaded.IsMap())
      throw InputError(fmt::format("{}: an included file must be a mapping of scenario keys, found {} (included at {})",
                                   file.string(), yaml_kind(loaded), where));
    stack.push_back(canonical);
    Layer sub = resolve(loaded, file.string(), stack);
    stack.pop_back();
    merge_under(out.root, sub.root, "", out.origins, sub.origins);
  }
  out.included = true;
  return out;
}

}  // namespace

ResolvedDocument resolve_includes(YAML::Node root, const std::string& origin) {
  std::vector<std::string> stack;
  if (!origin.empty() && origin.front() != '<') {
    std::error_code ec;
    stack.push_back(fs::weakly_canonical(fs::path(origin), ec).string());
  }
  Layer l = resolve(std::move(root), origin, stack);
  ResolvedDocument d;
  d.root = l.root;
  if (l.included) d.origins = std::make_shared<const Cfg::Origins>(std::move(l.origins));
  return d;
}

}  // namespace moesim
