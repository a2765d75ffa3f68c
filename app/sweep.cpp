#include "app/sweep.hpp"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "app/outputs.hpp"
#include "app/progress.hpp"
#include "app/runner.hpp"
#include "policies/registry.hpp"
#include "core/config.hpp"
#include "core/error.hpp"

#ifdef MOESIM_HAVE_MPI
#include <mpi.h>
#endif

namespace moesim {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kRunFormat = "moesim-sweep-run";
constexpr int kRunFormatVersion = 1;

constexpr const char* kSweepUsage =
    "moesim sweep STUDY.yaml [options]\n"
    "  -o [ --out ] DIR      directory for runs/<id>.json, study.csv and study.json (default: out/<study name>)\n"
    "  -j [ --jobs ] N       runs simulated at once on this machine (default: the number of cores; 1 per rank\n"
    "                        under MPI)\n"
    "  --details             also write each run's full results to runs/<id>/ (compare.csv, iterations.csv,\n"
    "                        experts.csv, summary.json) for scripts/plot.py and moesim report\n"
    "  --collect             compute nothing: build study.csv and study.json from the run files present\n"
    "  -q [ --quiet ]        print nothing but errors\n"
    "  -h [ --help ]         show this help\n"
    "Under mpirun (when built with MPI) the runs are spread over the ranks and rank 0 writes the table.\n"
    "A rerun skips the runs already done. The study keys are described in docs/tutorial.md.\n";

std::uint64_t fnv1a(const std::string& s) {
  std::uint64_t h = 14695981039346656037ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

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

json yaml_to_json(const YAML::Node& n) {
  if (n.IsScalar()) {
    long long i = 0;
    double d = 0.0;
    bool b = false;
    if (YAML::convert<long long>::decode(n, i)) return json(i);
    if (YAML::convert<double>::decode(n, d)) return json(d);
    if (YAML::convert<bool>::decode(n, b)) return json(b);
    return json(n.Scalar());
  }
  if (n.IsSequence()) {
    json a = json::array();
    for (const auto& item : n) a.push_back(yaml_to_json(item));
    return a;
  }
  if (n.IsMap()) {
    json o = json::object();
    for (const auto& kv : n) o[kv.first.Scalar()] = yaml_to_json(kv.second);
    return o;
  }
  return json(nullptr);
}

// A run id must be a plain file name.
std::string file_safe(const std::string& s) {
  std::string out;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '-' || c == '+' || c == '_';
    out += ok ? c : '-';
  }
  return out;
}

std::string csv_cell(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

// Numbers as compare.csv writes them: shortest round-trip text.
std::string json_cell(const json& v) {
  if (v.is_null()) return "";
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_number_integer()) return fmt::format("{}", v.get<std::int64_t>());
  if (v.is_number_unsigned()) return fmt::format("{}", v.get<std::uint64_t>());
  if (v.is_number_float()) return fmt::format("{}", v.get<double>());
  if (v.is_string()) return csv_cell(v.get<std::string>());
  return csv_cell(v.dump());
}

// Parameters set explicitly by an entry, in the order written.
void note_param_columns(const std::vector<PolicyEntry>& entries, std::vector<std::string>& columns) {
  for (const auto& e : entries) {
    if (!e.params.IsMap()) continue;
    for (const auto& kv : e.params) {
      const std::string k = kv.first.Scalar();
      if (k == "name" || k == "label") continue;
      if (std::find(columns.begin(), columns.end(), k) == columns.end()) columns.push_back(k);
    }
  }
}

// The study's `policies` and `policy_grid`, built from `root` (a document of its own per caller).
std::vector<PolicyEntry> build_policies(const YAML::Node& root, const std::string& origin) {
  std::vector<PolicyEntry> out;
  Cfg top(root, origin, "");
  const YAML::Node list = root["policies"];
  if (list && !list.IsNull()) {
    if (!list.IsSequence() || list.size() == 0) {
      top.fail("policies", fmt::format("expected a non-empty list of policy specs (static:capacity_factor=2) or "
                                       "mappings ({{name: ..., <parameters>}}), found {}",
                                       yaml_kind(list)));
    }
    for (std::size_t i = 0; i < list.size(); ++i) {
      const YAML::Node item = list[i];
      const std::string where = fmt::format("{}: key 'policies[{}]'", mark_text(origin, item), i);
      if (item.IsScalar()) {
        std::vector<PolicyEntry> parsed;
        try {
          parsed = parse_policy_specs(item.Scalar());
        } catch (const InputError& e) {
          throw InputError(fmt::format("{}: {}", where, e.what()));
        }
        for (auto& e : parsed) {
          // Scalars without a position, so that errors about them name the study line below.
          YAML::Node params(YAML::NodeType::Map);
          for (const auto& kv : e.params)
            params[kv.first.Scalar()] = kv.second.IsScalar() ? YAML::Node(kv.second.Scalar()) : kv.second;
          e.params = params;
          e.origin = fmt::format("{} '{}'", where, e.label);
          out.push_back(std::move(e));
        }
      } else if (item.IsMap()) {
        Cfg c(item, origin, fmt::format("policies[{}]", i));
        PolicyEntry e;
        e.name = c.need_string("name");
        e.label = c.get_string("label", e.name);
        e.params = item;
        e.origin = origin;
        out.push_back(std::move(e));
      } else {
        throw InputError(fmt::format("{}: expected a policy spec or a mapping with name:, found {}", where,
                                     yaml_kind(item)));
      }
    }
  }
  const YAML::Node grid = root["policy_grid"];
  if (grid && !grid.IsNull()) {
    if (!grid.IsMap() || grid.size() == 0) {
      top.fail("policy_grid", fmt::format("expected a mapping of policy names to parameter lists, e.g. "
                                          "{{flexmoe: {{interval: [10, 50]}}}}, found {}",
                                          yaml_kind(grid)));
    }
    for (const auto& pol : grid) {
      const std::string name = pol.first.Scalar();
      const std::string path = "policy_grid." + name;
      const YAML::Node params = pol.second;
      if (!params.IsMap()) {
        throw InputError(fmt::format("{}: key '{}': expected a mapping of parameters to values or lists of "
                                     "values, found {}",
                                     mark_text(origin, pol.first), path, yaml_kind(params)));
      }
      // Each parameter: its values (a scalar is one fixed value).
      std::vector<std::pair<std::string, std::vector<YAML::Node>>> axes;
      for (const auto& kv : params) {
        const std::string key = kv.first.Scalar();
        const std::string where = fmt::format("{}: key '{}.{}'", mark_text(origin, kv.first), path, key);
        if (key == "name" || key == "label") throw InputError(fmt::format("{}: cannot be set in policy_grid", where));
        std::vector<YAML::Node> values;
        if (kv.second.IsScalar()) {
          values.push_back(kv.second);
        } else if (kv.second.IsSequence() && kv.second.size() > 0) {
          for (const auto& v : kv.second) {
            if (!v.IsScalar()) {
              throw InputError(fmt::format("{}: key '{}.{}': each value must be a scalar, found {}",
                                           mark_text(origin, v), path, key, yaml_kind(v)));
            }
            values.push_back(v);
          }
        } else {
          throw InputError(fmt::format("{}: expected a value or a non-empty list of values, found {}", where,
                                       yaml_kind(kv.second)));
        }
        axes.emplace_back(key, std::move(values));
      }
      // Cartesian product, the last parameter varying fastest.
      std::vector<std::size_t> pick(axes.size(), 0);
      while (true) {
        PolicyEntry e;
        e.name = name;
        e.params = YAML::Node(YAML::NodeType::Map);
        e.params["name"] = pol.first;
        e.label = name;
        for (std::size_t a = 0; a < axes.size(); ++a) {
          const YAML::Node& v = axes[a].second[pick[a]];
          e.params[axes[a].first] = v;
          e.label += fmt::format(":{}={}", axes[a].first, v.Scalar());
        }
        e.origin = origin;
        out.push_back(std::move(e));
        std::size_t a = axes.size();
        while (a > 0 && ++pick[a - 1] == axes[a - 1].second.size()) pick[--a] = 0;
        if (a == 0) break;
      }
    }
  }
  return out;
}

struct Located {
  std::string assignment;
  std::string where;  // "file:line:col: grid 'key' value 'v'"
};

}  // namespace

