// CUDA implementation of the MoE kernels of kernels/kernels.hpp, built as the module
// libmoesim_cuda.so (cmake/cuda.cmake) and loaded by make_cuda_backend() when a run asks for it.
// Activations and weights are bf16 on the device with float accumulation; gating is float.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>
#include <mma.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda_device.cuh"
#include "kernels/kernels.hpp"

namespace moesim::kernels {
namespace {

using bf16 = __nv_bfloat16;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA: ") + what + ": " + cudaGetErrorString(e));
}
void check(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuBLAS: ") + what + ": " + cublasGetStatusString(s));
}

std::size_t sz(long long a) { return static_cast<std::size_t>(a > 0 ? a : 0); }

// Device memory owned for the life of one call.
class DevBuf {
 public:
  DevBuf() = default;
  explicit DevBuf(std::size_t bytes) : bytes_(bytes) {
    if (bytes_ > 0) check(cudaMalloc(&p_, bytes_), "cudaMalloc");
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  DevBuf(DevBuf&& o) noexcept : p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr; o.bytes_ = 0; }
  DevBuf& operator=(DevBuf&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  ~DevBuf() {
    if (p_ != nullptr) cudaFree(p_);
  }
  template <class T>
  [[nodiscard]] T* as() const { return static_cast<T*>(p_); }
  [[nodiscard]] std::size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  std::size_t bytes_ = 0;
};

DevBuf upload_bf16(const float* h, std::size_t n) {
  std::vector<bf16> tmp(n);
  for (std::size_t i = 0; i < n; ++i) tmp[i] = __float2bfloat16(h[i]);
  DevBuf d(n * sizeof(bf16));
  if (n > 0) check(cudaMemcpy(d.as<void>(), tmp.data(), n * sizeof(bf16), cudaMemcpyHostToDevice), "upload");
  return d;
}
template <class T>
DevBuf upload(const T* h, std::size_t n) {
  DevBuf d(n * sizeof(T));
  if (n > 0) check(cudaMemcpy(d.as<void>(), h, n * sizeof(T), cudaMemcpyHostToDevice), "upload");
  return d;
}
void download_bf16(const DevBuf& d, float* h, std::size_t n) {
  std::vector<bf16> tmp(n);
  if (n > 0) check(cudaMemcpy(tmp.data(), d.as<void>(), n * sizeof(bf16), cudaMemcpyDeviceToHost), "download");
  for (std::size_t i = 0; i < n; ++i) h[i] = __bfloat162float(tmp[i]);
}
template <class T>
void download(const DevBuf& d, T* h, std::size_t n) {
  if (n > 0) check(cudaMemcpy(h, d.as<void>(), n * sizeof(T), cudaMemcpyDeviceToHost), "download");
}


// ---------------------------------------------------------------------------------------------

std::string version_string(int v) { return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10); }

// The driver's own version (e.g. 580.159.04) through NVML, when it can be loaded.
std::string nvml_driver_version() {
  void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) return "";
  using InitFn = int (*)();
  using VersionFn = int (*)(char*, unsigned int);
  auto init = reinterpret_cast<InitFn>(dlsym(lib, "nvmlInit_v2"));
  auto version = reinterpret_cast<VersionFn>(dlsym(lib, "nvmlSystemGetDriverVersion"));
  auto shutdown = reinterpret_cast<InitFn>(dlsym(lib, "nvmlShutdown"));
  std::string out;
  if (init != nullptr && version != nullptr && init() == 0) {
    char buf[96] = {};
    if (version(buf, sizeof buf) == 0) out = buf;
    if (shutdown != nullptr) shutdown();
  }
  dlclose(lib);
  return out;
}

