// MEASURED.csv for `moesim fit` (format in app/fit.hpp and docs/calibration.md).
#include <fmt/format.h>

#include <cctype>
#include <charconv>
#include <cmath>
#include <optional>
#include <fstream>
#include <set>
#include <sstream>

#include "app/fit.hpp"
#include "core/error.hpp"
#include "sim/program.hpp"
#include "traces/csv.hpp"

namespace moesim {
namespace {

constexpr const char* kColumnsAllowed =
    "policy, policy.PARAM, a dotted scenario key (as --set takes), or a measured time TIME_UNIT with TIME "
    "forward, iteration, compute, a2a, grad_sync, optimizer, movement, wait, pipeline_bubble or tp_comm and "
    "UNIT ns, us, ms or s (e.g. forward_ms)";

// A measured column's metric and unit, or nothing when `name` is not one.
std::optional<MeasuredColumn> measured_column(const std::string& name) {
  static const std::pair<const char*, double> kUnits[] = {{"_ns", 1.0}, {"_us", 1e3}, {"_ms", 1e6}, {"_s", 1e9}};
  for (const auto& [suffix, ns] : kUnits) {
    const std::string_view sfx(suffix);
    if (!name.ends_with(sfx)) continue;
    const std::string metric = name.substr(0, name.size() - sfx.size());
    bool known = metric == "forward" || metric == "iteration";
    for (int p = 0; p < kNumPhases && !known; ++p) known = metric == to_string(static_cast<Phase>(p));
    if (known) return MeasuredColumn{name, metric, ns};
  }
  return std::nullopt;
}

bool key_like(std::string_view name) {
  if (name.empty() || name.front() == '.' || name.back() == '.' || name.find("..") != std::string_view::npos)
    return false;
  for (const char ch : name)
    if (!(std::islower(static_cast<unsigned char>(ch)) || std::isdigit(static_cast<unsigned char>(ch)) || ch == '_' ||
          ch == '.'))
      return false;
  return true;
}

class Reader {
 public:
  explicit Reader(std::string origin) : origin_(std::move(origin)) {}
  [[noreturn]] void fail(std::int64_t line, int column, const std::string& what) const {
    if (column > 0) throw InputError(fmt::format("{}:{}:{}: {}", origin_, line, column, what));
    throw InputError(fmt::format("{}:{}: {}", origin_, line, what));
  }