Scenario Study::scenario(const StudyRun& r) const {
  Scenario s = load_scenario(base, points.at(r.point).overrides, r.seed);
  if (own_policies) s.policies = build_policies(load_yaml_string(text, file), file);
  return s;
}

Study load_study_text(const std::string& text, const std::string& origin) {
  const YAML::Node root = load_yaml_string(text, origin);
  if (!root || root.IsNull()) throw InputError(fmt::format("{}: the study is empty", origin));
  if (!root.IsMap()) throw InputError(fmt::format("{}: a study must be a YAML mapping", origin));
  Study st;
  st.file = origin;
  st.text = text;
  Cfg c(root, origin, "");
  st.name = file_safe(c.get_string("name", fs::path(origin).stem().string()));
  st.description = c.get_string("description", "");
  {
    fs::path b(c.need_string("base"));
    if (b.is_relative()) b = fs::path(origin).parent_path() / b;
    st.base = b.lexically_normal().string();
    if (!fs::is_regular_file(st.base)) c.fail("base", fmt::format("scenario file '{}' does not exist", st.base));
  }

  std::vector<Located> located;  // every assignment with its place in the study, for errors
  std::set<std::string> fixed_keys;
  c.touch("set");
  if (const YAML::Node set = root["set"]; set && !set.IsNull()) {
    if (!set.IsMap()) {
      c.fail("set", fmt::format("expected a mapping of scenario keys to values, found {}", yaml_kind(set)));
    }
    for (const auto& kv : set) {
      const std::string key = kv.first.Scalar();
      const std::string where = fmt::format("{}: key 'set.{}'", mark_text(origin, kv.first), key);
      if (kv.second.IsNull()) throw InputError(fmt::format("{}: expected a value, found null", where));
      st.fixed.push_back(key + "=" + assignment_value(kv.second));
      located.push_back({st.fixed.back(), where});
      fixed_keys.insert(key);
    }
  }

  // Grid axes in the order written: (key, value nodes).
  std::vector<std::pair<std::string, std::vector<YAML::Node>>> axes;
  c.touch("grid");
  if (const YAML::Node grid = root["grid"]; grid && !grid.IsNull()) {
    if (!grid.IsMap()) {
      c.fail("grid", fmt::format("expected a mapping of scenario keys to lists of values, e.g. trace.skew: "
                                 "[0.5, 1.0], found {}",
                                 yaml_kind(grid)));
    }
    for (const auto& kv : grid) {
      const std::string key = kv.first.Scalar();
      const std::string where = fmt::format("{}: key 'grid.{}'", mark_text(origin, kv.first), key);
      if (key == "seed") throw InputError(fmt::format("{}: list the seeds under seeds: instead", where));
      if (key == "policies" || key.rfind("policies.", 0) == 0) {
        throw InputError(
            fmt::format("{}: policies are not grid keys; list them under policies: or policy_grid:", where));
      }
      if (fixed_keys.count(key)) throw InputError(fmt::format("{}: also fixed under set:; keep one", where));
      for (const auto& a : axes)
        if (a.first == key) throw InputError(fmt::format("{}: listed twice", where));
      if (!kv.second.IsSequence() || kv.second.size() == 0) {
        throw InputError(fmt::format("{}: expected a non-empty list of values, found {}", where, yaml_kind(kv.second)));
      }
      std::vector<YAML::Node> values;
      for (const auto& v : kv.second) {
        if (v.IsNull()) {
          throw InputError(fmt::format("{}: key 'grid.{}': a grid value cannot be null", mark_text(origin, v), key));
        }
        values.push_back(v);
      }
      axes.emplace_back(key, std::move(values));
      st.grid_keys.push_back(key);
    }
  }

  {
    const auto seeds = c.get_int_list("seeds", {}, 0, 1LL << 62);
    std::set<std::int64_t> seen;
    for (auto s : seeds) {
      if (!seen.insert(s).second) c.fail("seeds", fmt::format("seed {} is listed twice", s));
      st.seeds.push_back(static_cast<std::uint64_t>(s));
    }
  }

  c.touch("policies");
  c.touch("policy_grid");
  std::vector<PolicyEntry> policies = build_policies(root, origin);
  st.own_policies = !policies.empty();
  c.finish();

  // Points: the cartesian product of the axes, the last key varying fastest.
  std::vector<std::size_t> pick(axes.size(), 0);
  while (true) {
    StudyPoint p;
    p.index = st.points.size();
    p.overrides = st.fixed;
    for (std::size_t a = 0; a < axes.size(); ++a) {
      const YAML::Node& v = axes[a].second[pick[a]];
      p.values.emplace_back(axes[a].first, display_value(v));
      p.overrides.push_back(axes[a].first + "=" + assignment_value(v));
      located.push_back({p.overrides.back(), fmt::format("{}: grid '{}' value {}", mark_text(origin, v),
                                                         axes[a].first, yaml_kind(v))});
    }
    st.points.push_back(std::move(p));
    std::size_t a = axes.size();
    while (a > 0 && ++pick[a - 1] == axes[a - 1].second.size()) pick[--a] = 0;
    if (a == 0) break;
  }

  // Every point must load: a bad grid value is found now, named by its place in the study.
  std::vector<PolicyEntry> base_policies;
  for (const auto& p : st.points) {
    Scenario s;
    try {
      s = load_scenario(st.base, p.overrides, st.seeds.empty() ? std::nullopt : std::optional(st.seeds.front()));
    } catch (const InputError& e) {
      const std::string msg = e.what();
      for (const auto& l : located) {
        if (msg.find("--set '" + l.assignment + "'") != std::string::npos &&
            std::find(p.overrides.begin(), p.overrides.end(), l.assignment) != p.overrides.end()) {
          throw InputError(fmt::format("{}: {}", l.where, msg));
        }
      }
      std::string values;
      for (const auto& [k, v] : p.values) values += fmt::format("{}{}={}", values.empty() ? "" : ", ", k, v);
      throw InputError(fmt::format("{}: grid point {} ({}): {}", origin, p.index, values, msg));
    }
    if (p.index == 0) {
      if (st.seeds.empty()) st.seeds.push_back(s.seed);  // no seeds: the base scenario's
      base_policies = s.policies;
    }
    // Whatever a run would refuse before it starts is checked for every point now, so that a bad
    // study writes nothing.
    if (st.own_policies) s.policies = policies;
    try {
      check_scenario(s);
    } catch (const InputError& e) {
      std::string values;
      for (const auto& [k, v] : p.values) values += fmt::format("{}{}={}", values.empty() ? "" : ", ", k, v);
      throw InputError(fmt::format("{}: grid point {} ({}): {}", origin, p.index, values, e.what()));
    }
  }
  const std::vector<PolicyEntry>& used = st.own_policies ? policies : base_policies;

  {
    std::set<std::string> labels;
    for (std::size_t i = 0; i < used.size(); ++i) {
      const PolicyEntry& e = used[i];
      Cfg where(e.params, e.origin, fmt::format("policies[{}]", i));
      (void)find_policy(e.name, where, "name");
      if (!labels.insert(e.label).second) {
        throw InputError(fmt::format("{}: policy label '{}' is used twice; give each entry a distinct label",
                                     where.where("name"), e.label));
      }
      st.policy_labels.push_back(e.label);
    }
  }
  note_param_columns(used, st.param_columns);

  std::string fp = fmt::format("{}/{}\nbase:\n{}\nset:\n", kRunFormat, kRunFormatVersion, read_text(st.base));
  for (const auto& f : st.fixed) fp += f + "\n";
  fp += "policies:\n";
  if (st.own_policies) {
    for (const auto& e : policies) fp += e.label + "\n" + assignment_value(e.params) + "\n";
  }
  st.fingerprint = short_hash(fp);

  for (const auto& p : st.points) {
    // The id ignores the grid's key order: sorted by key.
    auto values = p.values;
    std::vector<std::string> assigns(p.overrides.begin() + static_cast<std::ptrdiff_t>(st.fixed.size()),
                                     p.overrides.end());
    std::sort(values.begin(), values.end());
    std::sort(assigns.begin(), assigns.end());
    std::string readable;
    for (const auto& [k, v] : values) {
      const auto dot = k.rfind('.');
      readable += fmt::format("{}-{}_", dot == std::string::npos ? k : k.substr(dot + 1), v);
    }
    std::string hashed;
    for (const auto& a : assigns) hashed += a + "\n";
    for (const auto seed : st.seeds) {
      StudyRun r;
      r.index = st.runs.size();
      r.point = p.index;
      r.seed = seed;
      std::string name = file_safe(fmt::format("{}seed-{}", readable, seed));
      // Long grids: the hash keeps ids unique, the readable part only has to help a human.
      if (name.size() > 64) name.resize(64);
      r.id = name + "-" + short_hash(fmt::format("{}seed={}", hashed, seed));
      st.runs.push_back(std::move(r));
    }
  }
  return st;
}

