// The binary trace reader's fast paths: the carry-less-multiply CRC against the byte-wise table,
// and iterations larger than the reader's 256 KiB pieces (counts split across pieces, errors
// found in a later piece) against what was written.
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "tests/file_fixture.hpp"
#include "traces/binary.hpp"
#include "traces/trace.hpp"
#include "tests/trace_fixture.hpp"

using Catch::Matchers::Contains;
using moesim::IterationCounts;
using moesim::TraceShape;
using moesim::TraceSource;
using moesim::testing::read_file;
using moesim::testing::TempDir;

namespace {

using moesim::testing::VectorTrace;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const moesim::InputError& e) {
    return e.what();
  }
  return "(no error)";
}

// Iterations of `shape` with counts that differ per cell and iteration; `big` adds one above
// int32 so that the file stores int64.
std::vector<IterationCounts> iterations(const TraceShape& shape, int n, bool big) {
  std::mt19937_64 rng(5);
  std::vector<IterationCounts> its(static_cast<std::size_t>(n));
  for (auto& it : its) {
    it.reset(shape);
    for (auto& v : it.counts) v = static_cast<std::int64_t>(rng() % 100000);
  }
  if (big) its.back().counts[7] = std::int64_t{3} << 33;
  return its;
}

}  // namespace

TEST_CASE("binary reader: the fast CRC equals the byte-wise one on every length and alignment",
          "[trace-formats]") {
  std::mt19937_64 rng(3);
  std::vector<unsigned char> buf(5000);
  for (auto& b : buf) b = static_cast<unsigned char>(rng());
  for (std::size_t off = 0; off < 16; ++off) {
    for (std::size_t n : {0, 1, 15, 16, 63, 64, 65, 79, 80, 127, 128, 129, 1000, 4096, 4984}) {
      const std::uint32_t prev = static_cast<std::uint32_t>(rng());
      REQUIRE(moesim::crc32(buf.data() + off, n, prev) == moesim::crc32_portable(buf.data() + off, n, prev));
    }
  }
  CHECK(moesim::crc32_portable("123456789", 9) == 0xCBF43926U);
}

TEST_CASE("binary reader: iterations larger than a read piece come back exactly", "[trace-formats]") {
  TempDir d;
  // 3 x 97 x 1031 cells: 1.2 MB an iteration as int32, 2.4 MB as int64 (its CRC makes every other
  // iteration start 4 bytes off an 8-byte boundary), so pieces end inside counts.
  const TraceShape shape{3, 97, 1031};
  for (bool big : {false, true}) {
    const auto its = iterations(shape, 3, big);
    VectorTrace src(its);
    const std::string bin = d.file(big ? "wide.bin" : "narrow.bin");
    moesim::write_binary_trace(src, 3, bin);
    REQUIRE(moesim::read_binary_trace_info(bin).element_bytes == (big ? 8 : 4));
    auto t = moesim::open_binary_trace(bin, shape);
    IterationCounts c;
    for (int pass = 0; pass < 2; ++pass) {
      for (const auto& want : its) {
        REQUIRE(t->next(c));
        REQUIRE(c.counts == want.counts);
      }
      CHECK_FALSE(t->next(c));
      t->rewind();
    }
  }
}

TEST_CASE("binary reader: errors past the first piece keep their offsets", "[trace-formats]") {
  TempDir d;
  const TraceShape shape{3, 97, 1031};
  const std::size_t cells = 3 * 97 * 1031;
  const std::size_t block = cells * 4 + 4;
  auto its = iterations(shape, 2, false);
  const std::size_t cell = cells - 5;  // in the iteration's last piece
  // The writer refuses negative counts: write a good file, then patch one in.
  VectorTrace src(its);
  const std::string bin = d.file("t.bin");
  moesim::write_binary_trace(src, 2, bin);
  std::string bytes = read_file(bin);
  const std::size_t at = 64 + block + cell * 4;
  const std::int32_t neg = -9;
  std::memcpy(bytes.data() + at, &neg, 4);

  SECTION("a flipped byte late in the iteration") {
    std::string bad = bytes;
    bad[64 + block + block - 10] = static_cast<char>(bad[64 + block + block - 10] ^ 1);
    const std::string p = d.file("flip.bin");
    std::ofstream(p, std::ios::binary).write(bad.data(), static_cast<std::streamsize>(bad.size()));
    auto t = moesim::open_binary_trace(p, shape);
    IterationCounts c;
    REQUIRE(t->next(c));
    CHECK_THAT(
        error_of([&] { (void)t->next(c); }),
        Contains(p + ": byte offset " + std::to_string(64 + block) + ": checksum mismatch in iteration 1"));
  }
  SECTION("a negative count late in the iteration, with a matching CRC") {
    const std::uint32_t crc = moesim::crc32(bytes.data() + 64 + block, block - 4);
    std::memcpy(bytes.data() + 64 + 2 * block - 4, &crc, 4);
    const std::string p = d.file("neg.bin");
    std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    auto t = moesim::open_binary_trace(p, shape);
    IterationCounts c;
    REQUIRE(t->next(c));
    const std::size_t layer = cell / (97 * 1031);
    const std::size_t src_gpu = cell / 1031 % 97;
    const std::size_t expert = cell % 1031;
    CHECK_THAT(error_of([&] { (void)t->next(c); }),
               Contains(p + ": byte offset " + std::to_string(at) + ": iteration 1, layer " +
                        std::to_string(layer) + ", src_gpu " + std::to_string(src_gpu) + ", expert " +
                        std::to_string(expert) + ": count -9 is negative"));
  }
  SECTION("truncated a few pieces into an iteration") {
    const std::string p = d.file("cut.bin");
    std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    auto t = moesim::open_binary_trace(p, shape);
    std::filesystem::resize_file(p, 64 + block + 700'000);
    IterationCounts c;
    REQUIRE(t->next(c));
    CHECK_THAT(error_of([&] { (void)t->next(c); }),
               Contains("short read at byte offset " + std::to_string(64 + block) + ": expected " +
                        std::to_string(block) + " bytes for iteration 1, found 700000"));
  }
}
