#include "traces/binary.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <system_error>
#include <vector>

#include "core/error.hpp"

namespace moesim {

// The format is little-endian and the reader converts with plain copies; a big-endian port would
// need byte swaps in load/store below and in the count conversion.
static_assert(std::endian::native == std::endian::little,
              "moesim's binary traces assume a little-endian host");

namespace {

std::uint32_t load_u32(const unsigned char* p) {
  std::uint32_t v = 0;
  std::memcpy(&v, p, 4);
  return v;
}
std::uint64_t load_u64(const unsigned char* p) {
  std::uint64_t v = 0;
  std::memcpy(&v, p, 8);
  return v;
}
void store_u32(unsigned char* p, std::uint32_t v) { std::memcpy(p, &v, 4); }
void store_u64(unsigned char* p, std::uint64_t v) { std::memcpy(p, &v, 8); }

std::size_t cell_count(const TraceShape& s) {
  return static_cast<std::size_t>(s.layers) * static_cast<std::size_t>(s.gpus) *
         static_cast<std::size_t>(s.experts);
}

// Header layout (docs/trace-format.md): offsets of the fields.
constexpr std::size_t kOffVersion = 8;
constexpr std::size_t kOffHeaderBytes = 12;
constexpr std::size_t kOffLayers = 16;
constexpr std::size_t kOffGpus = 20;
constexpr std::size_t kOffExperts = 24;
constexpr std::size_t kOffElement = 28;
constexpr std::size_t kOffIterations = 32;
constexpr std::size_t kOffPayloadBytes = 40;
constexpr std::size_t kOffPayloadCrc = 48;
constexpr std::size_t kOffHeaderCrc = 60;

// One iteration must fit in memory; beyond this the shape is surely corrupt or absurd.
constexpr std::uint64_t kMaxIterationBytes = std::uint64_t{1} << 32;
// Ceilings on int64 counts, so that no sum over cells, layers or iterations can overflow: 2^40
// assignments in one (layer, source, expert) cell and 2^44 in one iteration, thousands of times
// a DeepSeek-V3 step (about 2^32 assignments), with room for 2^19 iterations of the largest.
constexpr std::int64_t kMaxCellCount = std::int64_t{1} << 40;
constexpr double kMaxIterationCount = static_cast<double>(std::int64_t{1} << 44);
constexpr std::size_t kBlockBytes = std::size_t{4} << 20;

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

std::string printable(const unsigned char* p, std::size_t n) {
  std::string s;
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned char c = p[i];
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      s += static_cast<char>(c);
    } else {
      s += fmt::format("\\x{:02X}", c);
    }
  }
  return s;
}

FilePtr open_for_reading(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    throw InputError(fmt::format("{}: cannot open the trace: it is a directory, not a file", path));
  }
  FilePtr f(std::fopen(path.c_str(), "rb"));
  if (!f) {
    const bool exists = std::filesystem::exists(path, ec);
    throw InputError(fmt::format("{}: cannot open the trace: {}", path,
                                 exists ? "the file is not readable (check permissions)" : "no such file"));
  }
  // We read in large blocks of our own; stdio's buffer would only add a copy.
  std::setvbuf(f.get(), nullptr, _IONBF, 0);
  return f;
}