class CudaBackend final : public KernelBackend {
 public:
  CudaBackend() {
    check(cudaSetDevice(0), "cudaSetDevice");
    check(cudaStreamCreate(&stream_), "cudaStreamCreate");
    check(cublasCreate(&blas_), "cublasCreate");
    check(cublasSetStream(blas_, stream_), "cublasSetStream");
    check(cudaEventCreate(&ev_a_), "cudaEventCreate");
    check(cudaEventCreate(&ev_b_), "cudaEventCreate");
    grouped_library_ = probe_grouped();
  }
  ~CudaBackend() override {
    cudaEventDestroy(ev_a_);
    cudaEventDestroy(ev_b_);
    cublasDestroy(blas_);
    cudaStreamDestroy(stream_);
  }
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  [[nodiscard]] std::string name() const override { return "cuda"; }
  [[nodiscard]] DeviceInfo device() const override {
    DeviceInfo d;
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
      d.name = std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ", " +
               std::to_string(prop.multiProcessorCount) + " SMs)";
    int drv = 0, rt = 0, blas = 0;
    cudaDriverGetVersion(&drv);
    cudaRuntimeGetVersion(&rt);
    cublasGetVersion(blas_, &blas);
    const std::string nvml = nvml_driver_version();
    d.driver = (nvml.empty() ? "" : nvml + ", ") + "CUDA " + version_string(drv);
    d.toolkit = "CUDA runtime " + version_string(rt);
    d.library = "cuBLAS " + std::to_string(blas / 10000) + "." + std::to_string((blas / 100) % 100) + "." +
                std::to_string(blas % 100) + " (grouped GEMM: " + grouped_library_ + ")";
    return d;
  }

  void topk_gating(const float* logits, int tokens, int experts, int k, int* expert_out, float* weight_out) override {
    if (k < 1 || k > experts) throw std::invalid_argument("topk_gating: k must be in 1..experts");
    const std::size_t tk = sz(static_cast<long long>(tokens) * k);
    DevBuf l = upload(logits, sz(static_cast<long long>(tokens) * experts)), e(tk * sizeof(int)), w(tk * sizeof(float));
    launch_gating(l.as<float>(), tokens, experts, k, e.as<int>(), w.as<float>());
    sync();
    download(e, expert_out, tk);
    download(w, weight_out, tk);
  }

  void permute(const float* x, int tokens, int hidden, const int* expert, int k, int experts, float* rows,
               int* offsets, int* position) override {
    const int entries = tokens * k;
    for (int i = 0; i < entries; ++i)
      if (expert[i] < 0 || expert[i] >= experts) throw std::invalid_argument("permute: expert index out of range");
    DevBuf dx = upload_bf16(x, sz(static_cast<long long>(tokens) * hidden));
    DevBuf de = upload(expert, sz(entries));
    PermuteBuffers pb(entries, experts, hidden);
    launch_permute(dx.as<bf16>(), de.as<int>(), entries, k, experts, hidden, pb);
    sync();
    download_bf16(pb.rows, rows, sz(static_cast<long long>(entries) * hidden));
    download(pb.offsets, offsets, sz(experts + 1));
    download(pb.position, position, sz(entries));
  }

  void unpermute(const float* rows, const int* position, const float* weight, int tokens, int hidden, int k,
                 float* out) override {
    const std::size_t entries = sz(static_cast<long long>(tokens) * k);
    DevBuf dr = upload_bf16(rows, entries * sz(hidden)), dp = upload(position, entries), dw = upload(weight, entries);
    DevBuf dout(sz(static_cast<long long>(tokens) * hidden) * sizeof(bf16));
    launch_unpermute(dr.as<bf16>(), dp.as<int>(), dw.as<float>(), tokens, hidden, k, dout.as<bf16>());
    sync();
    download_bf16(dout, out, sz(static_cast<long long>(tokens) * hidden));
  }

  void grouped_gemm(const float* a, const int* offsets, int experts, const float* w, int n, int kdim, float* c,
                    GroupedImpl impl) override {
    const int rows = offsets[experts];
    DevBuf da = upload_bf16(a, sz(static_cast<long long>(rows) * kdim));
    DevBuf dw = upload_bf16(w, sz(static_cast<long long>(experts) * kdim * n));
    DevBuf dc(sz(static_cast<long long>(rows) * n) * sizeof(bf16));
    std::vector<int> off(offsets, offsets + experts + 1);
    if (impl == GroupedImpl::Custom) {
      DevBuf doff = upload(offsets, sz(experts + 1));
      launch_wmma(da.as<bf16>(), doff.as<int>(), off, dw.as<bf16>(), n, kdim, dc.as<bf16>());
    } else {
      GroupedPlan plan = plan_grouped(da.as<bf16>(), dw.as<bf16>(), dc.as<bf16>(), off, n, kdim);
      run_grouped(plan, impl == GroupedImpl::Grouped && grouped_native_);
    }
    sync();
    download_bf16(dc, c, sz(static_cast<long long>(rows) * n));
  }

