// TensorRT-LLM expert statistics: a folder with meta_info.json and <rank>.safetensors files. The
// input is split at each "\n=====\n": the first part is meta_info.json, the others rank0, rank1, ...
#include "fuzz/common.hpp"
#include "traces/importers.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace moesim;
  namespace fs = std::filesystem;
  const fs::path dir = fuzz::scratch() / "trtllm";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string_view in = fuzz::as_view(data, size);
  constexpr std::string_view kSep = "\n=====\n";
  for (int part = 0; part < 5; ++part) {
    const std::size_t cut = in.find(kSep);
    const std::string_view bytes = in.substr(0, cut);
    const std::string name = part == 0 ? "meta_info.json" : "rank" + std::to_string(part - 1) + ".safetensors";
    std::ofstream((dir / name).string(), std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (cut == std::string_view::npos) break;
    in.remove_prefix(cut + kSep.size());
  }
  return fuzz::guarded([&] {
    TrtllmStats t = open_trtllm_stats(dir.string());
    fuzz::drain(*t.source);
  });
}