  MeasuredTable read(std::istream& in) {
    MeasuredTable t;
    t.file = origin_;
    std::string text;
    std::string_view line;
    std::int64_t line_no = 0;
    std::vector<std::string_view> fields;
    if (!csv::next_content_line(in, text, line_no, line))
      throw InputError(fmt::format("{}: no header: the first line that is not a comment must name the columns "
                                   "(e.g. policy,policy.capacity_factor,forward_ms)",
                                   origin_));
    // 1-based character column of a field of the line held in `whole`.
    auto col_of = [](const std::string& whole, std::string_view part) {
      return static_cast<int>(part.data() - whole.data()) + 1;
    };
    const std::string header_text = text;  // the header line as read, for its fields' columns
    const std::string_view header = std::string_view(header_text).substr(static_cast<std::size_t>(line.data() - text.data()), line.size());
    const std::int64_t header_line = line_no;
    csv::split(header, fields);
    enum class Kind { Policy, PolicyParam, Measured, Override };
    std::vector<Kind> kinds;
    std::vector<std::size_t> measured_index;
    std::set<std::string> seen;
    for (const std::string_view f : fields) {
      const std::string name(f);
      const int col = col_of(header_text, f);
      if (name.find('"') != std::string::npos) fail(header_line, col, "quoted fields are not supported");
      if (name.empty()) fail(header_line, col, fmt::format("an empty column name; allowed: {}", kColumnsAllowed));
      if (!seen.insert(name).second) fail(header_line, col, fmt::format("column '{}' appears twice", name));
      t.header.push_back(name);
      measured_index.push_back(0);
      if (name == "policy") {
        kinds.push_back(Kind::Policy);
      } else if (name.starts_with("policy.")) {
        const std::string param = name.substr(7);
        if (param == "name" || param == "label" || !key_like(param) || param.find('.') != std::string::npos)
          fail(header_line, col,
               fmt::format("column '{}': '{}' is not a policy parameter; allowed: policy.PARAM with a parameter of "
                           "the row's policy (e.g. policy.capacity_factor; name and label cannot be set)",
                           name, param));
        kinds.push_back(Kind::PolicyParam);
      } else if (auto m = measured_column(name)) {
        kinds.push_back(Kind::Measured);
        measured_index.back() = t.measured.size();
        t.measured.push_back(*m);
      } else if (key_like(name)) {
        kinds.push_back(Kind::Override);
      } else {
        fail(header_line, col, fmt::format("column '{}' is not allowed; allowed: {}", name, kColumnsAllowed));
      }
    }
    if (t.measured.empty())
      fail(header_line, 0, fmt::format("no measured time among the columns ({}); add one: {}", header,
                                       "forward_ms, iteration_ms or a phase such as a2a_ms"));
    while (csv::next_content_line(in, text, line_no, line)) {
      csv::split(line, fields);
      if (fields.size() != t.header.size())
        fail(line_no, 0, fmt::format("{} fields, but the header (line {}) names {} columns", fields.size(),
                                     header_line, t.header.size()));
      MeasuredRow r;
      r.row = static_cast<int>(t.rows.size()) + 1;
      r.line = line_no;
      for (std::size_t c = 0; c < fields.size(); ++c) {
        const std::string cell(fields[c]);
        const int col = col_of(text, fields[c]);
        const std::string& name = t.header[c];
        if (cell.find('"') != std::string::npos) fail(line_no, col, fmt::format("column '{}': quoted fields are not supported", name));
        switch (kinds[c]) {
          case Kind::Policy:
            r.policy = cell;
            r.policy_column = col;
            break;
          case Kind::PolicyParam:
            if (cell.empty()) break;
            r.policy_params.emplace_back(name.substr(7), cell);
            r.policy_param_columns.push_back(col);
            break;
          case Kind::Override:
            if (cell.empty()) break;
            r.overrides.push_back(name + "=" + cell);
            r.override_names.push_back(name);
            r.override_columns.push_back(col);
            break;
          case Kind::Measured: {
            if (cell.empty()) break;
            double v = 0.0;
            const auto [end, ec] = std::from_chars(cell.data(), cell.data() + cell.size(), v);
            if (ec != std::errc{} || end != cell.data() + cell.size() || !std::isfinite(v) || v <= 0.0)
              fail(line_no, col,
                   fmt::format("column '{}': '{}' is not allowed; allowed: a positive number (the unit is in the "
                               "column's name), or empty when this row does not measure it",
                               name, cell));
            const MeasuredColumn& m = t.measured[measured_index[c]];
            r.measurements.push_back({measured_index[c], v * m.ns_per_unit, col});
            break;
          }
        }
      }
      if (r.measurements.empty())
        fail(line_no, 0, "every measured column of this row is empty: give at least one time, or delete the row");
      t.rows.push_back(std::move(r));
    }
    if (in.bad()) throw InputError(fmt::format("{}: read error after line {}", origin_, line_no));
    if (t.rows.empty()) fail(header_line, 0, "a header but no rows: add one row per measurement");
    return t;
  }

 private:
  std::string origin_;
};

}  // namespace

MeasuredTable parse_measured_csv(const std::string& text, const std::string& origin) {
  std::istringstream in(text);
  return Reader(origin).read(in);
}

MeasuredTable read_measured_csv(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InputError(fmt::format("{}: cannot open the measured times", file));
  return Reader(file).read(in);
}

}  // namespace moesim
