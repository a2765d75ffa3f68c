// TensorRT-LLM expert statistics: a folder of per-rank safetensors files plus meta_info.json.
#include "traces/importers.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <set>
#include <unordered_map>

#include "traces/importers/common.hpp"
#include "traces/importers/json.hpp"

namespace moesim {

using namespace importers;

namespace {

using nlohmann::json;

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

enum class Dtype : unsigned char { i32, i64, f32 };

struct TensorRef {
  std::uint64_t offset = 0;  // absolute file offset of the data
  Dtype dtype = Dtype::i64;
  bool present = false;
};

struct RankFile {
  std::string path;
  std::int64_t rank = 0;
  FilePtr f;
};

class TrtllmTrace final : public TraceSource {
 public:
  TrtllmTrace(std::string dir, std::vector<RankFile> ranks, std::vector<std::int64_t> iteration_ids,
              std::vector<std::int64_t> layer_ids, int experts, std::vector<TensorRef> index)
      : dir_(std::move(dir)),
        ranks_(std::move(ranks)),
        iteration_ids_(std::move(iteration_ids)),
        layer_ids_(std::move(layer_ids)),
        index_(std::move(index)) {
    shape_ = TraceShape{static_cast<int>(layer_ids_.size()), static_cast<int>(ranks_.size()), experts};
    raw_.resize(static_cast<std::size_t>(experts) * 8);
  }

  [[nodiscard]] TraceShape shape() const override { return shape_; }

  bool next(IterationCounts& out) override {
    if (iter_ >= static_cast<std::int64_t>(iteration_ids_.size())) return false;
    out.reset(shape_);
    const auto e_count = static_cast<std::size_t>(shape_.experts);
    for (int l = 0; l < shape_.layers; ++l) {
      for (int g = 0; g < shape_.gpus; ++g) {
        const TensorRef& t = ref(iter_, l, g);
        RankFile& rf = ranks_[static_cast<std::size_t>(g)];
        const std::size_t width = t.dtype == Dtype::i64 ? 8 : 4;
        const std::string key = fmt::format("{}_{}", iteration_ids_[static_cast<std::size_t>(iter_)],
                                            layer_ids_[static_cast<std::size_t>(l)]);
        if (std::fseek(rf.f.get(), static_cast<long>(t.offset), SEEK_SET) != 0 ||
            std::fread(raw_.data(), 1, e_count * width, rf.f.get()) != e_count * width) {
          fail(at_byte(rf.path, t.offset),
               fmt::format("short read: expected {} bytes for tensor '{}'", e_count * width, key));
        }
        for (std::size_t e = 0; e < e_count; ++e) {
          const unsigned char* p = raw_.data() + e * width;
          std::int64_t v = 0;
          bool ok = true;
          if (t.dtype == Dtype::i64) {
            std::memcpy(&v, p, 8);
          } else if (t.dtype == Dtype::i32) {
            std::int32_t x = 0;
            std::memcpy(&x, p, 4);
            v = x;
          } else {
            float x = 0;
            std::memcpy(&x, p, 4);
            ok = std::isfinite(x) && x == std::floor(x) && x < 9.0e15F;
            v = ok ? static_cast<std::int64_t>(x) : 0;
          }
          if (!ok || v < 0) {
            fail(at_byte(rf.path, t.offset + e * width),
                 fmt::format("tensor '{}', expert {}: the count is not a whole number >= 0", key, e));
          }
          out.at(l, g, static_cast<int>(e)) = v;
        }
      }
    }
    ++iter_;
    return true;
  }

  void rewind() override { iter_ = 0; }

  [[nodiscard]] std::string describe() const override {
    return fmt::format("trtllm({}; iterations {}..{}, layers {})", dir_, iteration_ids_.front(),
                       iteration_ids_.back(), fmt::join(layer_ids_, ","));
  }

  [[nodiscard]] std::int64_t iterations() const { return static_cast<std::int64_t>(iteration_ids_.size()); }

 private:
  [[nodiscard]] const TensorRef& ref(std::int64_t it, int layer, int rank) const {
    return index_[(static_cast<std::size_t>(it) * layer_ids_.size() + static_cast<std::size_t>(layer)) *
                      ranks_.size() +
                  static_cast<std::size_t>(rank)];
  }

