// Long CSV (layer,expert,count plus selector columns). A first line "#select k=v" pins a selector.
#include "fuzz/common.hpp"
#include "fuzz/fuzz_matrix.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace moesim;
  const std::string_view in = fuzz::as_view(data, size);
  std::map<std::string, std::string> select;
  if (in.substr(0, 8) == "#select ") {
    const std::string_view line = in.substr(8, in.find('\n') == std::string_view::npos ? 0 : in.find('\n') - 8);
    const auto eq = line.find('=');
    if (eq != std::string_view::npos) select[std::string(line.substr(0, eq))] = std::string(line.substr(eq + 1));
  }
  const std::string path = fuzz::write_file("long.csv", in);
  return fuzz::guarded([&] { fuzz::drain_matrix(*open_long_csv(path, select)); });
}
