// A load matrix in JSON: [layers][experts] or [steps][layers][experts], bare or under a known key.
#include "traces/importers.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <nlohmann/json.hpp>

#include <array>
#include <cmath>
#include <string_view>

#include "traces/importers/common.hpp"
#include "traces/importers/json.hpp"

namespace moesim {

using namespace importers;

namespace {

using nlohmann::json;

// Keys under which recorders store the matrix: fiddler's expert_popularity, SGLang's
// logical_count, EPLB's weight, and generic names.
constexpr std::array<std::string_view, 8> kMatrixKeys = {
    "expert_popularity", "logical_count", "expert_load", "expert_counts", "counts", "load", "weight",
    "tokens_per_expert"};

std::unique_ptr<CountMatrixSource> load_matrix_json(const std::string& path) {
  const json root = read_json_file(path);
  const json* m = &root;
  std::string ptr;  // JSON pointer of the matrix, for messages
  if (root.is_object()) {
    m = nullptr;
    for (std::string_view k : kMatrixKeys) {
      const auto it = root.find(std::string(k));
      if (it != root.end()) {
        m = &*it;
        // Not "/" + std::string(k): inlined here, GCC 12 warns of a memcpy overlap that cannot happen.
        ptr = fmt::format("/{}", k);
        break;
      }
    }
    if (m == nullptr) {
      std::vector<std::string> arrays;
      for (const auto& [k, v] : root.items()) {
        if (v.is_array()) arrays.push_back(k);
      }
      if (arrays.size() != 1) {
        const std::size_t n = arrays.size();
        if (n > 8) arrays.resize(8);  // the message names a few, not a whole file of keys
        fail(path, fmt::format("cannot find the load matrix: the object has {} array members ({}{}); expected "
                               "the root array or one of the keys {}",
                               n, fmt::join(arrays, ", "), n > 8 ? ", ..." : "", fmt::join(kMatrixKeys, ", ")));
      }
      ptr = "/" + arrays.front();
      m = &root.at(arrays.front());
    }
  }
  const auto where = [&](const std::string& sub) { return fmt::format("{}: at {}{}", path, ptr, sub); };
  if (!m->is_array() || m->empty()) {
    fail(where(""), "expected a non-empty array [layers][experts] or [steps][layers][experts]");
  }
  const json& first = (*m)[0];
  if (!first.is_array() || first.empty()) {
    fail(where("/0"),
         "expected an array of expert counts (a layer) or of layers (a step); a load matrix is "
         "[layers][experts] or [steps][layers][experts]");
  }
  const bool with_steps = first[0].is_array();
  const std::size_t steps = with_steps ? m->size() : 1;
  const std::size_t layers = with_steps ? first.size() : m->size();
  const std::size_t experts = with_steps ? first[0].size() : first.size();
  check_dims(where(""), static_cast<std::int64_t>(layers), static_cast<std::int64_t>(experts));
  // Grown as values are read, not reserved from the first step's shape: steps * layers * experts
  // taken from a short file can ask for a terabyte before a later step turns out shorter.
  std::vector<double> data;
  const auto read_layer = [&](const json& row, const std::string& at) {
    if (!row.is_array() || row.size() != experts) {
      fail(where(at),
           fmt::format("expected an array of {} expert counts (as the first layer), found {}", experts,
                       row.is_array() ? fmt::format("{} values", row.size()) : row.type_name()));
    }
    for (std::size_t e = 0; e < experts; ++e) {
      const json& v = row[e];
      const double x = v.is_number() ? v.get<double>() : -1.0;
      if (!v.is_number() || !std::isfinite(x) || x < 0 || x > kMaxExactCount) {
        fail(where(fmt::format("{}/{}", at, e)),
             fmt::format("expected a count (a number >= 0), found {}", brief(v)));
      }
      data.push_back(x);
    }
  };
  for (std::size_t s = 0; s < steps; ++s) {
    const json& step = with_steps ? (*m)[s] : *m;
    const std::string sat = with_steps ? fmt::format("/{}", s) : std::string();
    if (!step.is_array() || step.size() != layers) {
      fail(where(sat),
           fmt::format("expected an array of {} layers (as step 0), found {}", layers,
                       step.is_array() ? fmt::format("{} values", step.size()) : step.type_name()));
    }
    for (std::size_t l = 0; l < layers; ++l) read_layer(step[l], fmt::format("{}/{}", sat, l));
  }
  return std::make_unique<MemoryMatrix>(static_cast<int>(layers), static_cast<int>(experts), std::move(data),
                                        fmt::format("load-matrix-json({})", path));
}

}  // namespace

std::unique_ptr<CountMatrixSource> open_load_matrix_json(const std::string& path) {
  return load_matrix_json(path);
}

}  // namespace moesim