BinaryTraceInfo parse_header(const std::string& path, std::FILE* f) {
  std::array<unsigned char, kBinaryTraceHeaderBytes> h{};
  const std::size_t got = std::fread(h.data(), 1, h.size(), f);
  const auto fail = [&](std::size_t offset, const std::string& what) {
    throw InputError(fmt::format("{}: byte offset {}: {}", path, offset, what));
  };
  if (got < 8 || std::memcmp(h.data(), kBinaryTraceMagic, 8) != 0) {
    fail(0, fmt::format("expected the magic 'MOESIMTR' of a moesim binary trace, found '{}'{}",
                        printable(h.data(), std::min<std::size_t>(got, 8)),
                        got < 8 ? fmt::format(" (the file has only {} bytes)", got) : std::string()));
  }
  if (got < h.size()) {
    throw InputError(
        fmt::format("{}: short read at byte offset 0: expected {} bytes for the header, the file has {}",
                    path, h.size(), got));
  }
  const std::uint32_t version = load_u32(h.data() + kOffVersion);
  if (version != kBinaryTraceVersion) {
    fail(kOffVersion, fmt::format("format version {} is not supported; this build reads version {}", version,
                                  kBinaryTraceVersion));
  }
  const std::uint32_t stored_hcrc = load_u32(h.data() + kOffHeaderCrc);
  const std::uint32_t hcrc = crc32(h.data(), kOffHeaderCrc);
  if (stored_hcrc != hcrc) {
    fail(kOffHeaderCrc, fmt::format("header checksum mismatch: stored 0x{:08X}, computed 0x{:08X} over bytes "
                                    "0..59; the header is corrupt",
                                    stored_hcrc, hcrc));
  }
  const std::uint32_t header_bytes = load_u32(h.data() + kOffHeaderBytes);
  if (header_bytes != kBinaryTraceHeaderBytes) {
    fail(kOffHeaderBytes, fmt::format("header size {} is not allowed; version 1 headers are {} bytes",
                                      header_bytes, kBinaryTraceHeaderBytes));
  }
  BinaryTraceInfo info;
  const auto dim = [&](std::size_t off, const char* noun) {
    const std::uint32_t v = load_u32(h.data() + off);
    if (v < 1 || v > (1U << 24)) {
      fail(off, fmt::format("{} {} is out of range; allowed 1..{}", noun, v, 1U << 24));
    }
    return static_cast<int>(v);
  };
  info.shape.layers = dim(kOffLayers, "the number of MoE layers");
  info.shape.gpus = dim(kOffGpus, "the number of GPUs");
  info.shape.experts = dim(kOffExperts, "the number of experts");
  const std::uint32_t elem = load_u32(h.data() + kOffElement);
  if (elem != 4 && elem != 8) {
    fail(kOffElement, fmt::format("element size {} is not allowed; 4 (int32) or 8 (int64)", elem));
  }
  info.element_bytes = static_cast<int>(elem);
  const std::uint64_t cells = static_cast<std::uint64_t>(info.shape.layers) *
                              static_cast<std::uint64_t>(info.shape.gpus) *
                              static_cast<std::uint64_t>(info.shape.experts);
  // Each dimension is < 2^24, so cells * 8 cannot overflow before this comparison.
  if (cells > kMaxIterationBytes / elem) {
    fail(kOffLayers, fmt::format("one iteration of {} would hold {} counts, more than this reader's limit of "
                                 "{} bytes per iteration",
                                 describe_shape(info.shape), cells, kMaxIterationBytes));
  }
  info.iteration_bytes = cells * elem + 4;
  const std::uint64_t iterations = load_u64(h.data() + kOffIterations);
  if (iterations < 1 || iterations > std::numeric_limits<std::uint64_t>::max() / 2 / info.iteration_bytes) {
    fail(kOffIterations,
         fmt::format("iteration count {} is out of range; a trace holds at least one", iterations));
  }
  info.iterations = static_cast<std::int64_t>(iterations);
  const std::uint64_t payload = load_u64(h.data() + kOffPayloadBytes);
  if (payload != iterations * info.iteration_bytes) {
    fail(kOffPayloadBytes,
         fmt::format("payload size {} does not match {} iterations of {} bytes ({})", payload, iterations,
                     info.iteration_bytes, iterations * info.iteration_bytes));
  }
  info.payload_crc = load_u32(h.data() + kOffPayloadCrc);

  // Truncation and trailing garbage are visible from the size alone: report them before any
  // simulation starts rather than at the iteration where the reader would hit them.
  std::error_code ec;
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  if (!ec) {
    const std::uint64_t want = kBinaryTraceHeaderBytes + payload;
    if (size < want) {
      const std::uint64_t i = (size - kBinaryTraceHeaderBytes) / info.iteration_bytes;
      const std::uint64_t at = kBinaryTraceHeaderBytes + i * info.iteration_bytes;
      throw InputError(
          fmt::format("{}: short read at byte offset {}: expected {} bytes for iteration {}, the file "
                      "has {} (it is truncated: the header announces {} iterations, {} bytes)",
                      path, at, info.iteration_bytes, i, size - at, iterations, want));
    }
    if (size > want) {
      fail(want, fmt::format("{} unexpected bytes after the last iteration; the header announces {} "
                             "iterations, so the file should end here",
                             size - want, iterations));
    }
  }
  return info;
}

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

