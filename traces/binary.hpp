#pragma once
// The native binary trace format (layout in docs/trace-format.md, "Binary format"): a 64-byte
// header, then every iteration's counts stored contiguously, each followed by its CRC-32. It is
// read in pieces of 256 KiB, each checksummed and converted while in the cache, so memory does not
// grow with the trace length.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "traces/trace.hpp"

namespace moesim {

inline constexpr char kBinaryTraceMagic[8] = {'M', 'O', 'E', 'S', 'I', 'M', 'T', 'R'};
inline constexpr std::uint32_t kBinaryTraceVersion = 1;
inline constexpr std::size_t kBinaryTraceHeaderBytes = 64;

// What the header of a binary trace says (after validation).
struct BinaryTraceInfo {
  TraceShape shape;
  std::int64_t iterations = 0;
  int element_bytes = 0;              // 4 (int32) or 8 (int64)
  std::uint32_t payload_crc = 0;      // CRC-32 of the iterations' CRCs, in order
  std::uint64_t iteration_bytes = 0;  // one iteration on disk: counts plus its 4-byte CRC
};

// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320, as zlib's crc32): pass the previous result
// to continue a running checksum; crc32("123456789") == 0xCBF43926.
[[nodiscard]] std::uint32_t crc32(const void* data, std::size_t n, std::uint32_t prev = 0);
// The same, one table lookup per byte and nothing else: the reference crc32's fast paths are
// tested against.
[[nodiscard]] std::uint32_t crc32_portable(const void* data, std::size_t n, std::uint32_t prev = 0);

// "2 MoE layers, 4 GPUs, 8 experts".
[[nodiscard]] std::string describe_shape(const TraceShape& s);

// Throws InputError unless every nonzero field of `expected` equals `found`; the message starts
// with `where` (file and position) and names both shapes, e.g. "the trace has 2 MoE layers, ...;
// the scenario expects 4 MoE layers, ... (MoE layers differ)".
void require_shape(const TraceShape& found, const TraceShape& expected, const std::string& where,
                   const std::string& expected_by = "the scenario");

// Reads and validates the header (magic, version, header checksum, shape, element type) and the
// file size against it: a truncated file is reported here, before any iteration is read.
[[nodiscard]] BinaryTraceInfo read_binary_trace_info(const std::string& path);

// Streams a binary trace. Each field of `expected` that is nonzero must equal the file's (a
// mismatch names both sides); zero fields take the file's value, so `TraceShape{}` accepts any
// shape. Every iteration's CRC is checked as it is read; the payload checksum with the last.
[[nodiscard]] std::unique_ptr<TraceSource> open_binary_trace(const std::string& path,
                                                             const TraceShape& expected);

// Writes `iterations` iterations of `src` (from its current position) as a binary trace through a
// temporary file renamed into place. Counts are stored as int32 unless one exceeds 2^31 - 1.
void write_binary_trace(TraceSource& src, std::int64_t iterations, const std::string& path);

}  // namespace moesim
