#pragma once
// What the parts of app/sweep/ share: the run-file format, text and hashing helpers, and the grid
// expansion the study reader calls. Internal to the sweep; its interface is app/sweep.hpp.
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "app/outputs.hpp"
#include "app/sweep.hpp"

namespace moesim::sweep_internal {

inline constexpr const char* kRunFormat = "moesim-sweep-run";
inline constexpr int kRunFormatVersion = 1;

// A short hash of `s` (12 hex digits) for run ids and the study's fingerprint.
[[nodiscard]] std::string short_hash(const std::string& s);
// The file's bytes; empty when it cannot be read.
[[nodiscard]] std::string read_text(const std::string& path);
// "file:line:col" of a node, or `origin` when the node has no position.
[[nodiscard]] std::string mark_text(const std::string& origin, const YAML::Node& n);
// The value as `--set` parses it back (quoted where YAML needs it; lists and mappings in flow style).
[[nodiscard]] std::string assignment_value(const YAML::Node& n);
// The value as the user wrote it, for table cells and run ids.
[[nodiscard]] std::string display_value(const YAML::Node& n);
// A run id must be a plain file name (app/outputs.hpp).
using moesim::file_safe;

// Parameters set explicitly by an entry, in the order written.
void note_param_columns(const std::vector<PolicyEntry>& entries, std::vector<std::string>& columns);
// The study's `policies` and `policy_grid`, built from `root` (a document of its own per caller).
[[nodiscard]] std::vector<PolicyEntry> build_policies(const YAML::Node& root, const std::string& origin);

// An assignment and its place in the study, so that a scenario error about it names the study line.
struct Located {
  std::string assignment;
  std::string where;  // "file:line:col: grid 'key' value 'v'"
};
// Grid axes in the order written: (key, value nodes).
using GridAxes = std::vector<std::pair<std::string, std::vector<YAML::Node>>>;
// The points: the cartesian product of the axes, the last key varying fastest, after `st.fixed`.
void expand_points(Study& st, const GridAxes& axes, const std::string& origin, std::vector<Located>& located);
// One run per (point, seed), in that order, each with its stable id.
void make_runs(Study& st);

}  // namespace moesim::sweep_internal