Study load_study(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InputError(fmt::format("{}: cannot open file", file));
  std::stringstream ss;
  ss << in.rdbuf();
  return load_study_text(ss.str(), file);
}

std::string run_file_path(const std::string& out, const StudyRun& r) {
  return (fs::path(out) / "runs" / (r.id + ".json")).string();
}

json read_complete_run(const Study& study, const std::string& out, const StudyRun& r) {
  const std::string path = run_file_path(out, r);
  if (!fs::is_regular_file(path)) return json(nullptr);
  json j = json::parse(read_text(path), nullptr, false);
  // A run file is complete when it parses, carries the completion marker and belongs to this
  // study's run; anything else is recomputed.
  if (!j.is_object() || j.value("complete", false) != true || j.value("format", "") != kRunFormat ||
      j.value("id", "") != r.id || j.value("fingerprint", "") != study.fingerprint) {
    return json(nullptr);
  }
  const json& res = j["results"];
  if (!res.is_array() || res.size() != study.policy_labels.size()) return json(nullptr);
  for (std::size_t i = 0; i < res.size(); ++i)
    if (!res[i].is_object() || res[i].value("label", "") != study.policy_labels[i]) return json(nullptr);
  return j;
}

namespace {

std::string run_file_content(const Study& study, const StudyRun& r, const Scenario& s,
                             const std::vector<PolicyResult>& results) {
  json summary = summary_json(s, results);
  json grid = json::object();
  for (const auto& [k, v] : study.points[r.point].values) grid[k] = v;
  json j{{"format", kRunFormat},
         {"version", kRunFormatVersion},
         {"study", study.name},
         {"id", r.id},
         {"point", r.point},
         {"grid", grid},
         {"overrides", study.points[r.point].overrides},
         {"seed", r.seed},
         {"fingerprint", study.fingerprint},
         {"scenario", summary["scenario"]},
         {"results", summary["results"]},
         {"complete", true}};
  return j.dump(1) + "\n";
}

}  // namespace