  void gemm(const float* a, const float* b, int batch, int m, int n, int kdim, float* c) override {
    DevBuf da = upload_bf16(a, sz(static_cast<long long>(batch) * m * kdim));
    DevBuf db = upload_bf16(b, sz(static_cast<long long>(batch) * kdim * n));
    DevBuf dc(sz(static_cast<long long>(batch) * m * n) * sizeof(bf16));
    run_gemm(da.as<bf16>(), db.as<bf16>(), batch, m, n, kdim, dc.as<bf16>());
    sync();
    download_bf16(dc, c, sz(static_cast<long long>(batch) * m * n));
  }

  [[nodiscard]] std::vector<double> time(const KernelShape& s, const TimingOptions& opt) override {
    const int m = static_cast<int>(s.m), n = static_cast<int>(s.n), k = static_cast<int>(s.k);
    const int batch = static_cast<int>(std::max<long long>(1, s.batch));
    switch (s.kernel) {
      case Kernel::Gating: {
        DevBuf l = random_f32(sz(s.m * s.n)), e(sz(s.m * s.k) * sizeof(int)), w(sz(s.m * s.k) * sizeof(float));
        return time_calls([&] { launch_gating(l.as<float>(), m, n, k, e.as<int>(), w.as<float>()); }, opt);
      }
      case Kernel::Permute: {
        const int entries = m * k;
        std::vector<int> ex(sz(entries));
        for (int i = 0; i < entries; ++i) ex[static_cast<std::size_t>(i)] = i % batch;  // k distinct per token, balanced
        DevBuf dx = random_bf16(sz(s.m * s.n)), de = upload(ex.data(), ex.size());
        PermuteBuffers pb(entries, batch, n);
        return time_calls([&] { launch_permute(dx.as<bf16>(), de.as<int>(), entries, k, batch, n, pb); }, opt);
      }
      case Kernel::Unpermute: {
        const int entries = m * k;
        std::vector<int> pos(sz(entries));
        for (int i = 0; i < entries; ++i) pos[static_cast<std::size_t>(i)] = i;
        std::vector<float> wt(sz(entries), 1.0f / static_cast<float>(std::max(1, k)));
        DevBuf dr = random_bf16(sz(static_cast<long long>(entries) * n)), dp = upload(pos.data(), pos.size()),
               dw = upload(wt.data(), wt.size()), dout(sz(s.m * s.n) * sizeof(bf16));
        return time_calls(
            [&] { launch_unpermute(dr.as<bf16>(), dp.as<int>(), dw.as<float>(), m, n, k, dout.as<bf16>()); }, opt);
      }
      case Kernel::GroupedGemm:
      case Kernel::GroupedGemmCustom: {
        std::vector<int> off(sz(batch + 1));
        for (int e = 0; e <= batch; ++e) off[static_cast<std::size_t>(e)] = e * m;
        DevBuf da = random_bf16(sz(static_cast<long long>(batch) * m * k));
        DevBuf dw = random_bf16(sz(static_cast<long long>(batch) * k * n));
        DevBuf dc(sz(static_cast<long long>(batch) * m * n) * sizeof(bf16));
        if (s.kernel == Kernel::GroupedGemmCustom) {
          DevBuf doff = upload(off.data(), off.size());
          return time_calls(
              [&] { launch_wmma(da.as<bf16>(), doff.as<int>(), off, dw.as<bf16>(), n, k, dc.as<bf16>()); }, opt);
        }
        // What a framework would pick: the grouped call wins on few tokens (one launch), one GEMM
        // per expert on many (cuBLAS's grouped kernels reach well under its dense GEMMs' rate).
        GroupedPlan plan = plan_grouped(da.as<bf16>(), dw.as<bf16>(), dc.as<bf16>(), off, n, k);
        std::vector<double> per_expert = time_calls([&] { run_grouped(plan, false); }, opt);
        if (!grouped_native_) return per_expert;
        std::vector<double> grouped = time_calls([&] { run_grouped(plan, true); }, opt);
        return median(grouped) <= median(per_expert) ? grouped : per_expert;
      }
      case Kernel::Gemm:
      case Kernel::BatchedGemm: {
        DevBuf da = random_bf16(sz(static_cast<long long>(batch) * m * k));
        DevBuf db = random_bf16(sz(static_cast<long long>(batch) * k * n));
        DevBuf dc(sz(static_cast<long long>(batch) * m * n) * sizeof(bf16));
        return time_calls([&] { run_gemm(da.as<bf16>(), db.as<bf16>(), batch, m, n, k, dc.as<bf16>()); }, opt);
      }
      case Kernel::Stream: {
        const std::size_t half = sz(s.m / 2);
        DevBuf src(half), dst(half);
        if (half > 0) check(cudaMemsetAsync(src.as<void>(), 1, half, stream_), "cudaMemsetAsync");
        return time_calls(
            [&] {
              if (half > 0)
                check(cudaMemcpyAsync(dst.as<void>(), src.as<void>(), half, cudaMemcpyDeviceToDevice, stream_),
                      "cudaMemcpyAsync");
            },
            opt);
      }
    }
    throw std::invalid_argument("time: unknown kernel");
  }

