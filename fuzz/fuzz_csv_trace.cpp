// The native CSV trace reader: shape scan, then the streaming reader at that shape.
#include "fuzz/common.hpp"
#include "traces/trace.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace moesim;
  const std::string path = fuzz::write_file("trace.csv", fuzz::as_view(data, size));
  return fuzz::guarded([&] {
    const TraceShape s = scan_csv_trace_shape(path);
    auto t = open_csv_trace(path, s);
    fuzz::drain(*t);
  });
}
