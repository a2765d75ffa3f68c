// Any trace file through format detection (open_trace_file). The first byte picks the file's
// extension (detection falls back to it) and whether a shape and a batch size are given.
#include <array>

#include "fuzz/common.hpp"
#include "traces/importers.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace moesim;
  if (size == 0) return 0;
  static constexpr std::array<const char*, 4> kExt = {".csv", ".bin", ".json", ".txt"};
  const std::uint8_t mode = data[0];
  const std::string path = fuzz::write_file(std::string("trace") + kExt[mode & 3], fuzz::as_view(data + 1, size - 1));
  return fuzz::guarded([&] {
    ImportOptions o;
    if ((mode & 4) != 0) o.shape.gpus = 4;  // spread inputs without source GPUs over 4
    if ((mode & 8) != 0) o.tokens_per_gpu = 64;
    if ((mode & 16) != 0) o.iterations = 3;
    OpenedTrace t = open_trace_file(path, o);
    fuzz::drain(*t.source);
  });
}
