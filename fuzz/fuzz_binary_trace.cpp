// The binary trace reader (header, index, then the counts as they stream).
#include "fuzz/common.hpp"
#include "traces/binary.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace moesim;
  const std::string path = fuzz::write_file("trace.bin", fuzz::as_view(data, size));
  return fuzz::guarded([&] {
    (void)read_binary_trace_info(path);
    auto t = open_binary_trace(path, TraceShape{});
    fuzz::drain(*t);
  });
}