 private:
  struct PermuteBuffers {
    PermuteBuffers(int entries, int experts, int hidden)
        : chunks((entries + kChunk - 1) / kChunk),
          chunk_counts(sz(static_cast<long long>(std::max(1, chunks)) * experts) * sizeof(int)),
          totals(sz(experts) * sizeof(int)),
          offsets(sz(experts + 1) * sizeof(int)),
          position(sz(entries) * sizeof(int)),
          source(sz(entries) * sizeof(int)),
          rows(sz(static_cast<long long>(entries) * hidden) * sizeof(bf16)) {}
    int chunks;
    DevBuf chunk_counts, totals, offsets, position, source, rows;
  };

  // One group per expert with rows; cuBLAS is column-major, so each row-major product
  // C_e = A_e W_e is issued as C_e^T = W_e^T A_e^T.
  struct GroupedPlan {
    std::vector<cublasOperation_t> trans;
    std::vector<int> m, n, k, ld_w, ld_a, ld_c, size;
    std::vector<float> alpha, beta;
    DevBuf ptrs;  // W pointers, then A pointers, then C pointers
    std::vector<const void*> w_host, a_host;  // the same on the host, for the per-expert fallback
    std::vector<void*> c_host;
    int groups = 0;
  };

  GroupedPlan plan_grouped(const bf16* a, const bf16* w, bf16* c, const std::vector<int>& off, int n, int kdim) {
    GroupedPlan p;
    std::vector<const void*>& wp = p.w_host;
    std::vector<const void*>& ap = p.a_host;
    std::vector<void*>& cp = p.c_host;
    const int experts = static_cast<int>(off.size()) - 1;
    for (int e = 0; e < experts; ++e) {
      const int rows = off[static_cast<std::size_t>(e) + 1] - off[static_cast<std::size_t>(e)];
      if (rows <= 0) continue;
      p.m.push_back(n);
      p.n.push_back(rows);
      p.k.push_back(kdim);
      p.ld_w.push_back(n);
      p.ld_a.push_back(kdim);
      p.ld_c.push_back(n);
      wp.push_back(w + static_cast<std::size_t>(e) * kdim * n);
      ap.push_back(a + static_cast<std::size_t>(off[static_cast<std::size_t>(e)]) * kdim);
      cp.push_back(c + static_cast<std::size_t>(off[static_cast<std::size_t>(e)]) * n);
    }
    p.groups = static_cast<int>(p.m.size());
    p.trans.assign(sz(p.groups), CUBLAS_OP_N);
    p.size.assign(sz(p.groups), 1);
    p.alpha.assign(sz(p.groups), 1.0f);
    p.beta.assign(sz(p.groups), 0.0f);
    std::vector<const void*> all;
    all.insert(all.end(), wp.begin(), wp.end());
    all.insert(all.end(), ap.begin(), ap.end());
    all.insert(all.end(), cp.begin(), cp.end());
    p.ptrs = upload(all.data(), all.size());
    return p;
  }