  std::string dir_;
  std::vector<RankFile> ranks_;
  std::vector<std::int64_t> iteration_ids_;
  std::vector<std::int64_t> layer_ids_;
  std::vector<TensorRef> index_;  // [iteration][layer][rank]
  TraceShape shape_;
  std::vector<unsigned char> raw_;
  std::int64_t iter_ = 0;
};

// The trailing digits of a file stem: "rank12" -> 12.
bool rank_number(const std::string& stem, std::int64_t& out) {
  std::size_t i = stem.size();
  while (i > 0 && std::isdigit(static_cast<unsigned char>(stem[i - 1])) != 0) --i;
  return i < stem.size() && parse_int(std::string_view(stem).substr(i), out);
}

// A shape for a message: short when it is a list of a few numbers, its size otherwise.
std::string brief_shape(const json& shape) {
  if (shape.is_array() && shape.size() <= 8) {
    std::string s = "[";
    for (const json& d : shape) s += (s.size() > 1 ? ", " : "") + brief(d);
    return s + "]";
  }
  return brief(shape);
}

struct SafetensorsEntry {
  std::int64_t iteration = 0, layer = 0;
  TensorRef ref;
};

// Parses one safetensors header: 8-byte little-endian length N, a JSON object of N bytes, then
// the data; every tensor must be "<iteration>_<layer>" with `experts` counts (set from the first
// tensor seen if 0).
std::vector<SafetensorsEntry> read_safetensors_index(const std::string& path, std::FILE* f, int& experts) {
  std::error_code ec;
  const std::uintmax_t size = fs::file_size(path, ec);
  if (ec) fail(path, fmt::format("cannot read the size: {}", ec.message()));
  unsigned char lenbuf[8] = {};
  if (std::fread(lenbuf, 1, 8, f) != 8) {
    fail(at_byte(path, 0),
         fmt::format("short read: expected the 8-byte header length, the file has {} bytes", size));
  }
  std::uint64_t n = 0;
  std::memcpy(&n, lenbuf, 8);
  if (n < 2 || n > size - 8 || n > (std::uint64_t{256} << 20)) {
    fail(at_byte(path, 0),
         fmt::format("header length {} is out of range; the file has {} bytes after the length "
                     "field (and headers are limited to 256 MiB)",
                     n, size - 8));
  }
  std::string text(static_cast<std::size_t>(n), '\0');
  if (std::fread(text.data(), 1, text.size(), f) != text.size())
    fail(at_byte(path, 8), "short read in the header");
  const json h = parse_json_bounded(text, path, 8);
  if (!h.is_object()) fail(at_byte(path, 8), "the safetensors header must be a JSON object");
  const std::uint64_t data_start = 8 + n;
  const std::uint64_t data_size = size - data_start;
  std::vector<SafetensorsEntry> out;
  std::vector<std::tuple<std::uint64_t, std::uint64_t, std::string>> spans;  // begin, end, key
  for (const auto& [key, t] : h.items()) {
    if (key == "__metadata__") continue;
    const std::string where = fmt::format("{} (header), tensor '{}'", at_byte(path, 8), key);
    SafetensorsEntry e;
    const auto us = key.find('_');
    if (us == std::string::npos || !parse_int(std::string_view(key).substr(0, us), e.iteration) ||
        !parse_int(std::string_view(key).substr(us + 1), e.layer) || e.iteration < 0 || e.layer < 0) {
      fail(where,
           "expected keys '<iteration>_<layer>' (e.g. '12_3') as TensorRT-LLM's expert statistics write");
    }
    if (!t.is_object() || !t.contains("dtype") || !t.contains("shape") || !t.contains("data_offsets") ||
        !t["dtype"].is_string() || !t["shape"].is_array() || !t["data_offsets"].is_array() ||
        t["data_offsets"].size() != 2 || !t["data_offsets"][0].is_number_unsigned() ||
        !t["data_offsets"][1].is_number_unsigned()) {
      fail(where, "expected {\"dtype\": ..., \"shape\": [...], \"data_offsets\": [begin, end]}");
    }
    const std::string dtype = t["dtype"].get<std::string>();
    std::uint64_t width = 0;
    if (dtype == "I64") {
      e.ref.dtype = Dtype::i64;
      width = 8;
    } else if (dtype == "I32") {
      e.ref.dtype = Dtype::i32;
      width = 4;
    } else if (dtype == "F32") {
      e.ref.dtype = Dtype::f32;
      width = 4;
    } else {
      fail(where, fmt::format("dtype '{}' is not supported; counts must be I32, I64 or F32", dtype));
    }
    // [experts], or [1, ..., experts]: one count per expert either way.
    std::int64_t len = -1;
    const json& shape = t["shape"];
    for (std::size_t i = 0; i < shape.size(); ++i) {
      if (!shape[i].is_number_unsigned()) fail(where, "shape entries must be integers >= 0");
      const auto d = shape[i].get<std::uint64_t>();
      if (i + 1 < shape.size() && d != 1) {
        fail(where, fmt::format("shape {} is not a vector of expert counts ([experts] or [1, experts])",
                                brief_shape(shape)));
      }
      if (i + 1 == shape.size()) len = static_cast<std::int64_t>(std::min<std::uint64_t>(d, 1U << 25));
    }
    if (len < 1 || len > (1 << 24))
      fail(where, fmt::format("shape {} has no expert counts (or too many)", brief_shape(shape)));
    if (experts == 0) experts = static_cast<int>(len);
    if (len != experts) {
      fail(where, fmt::format(
                      "shape {} holds {} counts; the other tensors (or meta_info.json's num_experts) have {}",
                      brief_shape(shape), len, experts));
    }
    const auto begin = t["data_offsets"][0].get<std::uint64_t>();
    const auto end = t["data_offsets"][1].get<std::uint64_t>();
    if (begin > end || end > data_size || end - begin != static_cast<std::uint64_t>(len) * width) {
      fail(where, fmt::format("data_offsets [{}, {}] do not hold {} {} values within the {} data bytes",
                              begin, end, len, dtype, data_size));
    }
    e.ref.offset = data_start + begin;
    e.ref.present = true;
    out.push_back(e);
    spans.push_back({begin, end, key});
  }
  if (out.empty()) fail(at_byte(path, 8), "the file holds no count tensors");
  // Tensors sharing bytes would let a small file stand for any number of counts (every tensor
  // at offset 0): the data must be as large as the counts it claims.
  std::sort(spans.begin(), spans.end());
  for (std::size_t i = 1; i < spans.size(); ++i) {
    if (std::get<0>(spans[i]) < std::get<1>(spans[i - 1])) {
      fail(at_byte(path, 8), fmt::format("tensors '{}' and '{}' overlap (data_offsets [{}, {}] and [{}, {}]); "
                                         "each tensor must have its own bytes",
                                         std::get<2>(spans[i - 1]), std::get<2>(spans[i]), std::get<0>(spans[i - 1]),
                                         std::get<1>(spans[i - 1]), std::get<0>(spans[i]), std::get<1>(spans[i])));
    }
  }
  return out;
}

TrtllmStats trtllm_stats(const std::string& dir) {
  const fs::path meta = fs::path(dir) / "meta_info.json";
  std::error_code ec;
  if (!fs::is_regular_file(meta, ec)) {
    fail(dir,
         "a folder is read as TensorRT-LLM expert statistics and needs a meta_info.json, which it lacks");
  }
  int experts = 0;
  std::optional<std::int64_t> meta_layers;
  {
    const json m = read_json_file(meta.string());
    if (!m.is_object()) fail(meta.string(), "expected a JSON object");
    // Lenient: only the keys used are checked; others (num_experts_per_token, ...) are ignored.
    const auto positive = [&](const char* key) -> std::optional<std::int64_t> {
      if (!m.contains(key)) return std::nullopt;
      const json& v = m.at(key);
      if (!v.is_number_integer() || v.get<std::int64_t>() < 1 || v.get<std::int64_t>() > (1 << 24)) {
        fail(meta.string(), fmt::format("'{}' must be an integer in 1..2^24, found {}", key, brief(v)));
      }
      return v.get<std::int64_t>();
    };
    if (auto e = positive("num_experts")) experts = static_cast<int>(*e);
    meta_layers = positive("num_layers");
  }

  std::vector<RankFile> ranks;
  try {
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (!entry.is_regular_file() || entry.path().extension() != ".safetensors") continue;
      RankFile rf;
      rf.path = entry.path().string();
      if (!rank_number(entry.path().stem().string(), rf.rank)) {
        fail(rf.path, "cannot tell the rank: the file name must end in the rank number (rank3.safetensors)");
      }
      ranks.push_back(std::move(rf));
    }
  } catch (const fs::filesystem_error& e) {
    fail(dir, fmt::format("cannot list the folder: {}", e.what()));
  }
  if (ranks.empty()) fail(dir, "the folder has no <rank>.safetensors files");
  std::sort(ranks.begin(), ranks.end(), [](const RankFile& a, const RankFile& b) { return a.rank < b.rank; });
  for (std::size_t i = 1; i < ranks.size(); ++i) {
    if (ranks[i].rank == ranks[i - 1].rank) {
      fail(dir,
           fmt::format("'{}' and '{}' both claim rank {}", ranks[i - 1].path, ranks[i].path, ranks[i].rank));
    }
  }

