#pragma once
// Strict access to a YAML mapping. Every key read is recorded; `finish()` rejects any key that
// was not read, listing the allowed ones, so that a misspelt key is an error instead of a
// silently applied default. Errors name the file, line and column (1-based) and the key path.
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace moesim {

class Cfg {
 public:
  // `origin` is the file name (or "--set"/"<preset NAME>") used in error messages; `path` is the
  // dotted key path of this node from the document root.
  Cfg(YAML::Node node, std::string origin, std::string path);

  [[nodiscard]] const std::string& origin() const { return origin_; }
  [[nodiscard]] const std::string& path() const { return path_; }
  [[nodiscard]] const YAML::Node& node() const { return node_; }
  [[nodiscard]] bool has(const std::string& key) const;

  [[nodiscard]] double get_double(const std::string& key, double def, double min, double max);
  [[nodiscard]] double need_double(const std::string& key, double min, double max);
  [[nodiscard]] std::int64_t get_int(const std::string& key, std::int64_t def, std::int64_t min,
                                     std::int64_t max);
  [[nodiscard]] std::int64_t need_int(const std::string& key, std::int64_t min, std::int64_t max);
  [[nodiscard]] bool get_bool(const std::string& key, bool def);
  [[nodiscard]] std::string get_string(const std::string& key, const std::string& def);
  [[nodiscard]] std::string need_string(const std::string& key);
  // A string restricted to `allowed`; the error lists them.
  [[nodiscard]] std::string get_enum(const std::string& key, const std::string& def,
                                     const std::vector<std::string>& allowed);
  [[nodiscard]] std::vector<std::int64_t> get_int_list(const std::string& key,
                                                       const std::vector<std::int64_t>& def,
                                                       std::int64_t min, std::int64_t max);
  [[nodiscard]] std::vector<double> get_double_list(const std::string& key,
                                                    const std::vector<double>& def, double min,
                                                    double max);
  // A nested mapping; absent gives an empty mapping (so every default applies).
  [[nodiscard]] Cfg child(const std::string& key);
  // Marks a key as known without reading it (for keys consumed elsewhere).
  void touch(const std::string& key);
  // Throws InputError naming every unknown key and the allowed ones.
  void finish() const;

  // "file:line:col: key 'a.b'" for the key (or this node when the key is absent).
  [[nodiscard]] std::string where(const std::string& key) const;
  [[noreturn]] void fail(const std::string& key, const std::string& message) const;

  // Key paths set by `--set` (path -> the assignment as typed): errors about them name the
  // assignment instead of a file position. Children inherit the table.
  using Overrides = std::map<std::string, std::string>;
  void set_overrides(std::shared_ptr<const Overrides> o) { overrides_ = std::move(o); }
  [[nodiscard]] const std::shared_ptr<const Overrides>& overrides() const { return overrides_; }

  // Key paths whose nodes came from another file than `origin` (a scenario's `include:`; path ->
  // that file): their line and column are that file's, so errors about them name it. A path not
  // in the table takes its closest listed parent's file, else `origin`. Children inherit it.
  using Origins = std::map<std::string, std::string>;
  void set_origins(std::shared_ptr<const Origins> o) { origins_ = std::move(o); }
  [[nodiscard]] const std::shared_ptr<const Origins>& origins() const { return origins_; }
  // The file `path` (a dotted key path from the document root) was read from.
  [[nodiscard]] const std::string& origin_of(std::string path) const;

 private:
  [[nodiscard]] YAML::Node get(const std::string& key) const;
  [[nodiscard]] std::string key_path(const std::string& key) const;
  // The `--set` assignment that set `path` or a mapping or list it is inside; null if none.
  [[nodiscard]] const std::string* override_of(std::string path) const;
  YAML::Node node_;
  std::string origin_;
  std::string path_;
  std::set<std::string> known_;
  std::shared_ptr<const Overrides> overrides_;
  std::shared_ptr<const Origins> origins_;
};

// Applies `--set a.b.c=value` to a document: creates intermediate mappings; the value is parsed
// as YAML (so `2`, `true`, `[1,2]` get their types).
// Returns the key path it set, or the outermost mapping it had to create on the way (errors
// inside that mapping then name the assignment).
std::string apply_override(YAML::Node& root, const std::string& assignment);

// What a node is, for error messages ("found ..."): null, the quoted scalar, a list, a mapping.
[[nodiscard]] std::string yaml_kind(const YAML::Node& n);

// Loads a YAML file; syntax errors become InputError with file, line and column.
[[nodiscard]] YAML::Node load_yaml_file(const std::string& file);
[[nodiscard]] YAML::Node load_yaml_string(const std::string& text, const std::string& origin);

}  // namespace moesim