SweepReport run_sweep(const Study& study, const SweepOptions& opts) {
  std::error_code ec;
  fs::create_directories(fs::path(opts.out) / "runs", ec);
  if (ec) throw InputError(fmt::format("--out {}: cannot create directory: {}", opts.out, ec.message()));
  const int ranks = std::max(opts.ranks, 1);
  std::vector<const StudyRun*> mine;
  for (const auto& r : study.runs)
    if (static_cast<int>(r.index % static_cast<std::size_t>(ranks)) == opts.rank) mine.push_back(&r);

  SweepReport report;
  std::vector<const StudyRun*> todo;
  for (const StudyRun* r : mine) {
    if (read_complete_run(study, opts.out, *r).is_null()) {
      todo.push_back(r);
    } else {
      report.skipped.push_back(r->id);
    }
  }
  const std::string title = ranks > 1 ? fmt::format("sweep (rank {} of {})", opts.rank, ranks) : "sweep";
  Progress bar(title, static_cast<std::int64_t>(mine.size()), "runs", opts.progress && stderr_is_terminal(), stderr);
  bar.skip(static_cast<std::int64_t>(report.skipped.size()));

  std::atomic<std::size_t> next{0};
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<char> done(todo.size(), 0);
  std::map<std::size_t, std::exception_ptr> failures;  // by run index: the lowest is reported
  auto worker = [&] {
    while (!stop.load()) {
      const std::size_t k = next.fetch_add(1);
      if (k >= todo.size()) return;
      const StudyRun& r = *todo[k];
      try {
        const Scenario s = study.scenario(r);
        RunOptions ro;
        ro.keep_rows = opts.details;
        if (opts.details) {
          ro.expert_stats_every = 1;
          ro.expert_stats_max_samples = auto_expert_stats_samples(s);
        }
        const std::vector<PolicyResult> results = run_scenario(s, ro);
        // The details first: a run counts as done once its run file exists, so a killed sweep never
        // leaves a done run without its details.
        if (opts.details) write_outputs((fs::path(opts.out) / "runs" / r.id).string(), s, results, true);
        write_file_atomic(run_file_path(opts.out, r), run_file_content(study, r, s, results));
        done[k] = 1;
        bar.advance();
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        failures.emplace(r.index, std::current_exception());
        stop = true;
      }
    }
  };
  const std::size_t threads = std::min<std::size_t>(static_cast<std::size_t>(std::max(opts.jobs, 1)), todo.size());
  if (threads <= 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    for (std::size_t t = 0; t < threads; ++t) pool.emplace_back(worker);
    for (auto& t : pool) t.join();
  }
  bar.finish();
  for (std::size_t k = 0; k < todo.size(); ++k)
    if (done[k]) report.computed.push_back(todo[k]->id);
  if (!failures.empty()) {
    const auto& [index, error] = *failures.begin();
    const StudyRun& r = study.runs[index];
    try {
      std::rethrow_exception(error);
    } catch (const InputError& e) {
      throw InputError(fmt::format("{}: run {} (point {}, seed {}): {}", study.file, r.id, r.point, r.seed, e.what()));
    } catch (const std::exception& e) {
      throw std::runtime_error(fmt::format("{}: run {} (point {}, seed {}): {}", study.file, r.id, r.point, r.seed,
                                           e.what()));
    }
  }
  return report;
}