  std::vector<std::vector<SafetensorsEntry>> per_rank;
  std::set<std::int64_t> iteration_set, layer_set;
  for (auto& rf : ranks) {
    rf.f.reset(std::fopen(rf.path.c_str(), "rb"));
    if (!rf.f) fail(rf.path, "cannot open (check permissions)");
    per_rank.push_back(read_safetensors_index(rf.path, rf.f.get(), experts));
    for (const auto& e : per_rank.back()) {
      iteration_set.insert(e.iteration);
      layer_set.insert(e.layer);
    }
  }
  std::vector<std::int64_t> iteration_ids(iteration_set.begin(), iteration_set.end());
  std::vector<std::int64_t> layer_ids(layer_set.begin(), layer_set.end());
  if (meta_layers && *meta_layers != static_cast<std::int64_t>(layer_ids.size())) {
    fail(meta.string(), fmt::format("num_layers is {} but the rank files record {} layers ({})", *meta_layers,
                                    layer_ids.size(), fmt::join(layer_ids, ",")));
  }
  // Every rank needs a tensor per (iteration, layer): check the counts before the index of
  // iterations x layers x ranks is allocated (keys 0_0, 1_1, 2_2, ... would make it quadratic).
  const std::uint64_t per_rank_needed = static_cast<std::uint64_t>(iteration_ids.size()) * layer_ids.size();
  if (std::any_of(per_rank.begin(), per_rank.end(), [&](const auto& p) { return p.size() != per_rank_needed; })) {
    std::vector<std::set<std::pair<std::int64_t, std::int64_t>>> have(ranks.size());
    for (std::size_t r = 0; r < ranks.size(); ++r) {
      for (const auto& e : per_rank[r]) have[r].emplace(e.iteration, e.layer);
    }
    // The first gap in [iteration][layer][rank] order; found after at most one pass over the tensors.
    for (const std::int64_t it : iteration_ids) {
      for (const std::int64_t l : layer_ids) {
        for (std::size_t r = 0; r < ranks.size(); ++r) {
          if (have[r].count({it, l}) != 0) continue;
          const std::vector<std::int64_t> shown(layer_ids.begin(),
                                                layer_ids.begin() + static_cast<std::ptrdiff_t>(std::min<std::size_t>(layer_ids.size(), 16)));
          fail(ranks[r].path,
               fmt::format("no tensor '{}_{}': every rank must record every iteration ({}..{}) and layer "
                           "({}{}) that any rank records",
                           it, l, iteration_ids.front(), iteration_ids.back(), fmt::join(shown, ","),
                           layer_ids.size() > 16 ? fmt::format(", ... {} layers", layer_ids.size()) : ""));
        }
      }
    }
  }
  std::unordered_map<std::int64_t, std::size_t> it_pos, layer_pos;
  for (std::size_t i = 0; i < iteration_ids.size(); ++i) it_pos[iteration_ids[i]] = i;
  for (std::size_t i = 0; i < layer_ids.size(); ++i) layer_pos[layer_ids[i]] = i;
  const std::size_t R = ranks.size(), L = layer_ids.size();
  std::vector<TensorRef> index(iteration_ids.size() * L * R);
  for (std::size_t r = 0; r < R; ++r) {
    for (const auto& e : per_rank[r]) index[(it_pos[e.iteration] * L + layer_pos[e.layer]) * R + r] = e.ref;
  }
  for (std::size_t i = 0; i < index.size(); ++i) {
    if (!index[i].present) {
      const std::size_t r = i % R, l = i / R % L, it = i / R / L;
      fail(ranks[r].path,
           fmt::format("no tensor '{}_{}': every rank must record every iteration ({}..{}) and layer "
                       "({}) that any rank records",
                       iteration_ids[it], layer_ids[l], iteration_ids.front(), iteration_ids.back(),
                       fmt::join(layer_ids, ",")));
    }
  }
  TrtllmStats out;
  out.iterations = static_cast<std::int64_t>(iteration_ids.size());
  out.source = std::make_unique<TrtllmTrace>(dir, std::move(ranks), std::move(iteration_ids),
                                             std::move(layer_ids), experts, std::move(index));
  return out;
}

}  // namespace

TrtllmStats open_trtllm_stats(const std::string& dir) { return trtllm_stats(dir); }

}  // namespace moesim
