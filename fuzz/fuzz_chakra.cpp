// Chakra execution traces: a folder with comm_group.json and moesim.RANK.et files. The input is
// split at each "\n=====\n": the first part is comm_group.json, the others moesim.0.et, moesim.1.et,
// ... The graph read is then replayed.
#include "fuzz/common.hpp"
#include "sim/op_graph.hpp"
#include "traces/chakra_et.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace moesim;
  namespace fs = std::filesystem;
  const fs::path dir = fuzz::scratch() / "chakra";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string_view in = fuzz::as_view(data, size);
  constexpr std::string_view kSep = "\n=====\n";
  for (int part = 0; part < 5; ++part) {
    const std::size_t cut = in.find(kSep);
    const std::string_view bytes = in.substr(0, cut);
    const std::string name = part == 0 ? "comm_group.json" : "moesim." + std::to_string(part - 1) + ".et";
    std::ofstream((dir / name).string(), std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (cut == std::string_view::npos) break;
    in.remove_prefix(cut + kSep.size());
  }
  return fuzz::guarded([&] {
    const OpGraph g = read_chakra_et(dir.string());
    (void)replay_graph(g, dir.string());
  });
}