StudyTable collect_study(const Study& study, const std::string& out) {
  static const char* kMetrics[] = {"status", "iterations_to_converge", "time_to_convergence_s", "ratio_to_best",
                                   "mean_iteration_ns", "p99_iteration_ns"};
  StudyTable t;
  std::vector<std::string> header{"point"};
  for (const auto& k : study.grid_keys) header.push_back(k);
  header.push_back("seed");
  header.push_back("policy");
  header.push_back("name");
  const std::size_t param_at = header.size();
  for (const auto& p : study.param_columns) header.push_back(p);
  for (const char* m : kMetrics) header.emplace_back(m);
  for (int i = 0; i < kNumPhases; ++i) header.push_back(std::string(to_string(static_cast<Phase>(i))) + "_ns");
  for (const char* m : {"drop_rate", "moved_bytes_per_iteration", "a2a_bytes_per_iteration", "peak_gpu_memory_bytes",
                        "run_id"})
    header.emplace_back(m);
  // A parameter named like another column gets a prefix, so every column name is unique.
  for (std::size_t i = param_at; i < param_at + study.param_columns.size(); ++i)
    if (std::count(header.begin(), header.end(), header[i]) > 1) header[i] = "param." + header[i];
  auto add_line = [&t](const std::vector<std::string>& cells) {
    for (std::size_t i = 0; i < cells.size(); ++i) {
      if (i > 0) t.csv += ',';
      t.csv += cells[i];
    }
    t.csv += '\n';
  };
  std::vector<std::string> names;
  for (const auto& h : header) names.push_back(csv_cell(h));
  add_line(names);

  json rows = json::array();
  for (const auto& r : study.runs) {
    const json run = read_complete_run(study, out, r);
    if (run.is_null()) {
      t.missing.push_back(r.id);
      continue;
    }
    const StudyPoint& p = study.points[r.point];
    json grid = json::object();
    for (std::size_t k = 0; k < p.values.size(); ++k) {
      const std::string& assign = p.overrides[study.fixed.size() + k];
      grid[p.values[k].first] = yaml_to_json(YAML::Load(assign.substr(assign.find('=') + 1)));
    }
    const json& results = run["results"];
    const json& pols = run["scenario"]["policies"];
    for (std::size_t i = 0; i < results.size(); ++i) {
      const json& x = results[i];
      const json params = i < pols.size() ? pols[i].value("parameters", json::object()) : json::object();
      std::vector<std::string> cells{std::to_string(r.point)};
      for (const auto& [k, v] : p.values) cells.push_back(csv_cell(v));
      cells.push_back(std::to_string(r.seed));
      cells.push_back(json_cell(x["label"]));
      cells.push_back(json_cell(x["policy"]));
      json param_values = json::object();
      for (const auto& name : study.param_columns) {
        const json v = params.contains(name) ? params[name] : json(nullptr);
        cells.push_back(json_cell(v));
        param_values[name] = v;
      }
      const bool oom = x.value("oom", false);
      const bool ok = x.value("converged", false) && !oom;
      cells.emplace_back(oom ? "oom" : ok ? "converged" : "not_converged");
      for (const char* m : {"iterations_to_converge", "time_to_convergence_s", "ratio_to_best"})
        cells.push_back(ok ? json_cell(x[m]) : "");
      cells.push_back(json_cell(x["mean_iteration_ns"]));
      cells.push_back(json_cell(x["p99_iteration_ns"]));
      for (int ph = 0; ph < kNumPhases; ++ph)
        cells.push_back(json_cell(x["mean_phase_ns"][std::string(to_string(static_cast<Phase>(ph))) + "_ns"]));
      cells.push_back(json_cell(x["drop_rate"]));
      cells.push_back(json_cell(x["mean_moved_bytes_per_iteration"]));
      cells.push_back(json_cell(x["mean_a2a_bytes_per_iteration"]));
      cells.push_back(json_cell(x["peak_gpu_memory_bytes"]));
      cells.push_back(r.id);
      add_line(cells);

      json row = x;
      row["point"] = r.point;
      row["grid"] = grid;
      row["seed"] = r.seed;
      row["parameters"] = param_values;
      row["run_id"] = r.id;
      rows.push_back(std::move(row));
      ++t.rows;
    }
  }
  t.json = json{{"study", study.name},
                {"description", study.description},
                {"base", study.base},
                {"grid_keys", study.grid_keys},
                {"param_columns", study.param_columns},
                {"seeds", study.seeds},
                {"policies", study.policy_labels},
                {"runs", study.runs.size()},
                {"complete", t.missing.empty()},
                {"missing_runs", t.missing},
                {"rows", rows}};
  return t;
}