class BinaryTrace final : public TraceSource {
 public:
  BinaryTrace(std::string path, FilePtr f, const BinaryTraceInfo& info)
      : path_(std::move(path)), f_(std::move(f)), info_(info) {
    buf_.resize(kReadBytes);
    data_bytes_ = static_cast<std::size_t>(info_.iteration_bytes) - 4;
    reset();
  }

  [[nodiscard]] TraceShape shape() const override { return info_.shape; }

  // The counts are read in pieces of at most kReadBytes, and each piece is checksummed and
  // converted while it is still in the cache: one pass over the data after the kernel's copy.
  // The checks run when the whole iteration is in, in the order they always had: checksum,
  // then negative and too large counts, so a corrupt file gets the same message.
  bool next(IterationCounts& out) override {
    if (index_ == info_.iterations) return false;
    const std::uint64_t offset =
        kBinaryTraceHeaderBytes + static_cast<std::uint64_t>(index_) * (data_bytes_ + 4);
    if (out.counts.size() != cell_count(info_.shape) || out.shape.layers != info_.shape.layers ||
        out.shape.gpus != info_.shape.gpus || out.shape.experts != info_.shape.experts) {
      out.reset(info_.shape);
    }
    const auto elem = static_cast<std::size_t>(info_.element_bytes);
    std::int64_t* dst = out.counts.data();
    std::uint32_t computed = 0;
    Extremes ext;
    std::size_t done = 0;  // bytes of this iteration's counts already converted
    while (done < data_bytes_) {
      if (len_ - pos_ < elem) refill(elem, offset, done);
      std::size_t take = std::min(data_bytes_ - done, len_ - pos_);
      take -= take % elem;
      const unsigned char* p = buf_.data() + pos_;
      computed = crc32(p, take, computed);
      if (elem == 4) {
        widen_int32(p, take / 4, dst + done / 4, ext);
      } else {
        copy_int64(p, take / 8, dst + done / 8, ext);
      }
      pos_ += take;
      done += take;
    }
    if (len_ - pos_ < 4) refill(4, offset, done);
    const std::uint32_t stored = load_u32(buf_.data() + pos_);
    pos_ += 4;

    if (stored != computed) {
      throw InputError(
          fmt::format("{}: byte offset {}: checksum mismatch in iteration {}: stored 0x{:08X}, "
                      "computed 0x{:08X}; the file is corrupt",
                      path_, offset, index_, stored, computed));
    }
    const std::uint32_t le = stored;
    running_crc_ = crc32(&le, 4, running_crc_);
    if (ext.min < 0) report_negative(out, offset);
    if (ext.max > kMaxCellCount) report_too_large(out, offset);
    if (ext.total > kMaxIterationCount)
      throw InputError(
          fmt::format("{}: byte offset {}: iteration {} routes {:.4g} assignments in all, more "
                      "than the {:.4g} (2^44) one iteration may hold",
                      path_, offset, index_, ext.total, kMaxIterationCount));
    ++index_;
    // Checked with the last iteration, not on the call after it: consumers that read exactly the
    // announced number of iterations (the writers) never make that call.
    if (index_ == info_.iterations && running_crc_ != info_.payload_crc) {
      throw InputError(fmt::format(
          "{}: byte offset {}: payload checksum mismatch: the header stores 0x{:08X}, the iterations' "
          "checksums give 0x{:08X}; iterations were reordered or replaced, or the header was edited",
          path_, kOffPayloadCrc, info_.payload_crc, running_crc_));
    }
    return true;
  }