  void run_grouped(const GroupedPlan& p, bool native) {
    if (p.groups == 0) return;
    if (native) {
      const void* const* ptrs = p.ptrs.as<const void* const>();
      check(cublasGemmGroupedBatchedEx(blas_, p.trans.data(), p.trans.data(), p.m.data(), p.n.data(), p.k.data(),
                                       p.alpha.data(), ptrs, CUDA_R_16BF, p.ld_w.data(), ptrs + p.groups, CUDA_R_16BF,
                                       p.ld_a.data(), p.beta.data(),
                                       const_cast<void* const*>(ptrs + 2 * p.groups), CUDA_R_16BF, p.ld_c.data(),
                                       p.groups, p.size.data(), CUBLAS_COMPUTE_32F),
            "cublasGemmGroupedBatchedEx");
      return;
    }
    // One cublasGemmEx per expert (also where the grouped call is not supported).
    const float one = 1.0f, zero = 0.0f;
    for (int g = 0; g < p.groups; ++g) {
      const auto i = static_cast<std::size_t>(g);
      check(cublasGemmEx(blas_, CUBLAS_OP_N, CUBLAS_OP_N, p.m[i], p.n[i], p.k[i], &one, p.w_host[i], CUDA_R_16BF,
                         p.ld_w[i], p.a_host[i], CUDA_R_16BF, p.ld_a[i], &zero, p.c_host[i], CUDA_R_16BF, p.ld_c[i],
                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            "cublasGemmEx");
    }
  }

  // Tries the grouped call once on a tiny problem; older libraries or GPUs lack it for bf16.
  std::string probe_grouped() {
    grouped_native_ = true;
    try {
      std::vector<float> a(16 * 16, 0.5f), w(2 * 16 * 16, 0.25f), c(32 * 16);
      std::vector<int> off = {0, 16, 32};
      std::vector<float> a2(32 * 16, 0.5f);
      grouped_gemm(a2.data(), off.data(), 2, w.data(), 16, 16, c.data(), GroupedImpl::Grouped);
      return "the faster of cublasGemmGroupedBatchedEx and cublasGemmEx per expert, per shape";
    } catch (const std::runtime_error&) {
      grouped_native_ = false;
      cudaGetLastError();
      return "cublasGemmEx per expert";
    }
  }

  void run_gemm(const bf16* a, const bf16* b, int batch, int m, int n, int kdim, bf16* c) {
    const float one = 1.0f, zero = 0.0f;
    if (batch == 1) {
      check(cublasGemmEx(blas_, CUBLAS_OP_N, CUBLAS_OP_N, n, m, kdim, &one, b, CUDA_R_16BF, n, a, CUDA_R_16BF, kdim,
                         &zero, c, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            "cublasGemmEx");
      return;
    }
    check(cublasGemmStridedBatchedEx(blas_, CUBLAS_OP_N, CUBLAS_OP_N, n, m, kdim, &one, b, CUDA_R_16BF, n,
                                     static_cast<long long>(kdim) * n, a, CUDA_R_16BF, kdim,
                                     static_cast<long long>(m) * kdim, &zero, c, CUDA_R_16BF, n,
                                     static_cast<long long>(m) * n, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "cublasGemmStridedBatchedEx");
  }

  void launch_gating(const float* l, int tokens, int experts, int k, int* e, float* w) {
    if (tokens <= 0) return;
    const int threads = 256, per_block = threads / 32;
    gating_kernel<<<(tokens + per_block - 1) / per_block, threads, 0, stream_>>>(l, tokens, experts, k, e, w);
    check(cudaGetLastError(), "gating_kernel");
  }

  void launch_permute(const bf16* x, const int* expert, int entries, int k, int experts, int hidden,
                      PermuteBuffers& pb) {
    check(cudaMemsetAsync(pb.chunk_counts.as<void>(), 0, pb.chunk_counts.bytes(), stream_), "cudaMemsetAsync");
    if (entries > 0) {
      count_kernel<<<(entries + 255) / 256, 256, 0, stream_>>>(expert, entries, experts, pb.chunk_counts.as<int>());
    }
    chunk_scan_kernel<<<(experts + 127) / 128, 128, 0, stream_>>>(pb.chunk_counts.as<int>(), pb.chunks, experts,
                                                                  pb.totals.as<int>());
    offsets_kernel<<<1, 1, 0, stream_>>>(pb.totals.as<int>(), experts, pb.offsets.as<int>());
    if (entries > 0) {
      position_kernel<<<pb.chunks, kChunk, 0, stream_>>>(expert, entries, experts, pb.chunk_counts.as<int>(),
                                                         pb.offsets.as<int>(), pb.position.as<int>(),
                                                         pb.source.as<int>());
      gather_kernel<<<entries, 128, 0, stream_>>>(x, pb.source.as<int>(), k, hidden, pb.rows.as<bf16>());
    }
    check(cudaGetLastError(), "permute kernels");
  }

  void launch_unpermute(const bf16* rows, const int* pos, const float* w, int tokens, int hidden, int k, bf16* out) {
    if (tokens <= 0) return;
    unpermute_kernel<<<tokens, 256, 0, stream_>>>(rows, pos, w, hidden, k, out);
    check(cudaGetLastError(), "unpermute_kernel");
  }

  void launch_wmma(const bf16* a, const int* d_off, const std::vector<int>& off, const bf16* w, int n, int kdim,
                   bf16* c) {
    int max_rows = 0;
    for (std::size_t e = 0; e + 1 < off.size(); ++e) max_rows = std::max(max_rows, off[e + 1] - off[e]);
    const int experts = static_cast<int>(off.size()) - 1;
    if (max_rows == 0 || n <= 0) return;
    dim3 grid(static_cast<unsigned>((n + kTileN - 1) / kTileN), static_cast<unsigned>((max_rows + kTileM - 1) / kTileM),
              static_cast<unsigned>(experts));
    grouped_gemm_wmma<<<grid, 128, 0, stream_>>>(a, d_off, w, n, kdim, c);
    check(cudaGetLastError(), "grouped_gemm_wmma");
  }

  static double median(std::vector<double> v) {
    if (v.empty()) return 0.0;
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
    return v[v.size() / 2];
  }

  void sync() { check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }

  DevBuf random_bf16(std::size_t n) { return random<bf16>(n); }
  DevBuf random_f32(std::size_t n) { return random<float>(n); }
  template <class T>
  DevBuf random(std::size_t n) {
    DevBuf d(n * sizeof(T));
    if (n > 0) {
      fill_kernel<T><<<1024, 256, 0, stream_>>>(d.as<T>(), n, 0x5DEECE66DULL + n);
      check(cudaGetLastError(), "fill_kernel");
      sync();
    }
    return d;
  }

  // Warm-up calls also estimate one call's time, which sets how many timed calls fit the budget;
  // long calls need fewer warm-ups (at most a fifth of the budget goes to them).
  // Timed calls are queued back to back between events, so the GPU never waits on the host
  // unless the host cannot launch as fast as the GPU runs (then that rate is what is measured).
  template <class F>
  std::vector<double> time_calls(F&& call, const TimingOptions& opt) {
    auto timed = [&](int calls) {
      check(cudaEventRecord(ev_a_, stream_), "cudaEventRecord");
      for (int i = 0; i < calls; ++i) call();
      check(cudaEventRecord(ev_b_, stream_), "cudaEventRecord");
      check(cudaEventSynchronize(ev_b_), "cudaEventSynchronize");
      float ms = 0.0f;
      check(cudaEventElapsedTime(&ms, ev_a_, ev_b_), "cudaEventElapsedTime");
      return std::max(1e-9, static_cast<double>(ms) / 1e3 / calls);
    };
    double per_call_s = timed(1);
    const int more = std::min(opt.warmup - 1, static_cast<int>(0.2 * opt.budget_s / per_call_s));
    if (more > 0) per_call_s = timed(more);
    int reps = std::max(1, opt.reps);
    const int fit = static_cast<int>(opt.budget_s / per_call_s);
    reps = std::max(std::min(reps, fit), std::min(reps, std::max(1, opt.min_reps)));
    std::vector<cudaEvent_t> ev(sz(reps + 1));
    for (auto& e : ev) check(cudaEventCreate(&e), "cudaEventCreate");
    std::vector<double> samples;
    try {
      check(cudaEventRecord(ev[0], stream_), "cudaEventRecord");
      for (int i = 0; i < reps; ++i) {
        call();
        check(cudaEventRecord(ev[static_cast<std::size_t>(i) + 1], stream_), "cudaEventRecord");
      }
      check(cudaEventSynchronize(ev.back()), "cudaEventSynchronize");
      for (int i = 0; i < reps; ++i) {
        float ms = 0.0f;
        check(cudaEventElapsedTime(&ms, ev[static_cast<std::size_t>(i)], ev[static_cast<std::size_t>(i) + 1]),
              "cudaEventElapsedTime");
        samples.push_back(static_cast<double>(ms) * 1e6);
      }
    } catch (...) {
      for (auto& e : ev) cudaEventDestroy(e);
      throw;
    }
    for (auto& e : ev) cudaEventDestroy(e);
    return samples;
  }

  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  cudaEvent_t ev_a_ = nullptr, ev_b_ = nullptr;
  bool grouped_native_ = true;
  std::string grouped_library_;
};

}  // namespace
}  // namespace moesim::kernels

extern "C" __attribute__((visibility("default"))) moesim::kernels::KernelBackend* moesim_cuda_backend_create(
    char* err, std::size_t err_size) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    std::snprintf(err, err_size, "cudaGetDeviceCount failed: %s", cudaGetErrorString(e));
    return nullptr;
  }
  if (count == 0) {
    std::snprintf(err, err_size, "cudaGetDeviceCount found 0 devices");
    return nullptr;
  }
  try {
    return new moesim::kernels::CudaBackend();
  } catch (const std::exception& ex) {
    std::snprintf(err, err_size, "%s", ex.what());
    return nullptr;
  }
}
