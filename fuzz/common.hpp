#pragma once
// What the fuzz targets share: the input written to a scratch file (the readers take paths), the
// documented input error as the one allowed outcome, and a bounded read of a trace.
// Anything other than InputError escapes LLVMFuzzerTestOneInput, so libFuzzer reports it.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "core/error.hpp"
#include "sim/routing.hpp"

namespace moesim::fuzz {

// A per-process scratch folder (parallel fuzzing jobs do not share files).
inline const std::filesystem::path& scratch() {
  static const std::filesystem::path dir = [] {
    const char* t = std::getenv("TMPDIR");
    std::filesystem::path d = std::filesystem::path(t != nullptr && *t != '\0' ? t : "/tmp") /
                              ("moesim-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline std::string write_file(const std::string& name, std::string_view bytes) {
  const std::string path = (scratch() / name).string();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

inline std::string_view as_view(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Reads up to `limit` iterations: some readers check rows only as they stream them.
inline void drain(TraceSource& t, int limit = 16) {
  IterationCounts c;
  for (int i = 0; i < limit && t.next(c); ++i) {
  }
  t.rewind();
  (void)t.next(c);
  (void)t.describe();
}

// Runs `body`; an InputError is the documented answer to bad input, everything else escapes.
template <class F>
int guarded(F&& body) {
  try {
    body();
  } catch (const InputError&) {
  }
  return 0;
}

}  // namespace moesim::fuzz