  void rewind() override {
    if (std::fseek(f_.get(), static_cast<long>(kBinaryTraceHeaderBytes), SEEK_SET) != 0) {
      throw InputError(fmt::format("{}: cannot seek back to the first iteration", path_));
    }
    reset();
  }

  [[nodiscard]] std::string describe() const override { return fmt::format("binary({})", path_); }

 private:
  // Large enough that a read call costs little next to copying its bytes, small enough that the
  // piece is still in the L2 cache when it is checksummed and converted.
  static constexpr std::size_t kReadBytes = std::size_t{256} << 10;

  // Of the counts seen so far: the least, and for int64 the largest and the sum (int32 counts
  // cannot reach the ceilings). Only compared with limits, so the sum's rounding does not matter.
  struct Extremes {
    std::int64_t min = 0;
    std::int64_t max = 0;
    double total = 0.0;
  };

  // memcpy per element: unaligned-safe, and compilers turn the loop into vector sign-extends.
  static void widen_int32(const unsigned char* p, std::size_t n, std::int64_t* dst, Extremes& ext) {
    std::int32_t lo = 0;
    for (std::size_t i = 0; i < n; ++i) {
      std::int32_t v = 0;
      std::memcpy(&v, p + 4 * i, 4);
      dst[i] = v;
      lo = std::min(lo, v);
    }
    ext.min = std::min<std::int64_t>(ext.min, lo);
  }

  static void copy_int64(const unsigned char* p, std::size_t n, std::int64_t* dst, Extremes& ext) {
    std::memcpy(dst, p, n * 8);
    std::int64_t lo = 0;
    std::int64_t hi = 0;
    double total = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      lo = std::min(lo, dst[i]);
      hi = std::max(hi, dst[i]);
      total += static_cast<double>(dst[i]);
    }
    ext.min = std::min(ext.min, lo);
    ext.max = std::max(ext.max, hi);
    ext.total += total;
  }

  void reset() {
    std::clearerr(f_.get());
    pos_ = len_ = 0;
    index_ = 0;
    running_crc_ = 0;
  }

  // Moves the unread tail to the front and fills the buffer, which must then hold `need` bytes.
  // The iteration being read starts at file offset `offset`, and `done` of its bytes are consumed.
  void refill(std::size_t need, std::uint64_t offset, std::size_t done) {
    const std::size_t keep = len_ - pos_;
    if (keep > 0 && pos_ > 0) std::memmove(buf_.data(), buf_.data() + pos_, keep);
    pos_ = 0;
    len_ = keep;
    while (len_ < buf_.size()) {
      const std::size_t got = std::fread(buf_.data() + len_, 1, buf_.size() - len_, f_.get());
      len_ += got;
      if (got == 0) break;
    }
    if (std::ferror(f_.get()) != 0) {
      throw InputError(fmt::format("{}: read error at byte offset {} (iteration {})", path_,
                                   offset + done + len_, index_));
    }
    if (len_ < need) {
      throw InputError(
          fmt::format("{}: short read at byte offset {}: expected {} bytes for iteration {}, found {} "
                      "(the file was truncated)",
                      path_, offset, data_bytes_ + 4, index_, done + len_));
    }
  }

  [[noreturn]] void report_too_large(const IterationCounts& c, std::uint64_t offset) const {
    const auto it =
        std::find_if(c.counts.begin(), c.counts.end(), [](std::int64_t v) { return v > kMaxCellCount; });
    const auto cell = static_cast<std::size_t>(it - c.counts.begin());
    const auto e = static_cast<std::size_t>(info_.shape.experts);
    const auto g = static_cast<std::size_t>(info_.shape.gpus);
    throw InputError(fmt::format(
        "{}: byte offset {}: iteration {}, layer {}, src_gpu {}, expert {}: count {} is "
        "above the {} (2^40) one cell may hold",
        path_, offset + cell * 8, index_, cell / (g * e), cell / e % g, cell % e, *it, kMaxCellCount));
  }

  [[noreturn]] void report_negative(const IterationCounts& c, std::uint64_t offset) const {
    const auto it = std::find_if(c.counts.begin(), c.counts.end(), [](std::int64_t v) { return v < 0; });
    const auto cell = static_cast<std::size_t>(it - c.counts.begin());
    const auto e = static_cast<std::size_t>(info_.shape.experts);
    const auto g = static_cast<std::size_t>(info_.shape.gpus);
    throw InputError(
        fmt::format("{}: byte offset {}: iteration {}, layer {}, src_gpu {}, expert {}: count {} is "
                    "negative; counts must be >= 0",
                    path_, offset + cell * static_cast<std::size_t>(info_.element_bytes), index_,
                    cell / (g * e), cell / e % g, cell % e, *it));
  }

  std::string path_;
  FilePtr f_;
  BinaryTraceInfo info_;
  std::vector<unsigned char> buf_;
  std::size_t data_bytes_ = 0;  // one iteration's counts, without its CRC
  std::size_t pos_ = 0;         // next unread byte in buf_
  std::size_t len_ = 0;         // valid bytes in buf_
  std::int64_t index_ = 0;
  std::uint32_t running_crc_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

