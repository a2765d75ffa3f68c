// Load matrices in JSON ([layers][experts] or [steps][layers][experts], bare or under a key).
#include "fuzz/common.hpp"
#include "fuzz/fuzz_matrix.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace moesim;
  const std::string path = fuzz::write_file("matrix.json", fuzz::as_view(data, size));
  return fuzz::guarded([&] { fuzz::drain_matrix(*open_load_matrix_json(path)); });
}