StudyTable write_study_table(const Study& study, const std::string& out) {
  StudyTable t = collect_study(study, out);
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) throw InputError(fmt::format("--out {}: cannot create directory: {}", out, ec.message()));
  write_file_atomic((fs::path(out) / "study.csv").string(), t.csv);
  write_file_atomic((fs::path(out) / "study.json").string(), t.json.dump(1) + "\n");
  return t;
}

#ifdef MOESIM_HAVE_MPI
bool sweep_has_mpi() { return true; }
#else
bool sweep_has_mpi() { return false; }
#endif

namespace {

// Launchers set these in every rank's environment; without one, MPI is not initialised at all
// (a singleton MPI_Init can be slow or fail where no launcher runs).
bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"})
    if (std::getenv(v) != nullptr) return true;
  return false;
}

#ifndef MOESIM_HAVE_MPI
int launcher_rank() {
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"}) {
    if (const char* s = std::getenv(v)) return std::atoi(s);
  }
  return 0;
}
#endif

#ifdef MOESIM_HAVE_MPI
class MpiSession {
 public:
  MpiSession() {
    if (!launched_by_mpi()) return;
    int provided = 0;
    // Only the main thread calls MPI; the workers simulate.
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) return;
    active_ = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  ~MpiSession() {
    if (active_) MPI_Finalize();
  }
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  [[nodiscard]] bool active() const { return active_; }
  [[nodiscard]] int rank() const { return rank_; }
  [[nodiscard]] int size() const { return size_; }