class BinaryWriter {
 public:
  explicit BinaryWriter(std::string path) : path_(std::move(path)) {}
  BinaryWriter(const BinaryWriter&) = delete;
  BinaryWriter& operator=(const BinaryWriter&) = delete;
  ~BinaryWriter() {
    // Still holding a temp file means the write failed: leave nothing behind.
    f_.reset();
    std::error_code ignore;
    if (!tmp_.empty()) std::filesystem::remove(tmp_, ignore);
    if (!old_tmp_.empty()) std::filesystem::remove(old_tmp_, ignore);
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw InputError(fmt::format("{}: {}", path_, what));
  }

  void write(TraceSource& src, std::int64_t iterations) {
    tmp_ = path_ + ".tmp";
    f_ = create(tmp_);
    put_placeholder_header();
    IterationCounts it;
    for (std::int64_t i = 0; i < iterations; ++i) {
      if (!src.next(it)) {
        fail(fmt::format("the trace {} ended after {} iterations; {} were requested", src.describe(), i,
                         iterations));
      }
      if (i == 0) {
        shape_ = it.shape;
        if (shape_.layers < 1 || shape_.gpus < 1 || shape_.experts < 1 ||
            it.counts.size() != cell_count(shape_)) {
          fail(fmt::format("the trace {} has an empty shape ({})", src.describe(), describe_shape(shape_)));
        }
      } else if (it.shape.layers != shape_.layers || it.shape.gpus != shape_.gpus ||
                 it.shape.experts != shape_.experts || it.counts.size() != cell_count(shape_)) {
        fail(fmt::format("iteration {} of {} has shape {}, iteration 0 had {}", i, src.describe(),
                         describe_shape(it.shape), describe_shape(shape_)));
      }
      std::int64_t mx = 0;
      for (std::size_t c = 0; c < it.counts.size(); ++c) {
        const std::int64_t v = it.counts[c];
        if (v < 0) {
          const auto e = static_cast<std::size_t>(shape_.experts);
          const auto g = static_cast<std::size_t>(shape_.gpus);
          fail(fmt::format(
              "iteration {}, layer {}, src_gpu {}, expert {} of {}: count {} is negative; counts must "
              "be >= 0",
              i, c / (g * e), c / e % g, c % e, src.describe(), v));
        }
        mx = std::max(mx, v);
      }
      if (element_bytes_ == 4 && mx > std::numeric_limits<std::int32_t>::max()) widen(i);
      append_iteration(it);
    }
    flush();
    finish(iterations);
  }

