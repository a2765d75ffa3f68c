#pragma once
// The kernels of one MoE layer behind one interface, with a CPU implementation (the reference,
// and what runs without a GPU) and a CUDA one (kernels/cuda_kernels.cu, built as a module that is
// loaded only when asked for, so that binaries without a GPU never load cuBLAS).
//
// Host data is row-major float. The CUDA backend keeps activations and weights in bf16 on the
// device (what training runs), so its results match the CPU's within bf16 rounding; gating
// logits and probabilities stay in float on both.
//
// This header is also compiled by nvcc (C++17): no C++20 here.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace moesim::kernels {

enum class Kernel {
  Gating,             // softmax over experts, then top-k: m tokens, n experts, k = top_k
  Permute,            // dispatch: rows grouped by expert: m tokens, n hidden, k = top_k, batch experts
  Unpermute,          // combine: weighted sum of each token's k rows: m tokens, n hidden, k = top_k
  GroupedGemm,        // expert FFN through the library: `batch` experts of m tokens, [m x k] x [k x n];
                      // on the GPU the faster of one grouped call and one GEMM per expert
  GroupedGemmCustom,  // the same with the hand-written kernel
  Gemm,               // one dense GEMM [m x k] x [k x n]
  BatchedGemm,        // `batch` GEMMs [m x k] x [k x n] (attention scores and weighted values)
  Stream,             // a copy moving m bytes through memory (m/2 read, m/2 written)
};
[[nodiscard]] inline const char* to_string(Kernel k) {
  switch (k) {
    case Kernel::Gating: return "gating";
    case Kernel::Permute: return "permute";
    case Kernel::Unpermute: return "unpermute";
    case Kernel::GroupedGemm: return "grouped_gemm";
    case Kernel::GroupedGemmCustom: return "grouped_gemm_custom";
    case Kernel::Gemm: return "gemm";
    case Kernel::BatchedGemm: return "batched_gemm";
    case Kernel::Stream: return "stream";
  }
  return "?";
}

enum class GroupedImpl {
  Grouped,    // cuBLAS's grouped call (cublasGemmGroupedBatchedEx), one launch for every expert
  PerExpert,  // one cublasGemmEx per expert
  Custom,     // the hand-written WMMA kernel
};

// One call to time; the meaning of m, n, k and batch is given per kernel above.
struct KernelShape {
  Kernel kernel = Kernel::Gemm;
  std::int64_t m = 0, n = 0, k = 0;
  std::int64_t batch = 1;
};

struct TimingOptions {
  int warmup = 2;          // untimed calls first (clocks, caches, lazy library set-up)
  int reps = 10;           // timed calls wanted
  int min_reps = 3;        // timed calls made even when they exceed the budget
  double budget_s = 0.5;   // stop adding timed calls once they have taken this long
};

struct DeviceInfo {
  std::string name;     // e.g. "NVIDIA H100 80GB HBM3" or the CPU model
  std::string driver;   // CUDA driver version ("" on the CPU)
  std::string toolkit;  // CUDA runtime/toolkit version the module was built with; compiler on the CPU
  std::string library;  // cuBLAS version, or "Eigen x.y.z"
};

class KernelBackend {
 public:
  virtual ~KernelBackend() = default;
  [[nodiscard]] virtual std::string name() const = 0;  // "cpu" | "cuda"
  [[nodiscard]] virtual DeviceInfo device() const = 0;

  // Softmax over `experts` logits per token, then the k most probable experts in descending
  // probability (ties: the lower expert index first). Outputs are [tokens x k].
  virtual void topk_gating(const float* logits, int tokens, int experts, int k, int* expert_out,
                           float* weight_out) = 0;
  // Dispatch: the tokens' rows grouped by expert, within an expert in order of (token, slot).
  // `rows` is [tokens*k x hidden]; offsets[e]..offsets[e+1] are expert e's rows (experts + 1
  // entries); position[t*k + j] is the row holding token t's j-th choice.
  virtual void permute(const float* x, int tokens, int hidden, const int* expert, int k, int experts,
                       float* rows, int* offsets, int* position) = 0;
  // Combine: out[t] = sum over j of weight[t*k + j] * rows[position[t*k + j]], j ascending.
  virtual void unpermute(const float* rows, const int* position, const float* weight, int tokens,
                         int hidden, int k, float* out) = 0;
  // Expert FFN: for each expert e, c[rows of e] = a[rows of e] x w[e], where a is [R x kdim],
  // w is [experts x kdim x n] and c is [R x n], R = offsets[experts]. `impl` picks the GPU
  // implementation; the CPU has one.
  virtual void grouped_gemm(const float* a, const int* offsets, int experts, const float* w, int n, int kdim,
                            float* c, GroupedImpl impl) = 0;
  // c[batch x m x n] = a[batch x m x kdim] x b[batch x kdim x n] (batch 1: one dense GEMM).
  virtual void gemm(const float* a, const float* b, int batch, int m, int n, int kdim, float* c) = 0;

  // Times one shape on inputs the backend makes up: `warmup` untimed calls, then timed ones.
  // Returns one duration per timed call, in nanoseconds.
  [[nodiscard]] virtual std::vector<double> time(const KernelShape& shape, const TimingOptions& opt) = 0;
};

[[nodiscard]] std::unique_ptr<KernelBackend> make_cpu_backend();
// Null when no CUDA device can be used; `why_not` then says why ("no CUDA device: ...", or that
// this build has no CUDA kernels).
[[nodiscard]] std::unique_ptr<KernelBackend> make_cuda_backend(std::string* why_not);

// Median and percentiles (linear between order statistics) of timing samples.
struct SampleStats {
  double median = 0, p10 = 0, p90 = 0;
};
[[nodiscard]] SampleStats sample_stats(std::vector<double> samples);

// Entry point of the CUDA module (C linkage, looked up with dlsym). Writes a reason into `err`
// and returns null when no device can be used.
using CudaBackendFactory = KernelBackend* (*)(char* err, std::size_t err_size);
inline constexpr const char* kCudaFactorySymbol = "moesim_cuda_backend_create";

}  // namespace moesim::kernels