  // Every rank's `blob`, on rank 0 (empty elsewhere).
  [[nodiscard]] std::vector<std::string> gather(const std::string& blob) const {
    if (blob.size() > static_cast<std::size_t>(INT_MAX)) throw std::runtime_error("MPI gather: result over 2 GiB");
    int len = static_cast<int>(blob.size());
    std::vector<int> lens(static_cast<std::size_t>(size_), 0);
    MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
    std::vector<int> displs(lens.size(), 0);
    long long total = 0;
    for (std::size_t i = 0; i < lens.size(); ++i) {
      displs[i] = static_cast<int>(total);
      total += lens[i];
    }
    if (rank_ == 0 && total > INT_MAX) throw std::runtime_error("MPI gather: results over 2 GiB");
    std::string all(rank_ == 0 ? static_cast<std::size_t>(total) : 0, '\0');
    MPI_Gatherv(blob.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR, 0, MPI_COMM_WORLD);
    std::vector<std::string> out;
    if (rank_ == 0)
      for (std::size_t i = 0; i < lens.size(); ++i)
        out.push_back(all.substr(static_cast<std::size_t>(displs[i]), static_cast<std::size_t>(lens[i])));
    return out;
  }
  [[nodiscard]] int broadcast(int value) const {
    MPI_Bcast(&value, 1, MPI_INT, 0, MPI_COMM_WORLD);
    return value;
  }

 private:
  bool active_ = false;
  int rank_ = 0;
  int size_ = 1;
};

// Records "<tag> <id> <bytes>\n<bytes>": R a run file, E an input error, X an internal error.
void put_record(std::string& blob, char tag, const std::string& id, const std::string& content) {
  blob += fmt::format("{} {} {}\n", tag, id, content.size());
  blob += content;
}

struct Record {
  char tag;
  std::string id;
  std::string content;
};

std::vector<Record> parse_records(const std::string& blob) {
  std::vector<Record> out;
  std::size_t at = 0;
  while (at < blob.size()) {
    const std::size_t nl = blob.find('\n', at);
    if (nl == std::string::npos) throw std::runtime_error("MPI gather: truncated record");
    std::istringstream head(blob.substr(at, nl - at));
    Record r{};
    std::size_t len = 0;
    head >> r.tag >> r.id >> len;
    if (!head || nl + 1 + len > blob.size()) throw std::runtime_error("MPI gather: malformed record");
    r.content = blob.substr(nl + 1, len);
    at = nl + 1 + len;
    out.push_back(std::move(r));
  }
  return out;
}
#endif

}  // namespace

int cmd_sweep(const std::vector<std::string>& args) {
  // Parsed by hand: the tests link this file without Boost.Program_options.
  std::string study_file, out_dir;
  int jobs_given = 0;
  bool quiet = false, collect_only = false, details = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string a = args[i], value;
    const auto eq = a.find('=');
    const bool has_eq = a.rfind("--", 0) == 0 && eq != std::string::npos;
    if (has_eq) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
    }
    auto need_value = [&]() -> std::string {
      if (has_eq) return value;
      if (i + 1 >= args.size()) throw InputError(fmt::format("moesim sweep: {} needs a value", a));
      return args[++i];
    };
    if (a == "--help" || a == "-h") {
      std::cout << kSweepUsage;
      return 0;
    } else if (a == "--out" || a == "-o") {
      out_dir = need_value();
    } else if (a == "--jobs" || a == "-j") {
      const std::string v = need_value();
      std::size_t used = 0;
      try {
        jobs_given = std::stoi(v, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != v.size() || jobs_given < 1) {
        throw InputError(fmt::format("moesim sweep: --jobs '{}': expected an integer of at least 1", v));
      }
    } else if (a == "--details" && !has_eq) {
      details = true;
    } else if (a == "--collect" && !has_eq) {
      collect_only = true;
    } else if ((a == "--quiet" || a == "-q") && !has_eq) {
      quiet = true;
    } else if (a.size() > 1 && a[0] == '-') {
      throw InputError(fmt::format("moesim sweep: unknown option '{}'; options: --out, --jobs, --details, --collect, --quiet, "
                                   "--help",
                                   args[i]));
    } else if (study_file.empty()) {
      study_file = a;
    } else {
      throw InputError(fmt::format("moesim sweep: one study at a time; '{}' is a second one", a));
    }
  }
  if (study_file.empty()) throw InputError("moesim sweep: missing STUDY.yaml (see moesim sweep --help)");

  int rank = 0, ranks = 1;
