// Finding the CUDA kernels and the NCCL collectives at run time, and the statistics of timing samples.
#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "kernels/collectives.hpp"
#include "kernels/kernels.hpp"

namespace moesim::kernels {
#ifdef MOESIM_HAVE_CUDA
namespace {

// Where a module of this build may be: named by the environment variable `env`, beside the
// executable, or where this build put it (the NCCL module sits beside the CUDA one).
std::vector<std::string> module_candidates(const char* env_name, const std::string& file) {
  std::vector<std::string> out;
  if (const char* env = std::getenv(env_name); env != nullptr && *env != '\0') out.emplace_back(env);
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) out.push_back((exe.parent_path() / file).string());
#ifdef MOESIM_CUDA_MODULE_PATH
  out.push_back((std::filesystem::path(MOESIM_CUDA_MODULE_PATH).parent_path() / file).string());
#endif
  return out;
}

// dlopen()s the first candidate that loads; null with the reasons in `tried` otherwise.
void* load_module(const char* env_name, const std::string& file, std::string& tried) {
  for (const std::string& path : module_candidates(env_name, file)) {
    if (!std::filesystem::exists(path)) {
      tried += "\n  " + path + ": not found";
      continue;
    }
    void* lib = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib != nullptr) return lib;
    const char* err = ::dlerror();
    tried += "\n  " + path + ": " + (err != nullptr ? err : "dlopen failed");
  }
  return nullptr;
}

}  // namespace
#endif

std::unique_ptr<KernelBackend> make_cuda_backend(std::string* why_not) {
  auto fail = [&](const std::string& why) -> std::unique_ptr<KernelBackend> {
    if (why_not != nullptr) *why_not = why;
    return nullptr;
  };
#ifndef MOESIM_HAVE_CUDA
  return fail("no CUDA device: this moesim was built without the CUDA kernels (nvcc was not found, or "
              "MOESIM_CUDA=OFF); rebuild with the CUDA toolkit installed");
#else
  // The module is loaded only here, so that runs without a GPU never pay for loading cuBLAS.
  std::string tried;
  void* lib = load_module("MOESIM_CUDA_MODULE", "libmoesim_cuda.so", tried);
  if (lib == nullptr) return fail("no CUDA device: could not load the CUDA module libmoesim_cuda.so" + tried);
  // Kept loaded for the life of the process: backends made from it may outlive this call.
  auto create = reinterpret_cast<CudaBackendFactory>(::dlsym(lib, kCudaFactorySymbol));
  if (create == nullptr) return fail(std::string("no CUDA device: libmoesim_cuda.so lacks ") + kCudaFactorySymbol);
  std::array<char, 512> err{};
  KernelBackend* b = create(err.data(), err.size());
  if (b == nullptr) return fail(std::string("no CUDA device: ") + err.data());
  return std::unique_ptr<KernelBackend>(b);
#endif
}

std::unique_ptr<CollectiveBackend> make_nccl_collectives(int gpus, std::string* why_not) {
  auto fail = [&](const std::string& why) -> std::unique_ptr<CollectiveBackend> {
    if (why_not != nullptr) *why_not = why;
    return nullptr;
  };
#ifndef MOESIM_HAVE_CUDA
  (void)gpus;
  return fail(
      "no CUDA device: this moesim was built without the CUDA kernels (nvcc was not found, or "
      "MOESIM_CUDA=OFF); rebuild with the CUDA toolkit installed");
#else
  // Loaded only here: NCCL is needed by the collective calibration alone.
  std::string tried;
  void* lib = load_module("MOESIM_NCCL_MODULE", "libmoesim_nccl.so", tried);
  if (lib == nullptr) return fail("could not load the NCCL module libmoesim_nccl.so" + tried);
  auto create = reinterpret_cast<NcclCollectivesFactory>(::dlsym(lib, kNcclFactorySymbol));
  if (create == nullptr) return fail(std::string("libmoesim_nccl.so lacks ") + kNcclFactorySymbol);
  std::array<char, 1024> err{};
  CollectiveBackend* b = create(gpus, err.data(), err.size());
  if (b == nullptr) return fail(err.data());
  return std::unique_ptr<CollectiveBackend>(b);
#endif
}

SampleStats sample_stats(std::vector<double> s) {
  SampleStats out;
  if (s.empty()) return out;
  std::sort(s.begin(), s.end());
  // Linear interpolation between order statistics (the usual "type 7" quantile).
  auto q = [&](double p) {
    const double pos = p * static_cast<double>(s.size() - 1);
    const auto lo = static_cast<std::size_t>(pos);
    const std::size_t hi = std::min(lo + 1, s.size() - 1);
    return s[lo] + (s[hi] - s[lo]) * (pos - static_cast<double>(lo));
  };
  out.median = q(0.5);
  out.p10 = q(0.1);
  out.p90 = q(0.9);
  return out;
}

}  // namespace moesim::kernels