 private:
  FilePtr create(const std::string& p) const {
    FilePtr f(std::fopen(p.c_str(), "wb"));
    if (!f) fail(fmt::format("cannot create '{}' (check the directory and permissions)", p));
    std::setvbuf(f.get(), nullptr, _IONBF, 0);
    return f;
  }

  void put_placeholder_header() {
    const std::array<unsigned char, kBinaryTraceHeaderBytes> zero{};
    out_.assign(zero.begin(), zero.end());
  }

  void append_iteration(const IterationCounts& it) {
    const std::size_t n = it.counts.size();
    const std::size_t start = out_.size();
    out_.resize(start + n * static_cast<std::size_t>(element_bytes_) + 4);
    unsigned char* p = out_.data() + start;
    if (element_bytes_ == 4) {
      for (std::size_t i = 0; i < n; ++i) {
        const auto v = static_cast<std::int32_t>(it.counts[i]);
        std::memcpy(p + 4 * i, &v, 4);
      }
    } else {
      std::memcpy(p, it.counts.data(), n * 8);
    }
    end_iteration(p, n * static_cast<std::size_t>(element_bytes_));
  }

  // Appends the CRC of the `bytes` counts at p and folds it into the payload checksum.
  void end_iteration(unsigned char* p, std::size_t bytes) {
    const std::uint32_t c = crc32(p, bytes);
    store_u32(p + bytes, c);
    payload_crc_ = crc32(p + bytes, 4, payload_crc_);
    if (out_.size() >= kBlockBytes) flush();
  }

  void flush() {
    if (!out_.empty() && std::fwrite(out_.data(), 1, out_.size(), f_.get()) != out_.size()) {
      fail(fmt::format("writing '{}' failed (disk full?)", tmp_));
    }
    out_.clear();
  }

  // A count above int32 turned up after `done` iterations were written as int32: rewrite those
  // as int64 into a second temp file and carry on there (one extra pass, only in that case).
  void widen(std::int64_t done) {
    flush();
    if (std::fflush(f_.get()) != 0) fail(fmt::format("writing '{}' failed (disk full?)", tmp_));
    old_tmp_ = tmp_;
    const std::string old_tmp = tmp_;
    FilePtr in(std::fopen(old_tmp.c_str(), "rb"));
    if (!in || std::fseek(in.get(), static_cast<long>(kBinaryTraceHeaderBytes), SEEK_SET) != 0) {
      fail(fmt::format("cannot reread '{}'", old_tmp));
    }
    tmp_ = path_ + ".tmp64";
    f_ = create(tmp_);
    element_bytes_ = 8;
    payload_crc_ = 0;
    put_placeholder_header();
    const std::size_t n = cell_count(shape_);
    std::vector<unsigned char> raw(n * 4 + 4);
    for (std::int64_t i = 0; i < done; ++i) {
      if (std::fread(raw.data(), 1, raw.size(), in.get()) != raw.size()) {
        fail(fmt::format("cannot reread '{}'", old_tmp));
      }
      const std::size_t start = out_.size();
      out_.resize(start + n * 8 + 4);
      unsigned char* p = out_.data() + start;
      for (std::size_t c = 0; c < n; ++c) {
        std::int32_t v = 0;
        std::memcpy(&v, raw.data() + 4 * c, 4);
        const std::int64_t w = v;
        std::memcpy(p + 8 * c, &w, 8);
      }
      end_iteration(p, n * 8);
    }
    in.reset();
    std::error_code ignore;
    std::filesystem::remove(old_tmp, ignore);
    old_tmp_.clear();
  }