#ifdef MOESIM_HAVE_MPI
  MpiSession mpi;
  if (mpi.active()) {
    rank = mpi.rank();
    ranks = mpi.size();
  }
#else
  if (launched_by_mpi() && launcher_rank() > 0) {
    // Several copies would all compute every run into the same folder: rank 0 alone does it.
    std::cerr << fmt::format("moesim sweep: built without MPI; rank {} leaves the sweep to rank 0\n", launcher_rank());
    return 0;
  }
#endif
  const bool root = rank == 0;
  const auto started = std::chrono::steady_clock::now();

  const Study study = load_study(study_file);
  const std::string out = !out_dir.empty() ? out_dir : "out/" + study.name;
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const int jobs = jobs_given > 0 ? jobs_given : ranks > 1 ? 1 : static_cast<int>(cores);

  SweepReport report;
  if (!collect_only) {
    if (root && !quiet) {
      std::cout << fmt::format("sweep {}: {} point{} x {} seed{} = {} runs of {} polic{}, --jobs {}{}\n", study.name,
                               study.points.size(), study.points.size() == 1 ? "" : "s", study.seeds.size(),
                               study.seeds.size() == 1 ? "" : "s", study.runs.size(), study.policy_labels.size(),
                               study.policy_labels.size() == 1 ? "y" : "ies", jobs,
                               ranks > 1 ? fmt::format(" on each of {} MPI ranks", ranks) : "");
      std::cout.flush();
    }
    SweepOptions so;
    so.out = out;
    so.jobs = jobs;
    so.details = details;
    so.rank = rank;
    so.ranks = ranks;
    so.progress = !quiet;
#ifdef MOESIM_HAVE_MPI
    if (ranks > 1) {
      // Each rank sends its run files to rank 0 (so no shared file system is needed) along with
      // its error, if any; rank 0 writes what it lacks, reports and decides the exit status.
      std::string blob;
      try {
        report = run_sweep(study, so);
      } catch (const InputError& e) {
        put_record(blob, 'E', std::to_string(rank), e.what());
      } catch (const std::exception& e) {
        put_record(blob, 'X', std::to_string(rank), e.what());
      }
      for (const auto& r : study.runs) {
        if (static_cast<int>(r.index % static_cast<std::size_t>(ranks)) != rank) continue;
        if (!read_complete_run(study, out, r).is_null()) put_record(blob, 'R', r.id, read_text(run_file_path(out, r)));
      }
      const std::vector<std::string> gathered = mpi.gather(blob);
      std::string input_error, internal_error;
      if (root) {
        std::map<std::string, const StudyRun*> by_id;
        for (const auto& r : study.runs) by_id[r.id] = &r;
        for (const auto& part : gathered) {
          for (const Record& rec : parse_records(part)) {
            if (rec.tag == 'E' && input_error.empty()) input_error = rec.content;
            if (rec.tag == 'X' && internal_error.empty()) internal_error = rec.content;
            if (rec.tag != 'R') continue;
            auto it = by_id.find(rec.id);
            if (it == by_id.end()) continue;
            if (read_complete_run(study, out, *it->second).is_null())
              write_file_atomic(run_file_path(out, *it->second), rec.content);
          }
        }
      }
      const int rc = mpi.broadcast(!internal_error.empty() ? 1 : !input_error.empty() ? 2 : 0);
      if (!root) return rc;
      if (!internal_error.empty()) throw std::runtime_error(internal_error);
      if (!input_error.empty()) throw InputError(input_error);
    } else {
      report = run_sweep(study, so);
    }
#else
    report = run_sweep(study, so);
#endif
  }
  if (!root) return 0;
  const StudyTable table = write_study_table(study, out);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (!table.missing.empty()) {
    std::cerr << fmt::format("moesim sweep: {} of {} runs have no result yet (first: {}); the table leaves them out: "
                             "run the sweep without --collect to compute them\n",
                             table.missing.size(), study.runs.size(), table.missing.front());
  }
  if (!quiet) {
    if (!collect_only && ranks == 1) {
      std::cout << fmt::format("{} run{} computed, {} already done, in {:.2f} s\n", report.computed.size(),
                               report.computed.size() == 1 ? "" : "s", report.skipped.size(), seconds);
    } else if (!collect_only) {
      std::cout << fmt::format("{} runs over {} MPI ranks in {:.2f} s\n", study.runs.size(), ranks, seconds);
    }
    std::cout << fmt::format("wrote {0}/study.csv and {0}/study.json: {1} rows from {2} of {3} runs\n", out, table.rows,
                             study.runs.size() - table.missing.size(), study.runs.size());
  }
  return 0;
}

}  // namespace moesim
