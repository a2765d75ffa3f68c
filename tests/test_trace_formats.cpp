// Binary trace format, importers (load matrices, long CSV, TensorRT-LLM) and conversion.
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "tests/file_fixture.hpp"
#include "traces/binary.hpp"
#include "traces/importers.hpp"
#include "traces/trace.hpp"
#include "tests/trace_fixture.hpp"

using Catch::Matchers::Contains;
using moesim::ConvertRequest;
using moesim::InputError;
using moesim::IterationCounts;
using moesim::TraceShape;
using moesim::TraceSource;
using moesim::testing::read_file;
using moesim::testing::TempDir;

namespace fs = std::filesystem;

namespace {

void write_bytes(const std::string& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary | std::ios::trunc)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

using moesim::testing::VectorTrace;

std::vector<IterationCounts> drain(TraceSource& t) {
  std::vector<IterationCounts> out;
  IterationCounts c;
  while (t.next(c)) out.push_back(c);
  return out;
}

std::vector<IterationCounts> synthetic(const TraceShape& shape, int n, std::uint64_t seed = 3) {
  moesim::SyntheticTraceSpec spec;
  spec.tokens_per_gpu = 512;
  spec.top_k = 2;
  spec.seed = seed;
  auto t = moesim::make_synthetic_trace(shape, spec);
  std::vector<IterationCounts> out(static_cast<std::size_t>(n));
  for (auto& c : out) REQUIRE(t->next(c));
  return out;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no error)";
}

std::int64_t row_sum(const IterationCounts& c, int layer, int src) {
  std::int64_t s = 0;
  for (int e = 0; e < c.shape.experts; ++e) s += c.at(layer, src, e);
  return s;
}

std::int64_t expert_total(const IterationCounts& c, int layer, int expert) {
  std::int64_t s = 0;
  for (int g = 0; g < c.shape.gpus; ++g) s += c.at(layer, g, expert);
  return s;
}

ConvertRequest convert(const std::string& in, const std::string& out) {
  ConvertRequest r;
  r.in = in;
  r.out = out;
  return r;
}

// A safetensors file: 8-byte little-endian header length, JSON header, raw data.
struct Tensor {
  std::string key;
  std::string dtype;  // I32, I64, F32
  std::vector<double> values;
};

void write_safetensors(const std::string& path, const std::vector<Tensor>& tensors) {
  nlohmann::json h = nlohmann::json::object();
  std::string data;
  for (const auto& t : tensors) {
    const std::size_t begin = data.size();
    for (double v : t.values) {
      if (t.dtype == "I64") {
        const auto x = static_cast<std::int64_t>(v);
        data.append(reinterpret_cast<const char*>(&x), 8);
      } else if (t.dtype == "I32") {
        const auto x = static_cast<std::int32_t>(v);
        data.append(reinterpret_cast<const char*>(&x), 4);
      } else {
        const auto x = static_cast<float>(v);
        data.append(reinterpret_cast<const char*>(&x), 4);
      }
    }
    h[t.key] = {{"dtype", t.dtype}, {"shape", {t.values.size()}}, {"data_offsets", {begin, data.size()}}};
  }
  h["__metadata__"] = {{"format", "pt"}};
  const std::string text = h.dump();
  const std::uint64_t n = text.size();
  std::string bytes(reinterpret_cast<const char*>(&n), 8);
  write_bytes(path, bytes + text + data);
}

const std::string kOlmoe =
    std::string(MOESIM_SOURCE_DIR) + "/../shared/data/real/olmoe/expert_counts_long.csv";

}  // namespace