  void finish(std::int64_t iterations) {
    std::array<unsigned char, kBinaryTraceHeaderBytes> h{};
    std::memcpy(h.data(), kBinaryTraceMagic, 8);
    store_u32(h.data() + kOffVersion, kBinaryTraceVersion);
    store_u32(h.data() + kOffHeaderBytes, static_cast<std::uint32_t>(kBinaryTraceHeaderBytes));
    store_u32(h.data() + kOffLayers, static_cast<std::uint32_t>(shape_.layers));
    store_u32(h.data() + kOffGpus, static_cast<std::uint32_t>(shape_.gpus));
    store_u32(h.data() + kOffExperts, static_cast<std::uint32_t>(shape_.experts));
    store_u32(h.data() + kOffElement, static_cast<std::uint32_t>(element_bytes_));
    const auto iters = static_cast<std::uint64_t>(iterations);
    store_u64(h.data() + kOffIterations, iters);
    store_u64(h.data() + kOffPayloadBytes,
              iters * (cell_count(shape_) * static_cast<std::uint64_t>(element_bytes_) + 4));
    store_u32(h.data() + kOffPayloadCrc, payload_crc_);
    store_u32(h.data() + kOffHeaderCrc, crc32(h.data(), kOffHeaderCrc));
    if (std::fseek(f_.get(), 0, SEEK_SET) != 0 || std::fwrite(h.data(), 1, h.size(), f_.get()) != h.size() ||
        std::fflush(f_.get()) != 0) {
      fail(fmt::format("writing '{}' failed (disk full?)", tmp_));
    }
    const int rc = std::fclose(f_.release());
    if (rc != 0) fail(fmt::format("writing '{}' failed (disk full?)", tmp_));
    std::error_code ec;
    std::filesystem::rename(tmp_, path_, ec);
    if (ec) fail(fmt::format("cannot rename '{}' to it: {}", tmp_, ec.message()));
    tmp_.clear();
  }

  std::string path_;
  std::string tmp_;
  std::string old_tmp_;  // the int32 temp file while widen() copies it
  FilePtr f_;
  TraceShape shape_;
  int element_bytes_ = 4;
  std::uint32_t payload_crc_ = 0;
  std::vector<unsigned char> out_;  // pending output, written in blocks
};

}  // namespace

std::string describe_shape(const TraceShape& s) {
  const auto n = [](int v, const char* noun) { return fmt::format("{} {}{}", v, noun, v == 1 ? "" : "s"); };
  return fmt::format("{}, {}, {}", n(s.layers, "MoE layer"), n(s.gpus, "GPU"), n(s.experts, "expert"));
}

void require_shape(const TraceShape& found, const TraceShape& expected, const std::string& where,
                   const std::string& expected_by) {
  std::vector<std::string> differ;
  if (expected.layers != 0 && expected.layers != found.layers) differ.emplace_back("MoE layers");
  if (expected.gpus != 0 && expected.gpus != found.gpus) differ.emplace_back("GPUs");
  if (expected.experts != 0 && expected.experts != found.experts) differ.emplace_back("experts");
  if (differ.empty()) return;
  const auto side = [](int v, const char* noun) {
    return v == 0 ? fmt::format("any number of {}", noun) : fmt::format("{} {}", v, noun);
  };
  throw InputError(fmt::format("{}: shape mismatch: the trace has {}; {} expects {}, {}, {} ({} differ)",
                               where, describe_shape(found), expected_by, side(expected.layers, "MoE layers"),
                               side(expected.gpus, "GPUs"), side(expected.experts, "experts"),
                               fmt::join(differ, " and ")));
}

BinaryTraceInfo read_binary_trace_info(const std::string& path) {
  FilePtr f = open_for_reading(path);
  return parse_header(path, f.get());
}

std::unique_ptr<TraceSource> open_binary_trace(const std::string& path, const TraceShape& expected) {
  FilePtr f = open_for_reading(path);
  const BinaryTraceInfo info = parse_header(path, f.get());
  require_shape(info.shape, expected, fmt::format("{}: byte offset {}", path, kOffLayers));
  return std::make_unique<BinaryTrace>(path, std::move(f), info);
}

void write_binary_trace(TraceSource& src, std::int64_t iterations, const std::string& path) {
  if (iterations < 1) {
    throw InputError(
        fmt::format("{}: cannot write {} iterations; a trace needs at least one", path, iterations));
  }
  BinaryWriter w(path);
  w.write(src, iterations);
}

}  // namespace moesim
