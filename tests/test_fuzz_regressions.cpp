// Inputs found by fuzzing (fuzz/, issue 16) that escaped as something other than the named input
// error, crashed, or asked for unbounded memory; each must now be an InputError naming the file,
// the position and what is allowed.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <string>

#include "error_fixture.hpp"
#include "file_fixture.hpp"
#include "app/scenario.hpp"
#include "app/sweep.hpp"
#include "traces/importers.hpp"
#include "traces/trace.hpp"

using moesim::testing::input_error;
using moesim::testing::TempDir;
using namespace moesim;

namespace {

// A safetensors file from a header written as text and `data` bytes.
std::string safetensors(const std::string& header, const std::string& data) {
  const std::uint64_t n = header.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

std::string i64s(std::initializer_list<std::int64_t> v) {
  std::string out;
  for (std::int64_t x : v) out.append(reinterpret_cast<const char*>(&x), 8);
  return out;
}

}  // namespace

TEST_CASE("load-matrix JSON: a number beyond a double is a named error, not a library exception",
          "[fuzz][importers]") {
  TempDir d;
  const std::string p = d.write("m.json", "[[1, 2], [3, 1e400]]");
  const std::string e = input_error([&] { (void)open_load_matrix_json(p); });
  CHECK_THAT(e, Catch::Contains(p) && Catch::Contains("byte offset 13") && Catch::Contains("1e400") &&
                    Catch::Contains("numbers must fit a double"));
}

TEST_CASE("load-matrix JSON: deep nesting is refused before parsing", "[fuzz][importers]") {
  TempDir d;
  // 100,000 levels exhausted the stack when the value was printed into the message.
  const std::string p = d.write("deep.json", "[[" + std::string(100000, '[') + std::string(100002, ']'));
  const std::string e = input_error([&] { (void)open_load_matrix_json(p); });
  CHECK_THAT(e, Catch::Contains("byte offset 64") && Catch::Contains("more than 64 levels deep"));
  // Within the ceiling, a nested value where a count belongs is named by its kind, not printed.
  const std::string q = d.write("nested.json", "[[1, [[[[2]]]]]]");
  CHECK_THAT(input_error([&] { (void)open_load_matrix_json(q); }),
             Catch::Contains("at /0/1") && Catch::Contains("found an array of 1 values"));
}

TEST_CASE("load-matrix JSON: a short file cannot reserve steps x layers x experts up front", "[fuzz][importers]") {
  TempDir d;
  // Step 0 claims 1 layer of 100,000 experts; 20,000 more steps follow, each too short: the old
  // reader reserved 2e9 doubles (16 GB) before it looked at step 1.
  std::string text = "[[[";
  for (int i = 0; i < 100000; ++i) text += i == 0 ? "1" : ",1";
  text += "]]";
  for (int i = 0; i < 20000; ++i) text += ",[]";
  text += "]";
  const std::string p = d.write("wide.json", text);
  CHECK_THAT(input_error([&] { (void)open_load_matrix_json(p); }),
             Catch::Contains("at /1") && Catch::Contains("expected an array of 1 layers (as step 0), found 0 values"));
}

TEST_CASE("long CSV: layers x experts above the ceiling is refused before allocation", "[fuzz][importers]") {
  TempDir d;
  std::string text = "layer,expert,count\n";
  for (int l = 0; l < 8; ++l) text += std::to_string(l) + ",16777215,1\n";
  const std::string p = d.write("long.csv", text);
  CHECK_THAT(input_error([&] { (void)open_long_csv(p, {}); }),
             Catch::Contains(p) && Catch::Contains("8 layers x 16777216 experts") && Catch::Contains("at most 2^25"));
}

TEST_CASE("native CSV trace: a layer index with leading zeros cannot make a 9 GB shape", "[fuzz][traces]") {
  // fuzz_csv_trace's finding: layer 1,134,134,288 written as 00...01134134288 gave a shape of
  // 1.1 billion cells, which the reader allocated (9 GB) before any check.
  TempDir d;
  const std::string p = d.write("t.csv", "# a comment\niteration,layer,src_gpu,expert,tokens\n5," +
                                             std::string(40, '0') + "1134134288,0,0,1\n");
  const TraceShape s = scan_csv_trace_shape(p);
  CHECK(s.layers == 1134134289);
  CHECK_THAT(input_error([&] { (void)open_csv_trace(p, s); }),
             Catch::Contains(p) && Catch::Contains("1134134289 layers x 1 GPUs x 1 experts") &&
                 Catch::Contains("2^27"));
}

TEST_CASE("CSV messages quote at most 60 characters of the input", "[fuzz][importers]") {
  TempDir d;
  const std::string p = d.write("m.csv", "1,2\n3," + std::string(100000, 'x') + "\n");
  const std::string e = input_error([&] { (void)open_load_matrix_csv(p); });
  CHECK_THAT(e, Catch::Contains("is not a number") && Catch::Contains("(100000 characters)"));
  CHECK(e.size() < 300);
}

TEST_CASE("native CSV: indices whose product L x G x E wraps are refused", "[fuzz][importers]") {
  TempDir d;
  const std::string p =
      d.write("t.csv", "iteration,layer,src_gpu,expert,tokens\n0,4194303,2097151,2097151,1\n");
  CHECK_THAT(input_error([&] { (void)open_trace_file(p, ImportOptions{}); }),
             Catch::Contains(p) && Catch::Contains("4194304 layers x 2097152 GPUs x 2097152 experts") &&
                 Catch::Contains("2^27"));
  // The same through a given shape (`trace convert --shape`).
  ImportOptions o;
  o.shape = TraceShape{1 << 20, 1 << 20, 1 << 20};
  const std::string q = d.write("u.csv", "iteration,layer,src_gpu,expert,tokens\n0,0,0,0,1\n");
  CHECK_THAT(input_error([&] { (void)open_trace_file(q, o); }), Catch::Contains("1048576 layers x 1048576 GPUs"));
}

TEST_CASE("TensorRT-LLM: tensors sharing bytes are refused", "[fuzz][importers]") {
  TempDir d;
  d.write("t/meta_info.json", R"({"num_experts": 2})");
  // Every tensor at offset 0: a small file standing for any number of counts.
  d.write("t/rank0.safetensors",
          safetensors(R"({"0_0":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},)"
                      R"("0_1":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}})",
                      i64s({1, 2})));
  CHECK_THAT(input_error([&] { (void)open_trtllm_stats(d.file("t")); }),
             Catch::Contains("rank0.safetensors: byte offset 8") && Catch::Contains("'0_0' and '0_1' overlap"));
}

TEST_CASE("TensorRT-LLM: iterations x layers is checked before the index is allocated", "[fuzz][importers]") {
  TempDir d;
  d.write("t/meta_info.json", R"({"num_experts": 1})");
  // Keys i_i: n tensors, n iterations, n layers; the index would have n^2 entries.
  std::string header = "{";
  std::string data;
  const int n = 3000;
  for (int i = 0; i < n; ++i) {
    // Appended piece by piece: GCC 12's -Wrestrict misreads a chain of temporaries here.
    if (i > 0) header += ',';
    header += '"';
    header += std::to_string(i) + "_" + std::to_string(i);
    header += R"(":{"dtype":"I64","shape":[1],"data_offsets":[)";
    header += std::to_string(8 * i) + "," + std::to_string(8 * i + 8) + "]}";
    data += i64s({1});
  }
  header += "}";
  d.write("t/rank0.safetensors", safetensors(header, data));
  CHECK_THAT(input_error([&] { (void)open_trtllm_stats(d.file("t")); }),
             Catch::Contains("no tensor '0_1'") && Catch::Contains("... 3000 layers"));
}

TEST_CASE("TensorRT-LLM: JSON library errors in meta_info.json and headers are named", "[fuzz][importers]") {
  TempDir d;
  d.write("t/meta_info.json", R"({"num_experts": 1e999})");
  d.write("t/rank0.safetensors", safetensors(R"({"0_0":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", i64s({1})));
  CHECK_THAT(input_error([&] { (void)open_trtllm_stats(d.file("t")); }),
             Catch::Contains("meta_info.json: byte offset 16") && Catch::Contains("number overflow"));
  d.write("t/meta_info.json", R"({"num_experts": 1})");
  d.write("t/rank0.safetensors", safetensors(R"({"0_0":{"dtype":"I64","shape":[1e999],"data_offsets":[0,8]}})", i64s({1})));
  CHECK_THAT(input_error([&] { (void)open_trtllm_stats(d.file("t")); }),
             Catch::Contains("rank0.safetensors: byte offset 39") && Catch::Contains("number overflow"));
}

namespace {

const std::string kQuickstart = std::string(MOESIM_SOURCE_DIR) + "/scenarios/quickstart.yaml";

// The quickstart scenario with its `seed: 42` line replaced.
std::string quickstart_seed(const std::string& seed) {
  std::string t = moesim::testing::read_file(kQuickstart);
  const auto at = t.find("seed: 42\n");
  return t.replace(at, 9, "seed: " + seed + "\n");
}

}  // namespace

TEST_CASE("scenario: invalid UTF-8 is a named error, not a JSON exception when summary.json is written",
          "[fuzz][scenario]") {
  // The name was accepted and the run died writing summary.json (nlohmann type_error 316).
  const std::string text = "name: \"caf\xE9\"\nseed: 1\n";
  CHECK_THAT(input_error([&] { (void)load_scenario_text(text, "s.yaml", {}, std::nullopt); }),
             Catch::Contains("s.yaml:1:11: the file is not valid UTF-8 (byte offset 10)"));
  // Through --set the text check does not apply; the string's own check does.
  CHECK_THAT(input_error([&] { (void)load_scenario_text(moesim::testing::read_file(kQuickstart), "s.yaml",
                                                        {"description=\xC0\xAF"}, std::nullopt); }),
             Catch::Contains("description") && Catch::Contains("not valid UTF-8 (byte 0 of it)"));
}

TEST_CASE("scenario: a quoted scalar in a message is capped", "[fuzz][scenario]") {
  const std::string e = input_error(
      [&] { (void)load_scenario_text(quickstart_seed(std::string(5000, '7') + "x"), "s.yaml", {}, std::nullopt); });
  CHECK_THAT(e, Catch::Contains("(5001 characters)"));
  CHECK(e.size() < 400);
}

TEST_CASE("scenario: a folder or an unreadable path says why", "[fuzz][scenario]") {
  TempDir d;
  CHECK_THAT(input_error([&] { (void)load_scenario(d.path().string(), {}, std::nullopt); }),
             Catch::Contains("cannot open file: it is a directory"));
  CHECK_THAT(input_error([&] { (void)load_scenario(d.file("none.yaml"), {}, std::nullopt); }),
             Catch::Contains("cannot open file: No such file or directory"));
}

TEST_CASE("study: repeated grid values and oversized grids are refused", "[fuzz][sweep]") {
  TempDir d;
  const std::string head = "base: " + kQuickstart + "\npolicies: [static]\n";
  const std::string p = d.write("rep.yaml", head + "grid:\n  trace.skew: [0.5, 0.5]\n");
  CHECK_THAT(input_error([&] { (void)load_study(p); }),
             Catch::Contains("rep.yaml:4:") && Catch::Contains("grid.trace.skew") &&
                 Catch::Contains("value '0.5' is listed twice (first at line 4)"));
  // 40^3 = 64,000 points: refused before any point's scenario is loaded.
  std::string axis = "[";
  for (int i = 0; i < 40; ++i) axis += (i ? ", " : "") + std::to_string(i + 1);
  axis += "]";
  const std::string q = d.write("big.yaml", head + "grid:\n  cluster.nodes: " + axis + "\n  run.max_iterations: " +
                                                 axis + "\n  trace.tokens_per_gpu: " + axis + "\n");
  CHECK_THAT(input_error([&] { (void)load_study(q); }),
             Catch::Contains("big.yaml") && Catch::Contains("key 'grid'") &&
                 Catch::Contains("more than 10000 points (40 cluster.nodes x 40 run.max_iterations x 40") &&
                 Catch::Contains("at most 10000 points and 100000 runs"));
}

TEST_CASE("study and scenario: a path the OS refuses (name too long) is a named error, not a library exception",
          "[fuzz][sweep]") {
  // fuzz_study: a 300-character base name made std::filesystem::is_regular_file throw
  // filesystem_error (ENAMETOOLONG), which escaped as an internal error.
  const std::string long_name(300, 'A');
  const std::string study = "name: s\nbase: ../" + long_name + ".yaml\ngrid:\n  seed: [1]\n";
  const std::string e = input_error([&] { (void)load_study_text(study, "/tmp/study.yaml"); });
  CHECK_THAT(e, Catch::Contains("key 'base'") && Catch::Contains("does not exist") &&
                    Catch::Contains("File name too long"));
  const std::string scenario = "name: t\ncluster: {preset: swiftmoe-cloud}\nmodel: {preset: gpt-small-moe}\n"
                               "trace: {kind: csv, path: " + long_name + ".csv}\n";
  const std::string e2 = input_error([&] { (void)load_scenario_text(scenario, "/tmp/t.yaml", {}, std::nullopt); });
  CHECK_THAT(e2, Catch::Contains("key 'trace.path'") && Catch::Contains("File name too long"));
}