TEST_CASE("crc32 matches the standard check value and chains", "[trace-formats]") {
  CHECK(moesim::crc32("123456789", 9) == 0xCBF43926U);
  CHECK(moesim::crc32("", 0) == 0U);
  // Long input (the sliced path) equals byte-at-a-time chaining.
  std::string s(1000, '\0');
  for (std::size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>(i * 7 + 3);
  std::uint32_t chained = 0;
  for (char c : s) chained = moesim::crc32(&c, 1, chained);
  CHECK(moesim::crc32(s.data(), s.size()) == chained);
  CHECK(moesim::crc32(s.data() + 5, s.size() - 5, moesim::crc32(s.data(), 5)) == chained);
}

TEST_CASE("binary trace: round trip, header, rewind", "[trace-formats]") {
  TempDir d;
  const TraceShape shape{3, 4, 8};
  const auto its = synthetic(shape, 7);
  VectorTrace src(its);
  const std::string bin = d.file("t.bin");
  moesim::write_binary_trace(src, 7, bin);
  CHECK_FALSE(fs::exists(bin + ".tmp"));

  const auto info = moesim::read_binary_trace_info(bin);
  CHECK(info.shape.layers == 3);
  CHECK(info.shape.gpus == 4);
  CHECK(info.shape.experts == 8);
  CHECK(info.iterations == 7);
  CHECK(info.element_bytes == 4);
  CHECK(fs::file_size(bin) == 64 + 7 * (3 * 4 * 8 * 4 + 4));
  CHECK(read_file(bin).substr(0, 8) == "MOESIMTR");

  auto t = moesim::open_binary_trace(bin, shape);
  CHECK(t->describe() == "binary(" + bin + ")");
  for (int pass = 0; pass < 2; ++pass) {
    const auto got = drain(*t);
    REQUIRE(got.size() == its.size());
    for (std::size_t i = 0; i < its.size(); ++i) CHECK(got[i].counts == its[i].counts);
    IterationCounts c;
    CHECK_FALSE(t->next(c));  // stays at the end
    t->rewind();
  }
  // Zero fields of the expected shape take the file's.
  auto any = moesim::open_binary_trace(bin, TraceShape{});
  CHECK(any->shape().experts == 8);
  CHECK(drain(*any).size() == 7);
}

TEST_CASE("binary trace: counts above int32 switch the file to int64", "[trace-formats]") {
  TempDir d;
  const TraceShape shape{2, 2, 3};
  std::vector<IterationCounts> its(4);
  for (std::size_t i = 0; i < its.size(); ++i) {
    its[i].reset(shape);
    for (std::size_t c = 0; c < its[i].counts.size(); ++c)
      its[i].counts[c] = static_cast<std::int64_t>(i * 100 + c);
  }
  its[2].at(1, 0, 2) = std::int64_t{5} << 33;  // needs int64, after two int32 iterations
  VectorTrace src(its);
  const std::string bin = d.file("big.bin");
  moesim::write_binary_trace(src, 4, bin);
  CHECK(moesim::read_binary_trace_info(bin).element_bytes == 8);
  CHECK_FALSE(fs::exists(bin + ".tmp"));
  CHECK_FALSE(fs::exists(bin + ".tmp64"));
  auto t = moesim::open_binary_trace(bin, shape);
  const auto got = drain(*t);
  REQUIRE(got.size() == 4);
  for (std::size_t i = 0; i < its.size(); ++i) CHECK(got[i].counts == its[i].counts);
}

TEST_CASE("binary trace: int64 counts that could overflow the sums are refused (issue 16)", "[trace-formats]") {
  TempDir d;
  const TraceShape shape{2, 2, 3};
  std::vector<IterationCounts> its(2);
  for (auto& it : its) it.reset(shape);
  its[1].at(1, 0, 2) = std::int64_t{1} << 62;  // once summed into tokens_routed 0 and dropped -32768
  VectorTrace src(its);
  const std::string bin = d.file("huge.bin");
  moesim::write_binary_trace(src, 2, bin);
  REQUIRE(moesim::read_binary_trace_info(bin).element_bytes == 8);
  auto t = moesim::open_binary_trace(bin, shape);
  IterationCounts c;
  REQUIRE(t->next(c));
  // Iteration 1 starts at 64 + (12 x 8 + 4) = 164; cell (1, 0, 2) is the 9th: 164 + 8 x 8 = 228.
  CHECK_THAT(error_of([&] { (void)t->next(c); }),
             Contains(bin + ": byte offset 228: iteration 1, layer 1, src_gpu 0, expert 2: count 4611686018427387904 "
                            "is above the 1099511627776 (2^40) one cell may hold"));
  // Every cell at the ceiling: 24 x 2^40 = 2.639e13 assignments, above 2^44 = 1.759e13 in one iteration.
  const TraceShape wide{2, 3, 4};
  std::vector<IterationCounts> full(1);
  full[0].reset(wide);
  for (auto& v : full[0].counts) v = std::int64_t{1} << 40;
  VectorTrace src2(full);
  const std::string bin2 = d.file("total.bin");
  moesim::write_binary_trace(src2, 1, bin2);
  auto t2 = moesim::open_binary_trace(bin2, wide);
  CHECK_THAT(error_of([&] { (void)t2->next(c); }),
             Contains(bin2 + ": byte offset 64: iteration 0 routes 2.639e+13 assignments in all, more than the "
                             "1.759e+13 (2^44) one iteration may hold"));
}

TEST_CASE("binary trace: truncation, corruption and bad headers report byte offsets", "[trace-formats]") {
  TempDir d;
  const TraceShape shape{2, 3, 4};
  const auto its = synthetic(shape, 5);
  VectorTrace src(its);
  const std::string bin = d.file("t.bin");
  moesim::write_binary_trace(src, 5, bin);
  const std::string good = read_file(bin);
  const std::size_t block = 2 * 3 * 4 * 4 + 4;  // 100 bytes

  SECTION("truncated file: found at open") {
    const std::string p = d.file("cut.bin");
    write_bytes(p, good.substr(0, 64 + 3 * block + 10));
    const std::string e = error_of([&] { (void)moesim::open_binary_trace(p, shape); });
    CHECK_THAT(e, Contains(p + ": short read at byte offset 364: expected 100 bytes for iteration 3"));
  }
  SECTION("truncated while streaming") {
    const std::string p = d.file("shrinks.bin");
    write_bytes(p, good);
    auto t = moesim::open_binary_trace(p, shape);
    fs::resize_file(p, 64 + 2 * block + 1);
    IterationCounts c;
    const std::string e = error_of([&] {
      while (t->next(c)) {
      }
    });
    CHECK_THAT(e, Contains("short read at byte offset 264: expected 100 bytes for iteration 2"));
  }
  SECTION("header only partly there") {
    const std::string p = d.file("short.bin");
    write_bytes(p, good.substr(0, 30));
    CHECK_THAT(error_of([&] { (void)moesim::open_binary_trace(p, shape); }),
               Contains("short read at byte offset 0: expected 64 bytes for the header, the file has 30"));
  }
  SECTION("trailing bytes") {
    const std::string p = d.file("long.bin");
    write_bytes(p, good + "xyz");
    CHECK_THAT(error_of([&] { (void)moesim::open_binary_trace(p, shape); }),
               Contains("byte offset 564: 3 unexpected bytes after the last iteration"));
  }
  SECTION("flipped byte in a count: checksum error at that iteration's offset") {
    std::string bad = good;
    bad[64 + block + 17] = static_cast<char>(bad[64 + block + 17] ^ 0x10);
    const std::string p = d.file("flip.bin");
    write_bytes(p, bad);
    auto t = moesim::open_binary_trace(p, shape);  // the size is right: found while reading
    IterationCounts c;
    REQUIRE(t->next(c));
    CHECK(c.counts == its[0].counts);
    CHECK_THAT(error_of([&] { (void)t->next(c); }),
               Contains(p + ": byte offset 164: checksum mismatch in iteration 1"));
  }
  SECTION("two iterations swapped: each checksum fine, the payload checksum is not") {
    std::string bad = good;
    bad.replace(64, block, good.substr(64 + block, block));
    bad.replace(64 + block, block, good.substr(64, block));
    const std::string p = d.file("swap.bin");
    write_bytes(p, bad);
    auto t = moesim::open_binary_trace(p, shape);
    IterationCounts c;
    for (int i = 0; i < 4; ++i) REQUIRE(t->next(c));
    CHECK_THAT(error_of([&] { (void)t->next(c); }), Contains("byte offset 48: payload checksum mismatch"));
    // Convert reads exactly the announced iterations: it must not miss the check either.
    CHECK_THAT(error_of([&] { moesim::convert_trace_file(convert(p, d.file("swap.csv"))); }),
               Contains("payload checksum mismatch"));
    CHECK_FALSE(fs::exists(d.file("swap.csv")));
    CHECK_FALSE(fs::exists(d.file("swap.csv.tmp")));
  }
  SECTION("bad magic") {
    std::string bad = good;
    bad[0] = 'X';
    const std::string p = d.file("magic.bin");
    write_bytes(p, bad);
    CHECK_THAT(error_of([&] { (void)moesim::open_binary_trace(p, shape); }),
               Contains(p + ": byte offset 0: expected the magic 'MOESIMTR' of a moesim binary trace, found "
                            "'XOESIMTR'"));
  }
  SECTION("unsupported version (valid header checksum)") {
    std::string bad = good;
    const std::uint32_t v = 2;
    std::memcpy(bad.data() + 8, &v, 4);
    const std::uint32_t crc = moesim::crc32(bad.data(), 60);
    std::memcpy(bad.data() + 60, &crc, 4);
    const std::string p = d.file("v2.bin");
    write_bytes(p, bad);
    CHECK_THAT(error_of([&] { (void)moesim::open_binary_trace(p, shape); }),
               Contains("byte offset 8: format version 2 is not supported; this build reads version 1"));
  }
  SECTION("edited header field: header checksum") {
    std::string bad = good;
    bad[24] = 5;  // experts 4 -> 5
    const std::string p = d.file("hdr.bin");
    write_bytes(p, bad);
    CHECK_THAT(error_of([&] { (void)moesim::open_binary_trace(p, shape); }),
               Contains("byte offset 60: header checksum mismatch"));
  }
  SECTION("shape mismatch names both sides") {
    const std::string e = error_of([&] { (void)moesim::open_binary_trace(bin, TraceShape{2, 8, 4}); });
    CHECK_THAT(
        e, Contains(bin + ": byte offset 16: shape mismatch: the trace has 2 MoE layers, 3 GPUs, 4 experts; "
                          "the scenario expects 2 MoE layers, 8 GPUs, 4 experts (GPUs differ)"));
  }
  SECTION("not a file") {
    CHECK_THAT(error_of([&] { (void)moesim::open_binary_trace(d.file("none.bin"), shape); }),
               Contains("no such file"));
  }
}

TEST_CASE("convert: native CSV -> binary -> CSV is byte-identical", "[trace-formats]") {
  TempDir d;
  const TraceShape shape{3, 4, 16};
  const auto its = synthetic(shape, 6, 11);
  VectorTrace src(its);
  const std::string csv = d.file("a.csv");
  moesim::write_csv_trace(src, 6, csv);

  // Shape inferred from the CSV's largest indices.
  const auto r1 = moesim::convert_trace_file(convert(csv, d.file("a.bin")));
  CHECK(r1.input == moesim::TraceFormat::native_csv);
  CHECK(r1.output_format == "binary");
  CHECK(r1.iterations == 6);
  CHECK(r1.shape.experts == 16);
  const auto r2 = moesim::convert_trace_file(convert(d.file("a.bin"), d.file("b.csv")));
  CHECK(r2.input == moesim::TraceFormat::binary);
  CHECK(read_file(d.file("b.csv")) == read_file(csv));

  // --format overrides the extension; --iterations takes a prefix.
  auto req = convert(csv, d.file("c.data"));
  req.format = "binary";
  req.iterations = 2;
  moesim::convert_trace_file(req);
  auto t = moesim::open_binary_trace(d.file("c.data"), shape);
  const auto got = drain(*t);
  REQUIRE(got.size() == 2);
  CHECK(got[1].counts == its[1].counts);

  auto too_many = convert(csv, d.file("d.bin"));
  too_many.iterations = 7;
  CHECK_THAT(error_of([&] { moesim::convert_trace_file(too_many); }),
             Contains("--iterations 7: the trace has only 6 iterations"));
  CHECK_FALSE(fs::exists(d.file("d.bin")));
  CHECK_THAT(error_of([&] { moesim::convert_trace_file(convert(csv, d.file("x.txt"))); }),
             Contains("cannot tell the output format"));
  CHECK_THAT(error_of([&] { moesim::convert_trace_file(convert(csv, csv)); }),
             Contains("would overwrite the input"));

  // An explicit shape is checked against the rows: a row beyond it is reported with its line.
  auto narrow = convert(csv, d.file("e.bin"));
  narrow.import.shape = TraceShape{3, 4, 8};
  CHECK_THAT(error_of([&] { moesim::convert_trace_file(narrow); }),
             Contains("is out of range; the scenario has 8 experts"));
  auto wide = convert(d.file("a.bin"), d.file("f.csv"));
  wide.import.shape = TraceShape{3, 8, 16};
  CHECK_THAT(
      error_of([&] { moesim::convert_trace_file(wide); }),
      Contains("a.bin: byte offset 16: shape mismatch: the trace has 3 MoE layers, 4 GPUs, 16 experts; the "
               "scenario expects 3 MoE layers, 8 GPUs, 16 experts (GPUs differ)"));
}

TEST_CASE("convert: malformed native CSV rows report the line", "[trace-formats]") {
  TempDir d;
  const std::string h = "iteration,layer,src_gpu,expert,tokens\n";
  const std::string fields = d.write("f.csv", h + "0,0,0,0,5\n0,0,0,1\n");
  CHECK_THAT(error_of([&] { moesim::convert_trace_file(convert(fields, d.file("o.bin"))); }),
             Contains(fields + ":3: expected 5 fields"));
  const std::string neg = d.write("n.csv", h + "0,0,0,0,5\n# c\n0,0,1,1,-4\n");
  CHECK_THAT(error_of([&] { moesim::convert_trace_file(convert(neg, d.file("o.bin"))); }),
             Contains(neg + ":4: tokens -4 is negative"));
  CHECK_FALSE(fs::exists(d.file("o.bin")));
}

TEST_CASE("load matrix JSON: batch-size spreading keeps every row at tokens * top_k", "[trace-formats]") {
  TempDir d;
  // Mixtral-MMLU style: an object with expert_popularity [layers][experts].
  const std::string p = d.write(
      "m.json", R"({"total_input_tokens": 9, "expert_popularity": [[10, 30, 0, 60], [25, 25, 25, 25]]})");
  CHECK(moesim::detect_trace_format(p) == moesim::TraceFormat::load_matrix_json);
  moesim::ImportOptions o;
  o.shape = TraceShape{2, 8, 4};
  o.tokens_per_gpu = 1000;
  o.top_k = 2;
  o.seed = 5;
  o.iterations = 50;  // one recorded step, cycled with fresh draws
  auto opened = moesim::open_trace_file(p, o);
  CHECK(opened.iterations == 50);
  CHECK(opened.spread);
  const auto its = drain(*opened.source);
  REQUIRE(its.size() == 50);
  std::vector<double> share(4, 0.0);
  for (const auto& c : its) {
    for (int l = 0; l < 2; ++l) {
      for (int g = 0; g < 8; ++g) REQUIRE(row_sum(c, l, g) == 2000);
    }
    CHECK(expert_total(c, 0, 2) == 0);  // a zero count stays zero
    for (int e = 0; e < 4; ++e)
      share[static_cast<std::size_t>(e)] += static_cast<double>(expert_total(c, 0, e));
  }
  // Expected share proportional to the input: 50 * 8 * 2000 = 800000 draws, sd of a share < 0.0006.
  const double n = 50.0 * 8 * 2000;
  CHECK(share[0] / n == Approx(0.1).margin(0.004));
  CHECK(share[1] / n == Approx(0.3).margin(0.004));
  CHECK(share[3] / n == Approx(0.6).margin(0.004));
  // Seeded: rewinding replays the same draws; consecutive iterations differ.
  opened.source->rewind();
  IterationCounts first;
  REQUIRE(opened.source->next(first));
  CHECK(first.counts == its[0].counts);
  CHECK(its[0].counts != its[1].counts);

  // Shape mismatch names both sides; missing G is explained.
  moesim::ImportOptions wrong = o;
  wrong.shape = TraceShape{3, 8, 4};
  CHECK_THAT(
      error_of([&] { (void)moesim::open_trace_file(p, wrong); }),
      Contains("the trace has 2 MoE layers, 8 GPUs, 4 experts; the scenario expects 3 MoE layers, 8 GPUs, 4 "
               "experts (MoE layers differ)"));
  moesim::ImportOptions no_g;
  CHECK_THAT(error_of([&] { (void)moesim::open_trace_file(p, no_g); }), Contains("has no source-GPU detail"));
}

TEST_CASE("load matrix JSON [steps][layers][experts]: recorded totals are preserved", "[trace-formats]") {
  TempDir d;
  const std::string p = d.write("s.json", "[[[5, 0, 7], [1, 2, 3]], [[9, 9, 9], [0, 0, 40]]]");
  auto req = convert(p, d.file("s.bin"));
  req.import.shape.gpus = 3;
  const auto r = moesim::convert_trace_file(req);
  CHECK(r.input == moesim::TraceFormat::load_matrix_json);
  CHECK(r.iterations == 2);
  auto t = moesim::open_binary_trace(d.file("s.bin"), TraceShape{2, 3, 3});
  const auto its = drain(*t);
  REQUIRE(its.size() == 2);
  const std::vector<std::vector<std::vector<std::int64_t>>> want = {{{5, 0, 7}, {1, 2, 3}},
                                                                    {{9, 9, 9}, {0, 0, 40}}};
  for (std::size_t s = 0; s < 2; ++s) {
    for (int l = 0; l < 2; ++l) {
      for (int e = 0; e < 3; ++e)
        CHECK(expert_total(its[s], l, e) ==
              want[s][static_cast<std::size_t>(l)][static_cast<std::size_t>(e)]);
    }
  }
  // The 40 of step 1 is split over the 3 GPUs, not given to one.
  CHECK(its[1].at(1, 0, 2) < 40);

  // Non-whole counts need a batch size.
  const std::string frac = d.write("f.json", "[[0.25, 0.75]]");
  auto fr = convert(frac, d.file("f.bin"));
  fr.import.shape.gpus = 2;
  CHECK_THAT(error_of([&] { moesim::convert_trace_file(fr); }), Contains("count 0.25 is not a whole number"));
  fr.import.tokens_per_gpu = 10;
  CHECK(moesim::convert_trace_file(fr).iterations == 1);
}

TEST_CASE("load matrix JSON errors name the byte offset or the JSON path", "[trace-formats]") {
  TempDir d;
  const std::string bad = d.write("bad.json", "[[1, 2], [3, ]]");
  moesim::ImportOptions o;
  o.shape.gpus = 2;
  CHECK_THAT(error_of([&] { (void)moesim::open_trace_file(bad, o); }),
             Contains(bad + ": byte offset 14: invalid JSON"));
  const std::string ragged = d.write("r.json", R"({"logical_count": [[1, 2], [3]]})");
  CHECK_THAT(
      error_of([&] { (void)moesim::open_trace_file(ragged, o); }),
      Contains(ragged + ": at /logical_count/1: expected an array of 2 expert counts (as the first layer), "
                        "found 1 values"));
  const std::string neg = d.write("n.json", "[[1, -2]]");
  CHECK_THAT(error_of([&] { (void)moesim::open_trace_file(neg, o); }),
             Contains(neg + ": at /0/1: expected a count (a number >= 0), found -2"));
  const std::string which = d.write("w.json", R"({"a": [[1]], "b": [[2]]})");
  CHECK_THAT(error_of([&] { (void)moesim::open_trace_file(which, o); }),
             Contains("cannot find the load matrix"));
}

TEST_CASE("load matrix CSV: plain rows and step/layer columns", "[trace-formats]") {
  TempDir d;
  moesim::ImportOptions o;
  o.shape.gpus = 2;
  SECTION("rows = layers, columns = experts") {
    const std::string p = d.write("m.csv", "# EPLB weight\n4,0,6\n1,1,1\n");
    CHECK(moesim::detect_trace_format(p) == moesim::TraceFormat::load_matrix_csv);
    auto t = moesim::open_trace_file(p, o);
    CHECK(t.iterations == 1);
    CHECK(t.source->shape().layers == 2);
    CHECK(t.source->shape().experts == 3);
    IterationCounts c;
    REQUIRE(t.source->next(c));
    CHECK(expert_total(c, 0, 0) == 4);
    CHECK(expert_total(c, 0, 2) == 6);
    CHECK(expert_total(c, 1, 1) == 1);
    CHECK_FALSE(t.source->next(c));
  }
  SECTION("header with step and layer columns") {
    const std::string p = d.write("s.csv", "step,layer,e0,e1\n0,0,1,2\n0,1,3,4\n1,0,5,6\n1,1,7,8\n");
    auto t = moesim::open_trace_file(p, o);
    CHECK(t.iterations == 2);
    const auto its = drain(*t.source);
    REQUIRE(its.size() == 2);
    CHECK(expert_total(its[1], 1, 1) == 8);
    CHECK(expert_total(its[1], 0, 0) == 5);
  }
  SECTION("wrong field count, negative count, bad step report the line") {
    const std::string f = d.write("f.csv", "1,2,3\n4,5\n");
    CHECK_THAT(error_of([&] { (void)moesim::open_trace_file(f, o); }),
               Contains(f + ":2: expected 3 fields (3 expert counts), found 2"));
    const std::string n = d.write("n.csv", "step,e0,e1\n0,1,2\n0,3,-1\n");
    CHECK_THAT(error_of([&] { (void)moesim::open_trace_file(n, o); }),
               Contains(n + ":3: column 3 (expert 1): count -1 is out of range"));
    const std::string s = d.write("s.csv", "step,e0\n0,1\n2,1\n");
    CHECK_THAT(error_of([&] { (void)moesim::open_trace_file(s, o); }),
               Contains(s + ":3: step 2 follows step 0"));
    const std::string s1 = d.write("s1.csv", "step,e0\n1,1\n");
    CHECK_THAT(error_of([&] { (void)moesim::open_trace_file(s1, o); }),
               Contains(s1 + ":2: the first step is 1; steps start at 0"));
    const std::string l = d.write("l.csv", "step,e0\n0,1\n0,1\n1,1\n");
    CHECK_THAT(error_of([&] { (void)moesim::open_trace_file(l, o); }),
               Contains("the last step (1) has 1 layer rows, step 0 has 2"));
  }
}

TEST_CASE("long CSV: selection, layer mapping, ambiguity", "[trace-formats]") {
  TempDir d;
  std::string text = "model,kind,domain,layer,expert,count\n";
  for (const char* dom : {"c4", "book"}) {
    for (int layer : {0, 7, 15}) {
      for (int e = 0; e < 4; ++e) {
        text += fmt::format("m,expert_counts,{},{},{},{}\n", dom, layer, e,
                            10 * layer + e + (dom[0] == 'b' ? 1000 : 0));
      }
    }
  }
  const std::string p = d.write("long.csv", text);
  CHECK(moesim::detect_trace_format(p) == moesim::TraceFormat::long_csv);
  moesim::ImportOptions o;
  o.shape.gpus = 4;
  o.select = {{"domain", "book"}};
  auto t = moesim::open_trace_file(p, o);
  CHECK(t.source->shape().layers == 3);  // recorded layers 0, 7, 15 -> 0, 1, 2
  CHECK(t.source->shape().experts == 4);
  CHECK_THAT(t.source->describe(), Contains("recorded layers 0,7,15 as MoE layers 0..2"));
  IterationCounts c;
  REQUIRE(t.source->next(c));
  CHECK(expert_total(c, 1, 2) == 1072);
  CHECK(expert_total(c, 2, 3) == 1153);

  moesim::ImportOptions none = o;
  none.select.clear();
  CHECK_THAT(
      error_of([&] { (void)moesim::open_trace_file(p, none); }),
      Contains(
          "a second count for layer 0, expert 0 (the first is on line 2): the selection must leave one "
          "series, but the selected rows still differ in domain (one of: book, c4); pin them with --select"));
  moesim::ImportOptions typo = o;
  typo.select = {{"domain", "c5"}};
  CHECK_THAT(error_of([&] { (void)moesim::open_trace_file(p, typo); }),
             Contains("--select domain=c5: no row has domain 'c5'; its values are: book, c4"));
  moesim::ImportOptions col = o;
  col.select = {{"dataset", "c4"}};
  CHECK_THAT(error_of([&] { (void)moesim::open_trace_file(p, col); }),
             Contains("'dataset' is not a selector column; this file's are: model, kind, domain"));
  const std::string short_row = d.write("bad.csv", "model,layer,expert,count\nm,0,0,1\nm,0,1\n");
  CHECK_THAT(error_of([&] { (void)moesim::open_trace_file(short_row, o); }),
             Contains("--select domain=book: 'domain' is not a selector column; this file's are: model"));
  CHECK_THAT(error_of([&] { (void)moesim::open_trace_file(d.write("j.json", "[[1]]"), o); }),
             Contains("--select applies to long CSV files"));
  moesim::ImportOptions plain;
  plain.shape.gpus = 1;
  CHECK_THAT(error_of([&] { (void)moesim::open_trace_file(short_row, plain); }),
             Contains(short_row + ":3: expected 4 fields (model,layer,expert,count), found 3"));
}

TEST_CASE("real OLMoE counts import (olmoe, expert_counts, c4)", "[trace-formats]") {
  if (!fs::exists(kOlmoe)) {
    WARN("skipped: " << kOlmoe << " is not present");
    return;
  }
  // The file's own sums, per recorded layer.
  std::map<int, std::vector<std::int64_t>> want;
  {
    std::ifstream in(kOlmoe);
    std::string line;
    std::getline(in, line);
    while (std::getline(in, line)) {
      std::vector<std::string> f;
      std::stringstream ss(line);
      for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
      if (f.size() == 6 && f[0] == "olmoe" && f[1] == "expert_counts" && f[2] == "c4") {
        auto& v = want[std::stoi(f[3])];
        v.resize(64, -1);
        v[static_cast<std::size_t>(std::stoi(f[4]))] = std::stoll(f[5]);
      }
    }
  }
  REQUIRE(want.size() == 3);
  moesim::ImportOptions o;
  o.select = {{"model", "olmoe"}, {"kind", "expert_counts"}, {"domain", "c4"}};
  o.shape = TraceShape{0, 8, 0};
  auto t = moesim::open_trace_file(kOlmoe, o);
  CHECK(t.format == moesim::TraceFormat::long_csv);
  REQUIRE(t.source->shape().layers == 3);
  REQUIRE(t.source->shape().experts == 64);
  IterationCounts c;
  REQUIRE(t.source->next(c));
  int layer = 0;
  for (const auto& [recorded, counts] : want) {
    for (int e = 0; e < 64; ++e) CHECK(expert_total(c, layer, e) == counts[static_cast<std::size_t>(e)]);
    ++layer;
  }
  // Layer 0 sums to tokens x 8 (top-8), about 209k tokens.
  const std::int64_t total0 =
      std::accumulate(want.begin()->second.begin(), want.begin()->second.end(), std::int64_t{0});
  CHECK(total0 % 8 == 0);
  CHECK(total0 / 8 > 200000);

  // At a batch size: every row holds tokens * top_k, through convert to binary.
  TempDir d;
  ConvertRequest req = convert(kOlmoe, d.file("olmoe.bin"));
  req.import = o;
  req.import.shape = TraceShape{3, 8, 64};
  req.import.tokens_per_gpu = 4096;
  req.import.top_k = 8;
  req.iterations = 5;
  CHECK(moesim::convert_trace_file(req).iterations == 5);
  auto b = moesim::open_binary_trace(d.file("olmoe.bin"), TraceShape{3, 8, 64});
  for (const auto& it : drain(*b)) {
    for (int l = 0; l < 3; ++l) {
      for (int g = 0; g < 8; ++g) CHECK(row_sum(it, l, g) == 4096 * 8);
    }
  }
}

TEST_CASE("TensorRT-LLM expert statistics folder imports", "[trace-formats]") {
  TempDir d;
  const std::string dir = d.file("stats");
  fs::create_directories(dir);
  std::ofstream(dir + "/meta_info.json") << R"({"num_experts": 4, "num_experts_per_token": 2, "note": "x"})";
  // Iterations 5 and 6, layers 3 and 4 (first MoE layer of a model with dense layers first).
  write_safetensors(dir + "/rank0.safetensors", {{"5_3", "I64", {1, 2, 3, 4}},
                                                 {"5_4", "I64", {0, 0, 0, 10}},
                                                 {"6_3", "I64", {4, 3, 2, 1}},
                                                 {"6_4", "I64", {5, 5, 0, 0}}});
  write_safetensors(dir + "/rank1.safetensors", {{"6_4", "I32", {1, 1, 1, 1}},
                                                 {"5_3", "I32", {7, 0, 0, 0}},
                                                 {"6_3", "F32", {0, 0, 9, 0}},
                                                 {"5_4", "I32", {2, 2, 2, 2}}});
  CHECK(moesim::detect_trace_format(dir) == moesim::TraceFormat::trtllm);
  auto t = moesim::open_trace_file(dir, moesim::ImportOptions{});
  CHECK(t.iterations == 2);
  const TraceShape s = t.source->shape();
  CHECK(s.layers == 2);
  CHECK(s.gpus == 2);
  CHECK(s.experts == 4);
  const auto its = drain(*t.source);
  REQUIRE(its.size() == 2);
  CHECK(its[0].at(0, 0, 3) == 4);   // iteration 5, layer 3, rank 0
  CHECK(its[0].at(0, 1, 0) == 7);   // iteration 5, layer 3, rank 1
  CHECK(its[0].at(1, 0, 3) == 10);  // iteration 5, layer 4, rank 0
  CHECK(its[1].at(0, 1, 2) == 9);   // iteration 6, layer 3, rank 1 (F32)
  CHECK(its[1].at(1, 1, 1) == 1);

  // Through convert to CSV and back to binary: same counts.
  moesim::convert_trace_file(convert(dir, d.file("t.csv")));
  moesim::convert_trace_file(convert(d.file("t.csv"), d.file("t.bin")));
  auto b = moesim::open_binary_trace(d.file("t.bin"), s);
  const auto back = drain(*b);
  REQUIRE(back.size() == 2);
  CHECK(back[0].counts == its[0].counts);
  CHECK(back[1].counts == its[1].counts);

  // Another GPU count needs a batch size: the ranks are summed and re-spread.
  moesim::ImportOptions four;
  four.shape.gpus = 4;
  CHECK_THAT(
      error_of([&] { (void)moesim::open_trace_file(dir, four); }),
      Contains(
          "the trace has 2 MoE layers, 2 GPUs, 4 experts; the scenario expects any number of MoE layers, "
          "4 GPUs"));
  four.tokens_per_gpu = 64;
  four.top_k = 2;
  auto r = moesim::open_trace_file(dir, four);
  const auto re = drain(*r.source);
  REQUIRE(re.size() == 2);
  for (int l = 0; l < 2; ++l) {
    for (int g = 0; g < 4; ++g) CHECK(row_sum(re[0], l, g) == 128);
  }
  CHECK(expert_total(re[0], 1, 0) + expert_total(re[0], 1, 1) + expert_total(re[0], 1, 2) > 0);

  SECTION("a rank missing a key") {
    write_safetensors(
        dir + "/rank1.safetensors",
        {{"5_3", "I32", {7, 0, 0, 0}}, {"6_3", "I32", {0, 0, 9, 0}}, {"5_4", "I32", {2, 2, 2, 2}}});
    CHECK_THAT(error_of([&] { (void)moesim::open_trace_file(dir, moesim::ImportOptions{}); }),
               Contains("rank1.safetensors: no tensor '6_4'"));
  }
  SECTION("unsupported dtype") {
    write_safetensors(dir + "/rank1.safetensors", {{"5_3", "I64", {7, 0, 0, 0}}});
    std::string bytes = read_file(dir + "/rank1.safetensors");
    bytes.replace(bytes.find("I64"), 3, "F16");
    write_bytes(dir + "/rank1.safetensors", bytes);
    CHECK_THAT(
        error_of([&] { (void)moesim::open_trace_file(dir, moesim::ImportOptions{}); }),
        Contains("rank1.safetensors: byte offset 8 (header), tensor '5_3': dtype 'F16' is not supported"));
  }
  SECTION("num_experts disagrees with the tensors") {
    std::ofstream(dir + "/meta_info.json") << R"({"num_experts": 8})";
    CHECK_THAT(error_of([&] { (void)moesim::open_trace_file(dir, moesim::ImportOptions{}); }),
               Contains("holds 4 counts; the other tensors (or meta_info.json's num_experts) have 8"));
  }
  SECTION("truncated data") {
    const std::string f = dir + "/rank0.safetensors";
    fs::resize_file(f, fs::file_size(f) - 8);
    CHECK_THAT(error_of([&] { (void)moesim::open_trace_file(dir, moesim::ImportOptions{}); }),
               Contains("data_offsets"));
  }
  SECTION("header length beyond the file") {
    const std::string f = dir + "/rank0.safetensors";
    write_bytes(f, std::string("\xff\xff\x00\x00\x00\x00\x00\x00{}", 10));
    CHECK_THAT(error_of([&] { (void)moesim::open_trace_file(dir, moesim::ImportOptions{}); }),
               Contains("rank0.safetensors: byte offset 0: header length 65535 is out of range"));
  }
  SECTION("no meta_info.json") {
    fs::remove(dir + "/meta_info.json");
    CHECK_THAT(error_of([&] { (void)moesim::open_trace_file(dir, moesim::ImportOptions{}); }),
               Contains("needs a meta_info.json"));
  }
}
