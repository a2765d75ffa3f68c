#pragma once
// The device kernels of kernels/cuda_kernels.cu (gating, permutation, grouped GEMM, input fill),
// apart from the host code that launches and times them. Included by that one file only.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstddef>

namespace moesim::kernels {
namespace {

using bf16 = __nv_bfloat16;

// ---------------------------------------------------------------------------------------------
// Gating: one warp per token. Experts are ranked by logit (softmax is monotone), ties to the
// lower index; the j-th pick is the best expert ranked after pick j-1, so no mask is needed.

__device__ bool ranks_before(float va, int ia, float vb, int ib) { return va > vb || (va == vb && ia < ib); }

__global__ void gating_kernel(const float* logits, int tokens, int experts, int k, int* expert_out,
                              float* weight_out) {
  const int warp = static_cast<int>((blockIdx.x * blockDim.x + threadIdx.x) / 32);
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (warp >= tokens) return;
  const float* l = logits + static_cast<std::size_t>(warp) * experts;
  float mx = -INFINITY;
  for (int e = lane; e < experts; e += 32) mx = fmaxf(mx, l[e]);
  for (int off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  float sum = 0.0f;
  for (int e = lane; e < experts; e += 32) sum += expf(l[e] - mx);
  for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  float prev_v = INFINITY;
  int prev_i = -1;
  for (int j = 0; j < k; ++j) {
    float best_v = -INFINITY;
    int best_i = experts;  // sentinel: ranks after every real expert
    for (int e = lane; e < experts; e += 32) {
      const float v = l[e];
      if (ranks_before(prev_v, prev_i, v, e) && (best_i == experts || ranks_before(v, e, best_v, best_i))) {
        best_v = v;
        best_i = e;
      }
    }
    for (int off = 16; off > 0; off /= 2) {
      const float ov = __shfl_xor_sync(0xffffffffu, best_v, off);
      const int oi = __shfl_xor_sync(0xffffffffu, best_i, off);
      if (oi != experts && (best_i == experts || ranks_before(ov, oi, best_v, best_i))) {
        best_v = ov;
        best_i = oi;
      }
    }
    if (lane == 0) {
      expert_out[static_cast<std::size_t>(warp) * k + j] = best_i;
      weight_out[static_cast<std::size_t>(warp) * k + j] = expf(best_v - mx) / sum;
    }
    prev_v = best_v;
    prev_i = best_i;
  }
}

// ---------------------------------------------------------------------------------------------
// Permutation: a stable counting sort by expert in chunks of kChunk entries. Counts per chunk
// and expert, a prefix over chunks per expert, a prefix over experts, then each entry's rank
// among the same expert's entries earlier in its chunk gives its row; the rows are gathered.

constexpr int kChunk = 256;

__global__ void count_kernel(const int* expert, int entries, int experts, int* chunk_counts) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i >= entries) return;
  atomicAdd(&chunk_counts[static_cast<std::size_t>(i / kChunk) * experts + expert[i]], 1);
}

// One thread per expert: chunk_counts becomes the exclusive prefix over chunks; totals[e] the sum.
__global__ void chunk_scan_kernel(int* chunk_counts, int chunks, int experts, int* totals) {
  const int e = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (e >= experts) return;
  int run = 0;
  for (int c = 0; c < chunks; ++c) {
    int& v = chunk_counts[static_cast<std::size_t>(c) * experts + e];
    const int n = v;
    v = run;
    run += n;
  }
  totals[e] = run;
}

// Expert counts are few (up to thousands): one thread is plenty.
__global__ void offsets_kernel(const int* totals, int experts, int* offsets) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  int run = 0;
  for (int e = 0; e < experts; ++e) {
    offsets[e] = run;
    run += totals[e];
  }
  offsets[experts] = run;
}

__global__ void position_kernel(const int* expert, int entries, int experts, const int* chunk_base, const int* offsets,
                                int* position, int* source) {
  __shared__ int chunk_expert[kChunk];
  const int c = static_cast<int>(blockIdx.x);
  const int local = static_cast<int>(threadIdx.x);
  const int i = c * kChunk + local;
  chunk_expert[local] = i < entries ? expert[i] : -1;
  __syncthreads();
  if (i >= entries) return;
  const int e = chunk_expert[local];
  int rank = 0;
  for (int j = 0; j < local; ++j) rank += chunk_expert[j] == e ? 1 : 0;
  const int r = offsets[e] + chunk_base[static_cast<std::size_t>(c) * experts + e] + rank;
  position[i] = r;
  source[r] = i;
}

// One block per row; 16-byte copies when the row allows.
__global__ void gather_kernel(const bf16* x, const int* source, int k, int hidden, bf16* rows) {
  const int r = static_cast<int>(blockIdx.x);
  const bf16* src = x + static_cast<std::size_t>(source[r] / k) * hidden;
  bf16* dst = rows + static_cast<std::size_t>(r) * hidden;
  if (hidden % 8 == 0) {
    const uint4* s4 = reinterpret_cast<const uint4*>(src);
    uint4* d4 = reinterpret_cast<uint4*>(dst);
    for (int h = static_cast<int>(threadIdx.x); h < hidden / 8; h += static_cast<int>(blockDim.x)) d4[h] = s4[h];
  } else {
    for (int h = static_cast<int>(threadIdx.x); h < hidden; h += static_cast<int>(blockDim.x)) dst[h] = src[h];
  }
}

// Combine: one block per token, float accumulation in slot order (deterministic, as on the CPU).
__global__ void unpermute_kernel(const bf16* rows, const int* position, const float* weight, int hidden, int k,
                                 bf16* out) {
  const int t = static_cast<int>(blockIdx.x);
  for (int h = static_cast<int>(threadIdx.x); h < hidden; h += static_cast<int>(blockDim.x)) {
    float acc = 0.0f;
    for (int j = 0; j < k; ++j) {
      const std::size_t i = static_cast<std::size_t>(t) * k + j;
      acc += weight[i] * __bfloat162float(rows[static_cast<std::size_t>(position[i]) * hidden + h]);
    }
    out[static_cast<std::size_t>(t) * hidden + h] = __float2bfloat16(acc);
  }
}

// ---------------------------------------------------------------------------------------------
// The hand-written grouped GEMM: bf16 tensor cores through WMMA, one 64x64 output tile per
// block (four warps of 32x32), K in steps of 32 through shared memory, zero-padded edges.
// grid = (column tiles, row tiles of the largest expert, experts).

constexpr int kTileM = 64, kTileN = 64, kTileK = 32;
constexpr int kPadA = 8, kPadB = 8, kPadC = 4;  // keep WMMA pointers 32-byte aligned, ease bank conflicts

__global__ void __launch_bounds__(128) grouped_gemm_wmma(const bf16* a, const int* offsets, const bf16* w, int n,
                                                         int kdim, bf16* c) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  namespace wmma = nvcuda::wmma;
  __shared__ __align__(32) bf16 as[kTileM][kTileK + kPadA];
  __shared__ __align__(32) bf16 bs[kTileK][kTileN + kPadB];
  __shared__ __align__(32) float cs[kTileM][kTileN + kPadC];
  const int e = static_cast<int>(blockIdx.z);
  const int row0 = offsets[e] + static_cast<int>(blockIdx.y) * kTileM;
  const int row_end = offsets[e + 1];
  if (row0 >= row_end) return;
  const int col0 = static_cast<int>(blockIdx.x) * kTileN;
  const bf16* we = w + static_cast<std::size_t>(e) * kdim * n;
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / 32;
  const int wm = warp / 2, wn = warp % 2;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
  for (auto& row : acc)
    for (auto& f : row) wmma::fill_fragment(f, 0.0f);
  const bf16 zero = __float2bfloat16(0.0f);
  // 16-byte loads when rows are whole multiples of 8 elements (every real model shape); then a
  // run of 8 is either wholly inside the matrix or wholly outside.
  const bool vec = kdim % 8 == 0 && n % 8 == 0;
  const uint4 zero4 = make_uint4(0, 0, 0, 0);
  for (int k0 = 0; k0 < kdim; k0 += kTileK) {
    if (vec) {
      for (int idx = tid; idx < kTileM * kTileK / 8; idx += 128) {
        const int r = idx / (kTileK / 8), cc = idx % (kTileK / 8) * 8;
        const int gr = row0 + r, gk = k0 + cc;
        *reinterpret_cast<uint4*>(&as[r][cc]) =
            (gr < row_end && gk < kdim) ? *reinterpret_cast<const uint4*>(a + static_cast<std::size_t>(gr) * kdim + gk)
                                        : zero4;
      }
      for (int idx = tid; idx < kTileK * kTileN / 8; idx += 128) {
        const int r = idx / (kTileN / 8), cc = idx % (kTileN / 8) * 8;
        const int gk = k0 + r, gc = col0 + cc;
        *reinterpret_cast<uint4*>(&bs[r][cc]) =
            (gk < kdim && gc < n) ? *reinterpret_cast<const uint4*>(we + static_cast<std::size_t>(gk) * n + gc) : zero4;
      }
    } else {
      for (int idx = tid; idx < kTileM * kTileK; idx += 128) {
        const int r = idx / kTileK, cc = idx % kTileK;
        const int gr = row0 + r, gk = k0 + cc;
        as[r][cc] = (gr < row_end && gk < kdim) ? a[static_cast<std::size_t>(gr) * kdim + gk] : zero;
      }
      for (int idx = tid; idx < kTileK * kTileN; idx += 128) {
        const int r = idx / kTileN, cc = idx % kTileN;
        const int gk = k0 + r, gc = col0 + cc;
        bs[r][cc] = (gk < kdim && gc < n) ? we[static_cast<std::size_t>(gk) * n + gc] : zero;
      }
    }
    __syncthreads();
    for (int kk = 0; kk < kTileK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> fb[2];
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], &as[wm * 32 + 16 * i][kk], kTileK + kPadA);
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(fb[j], &bs[kk][wn * 32 + 16 * j], kTileN + kPadB);
      for (int i = 0; i < 2; ++i)
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();
  }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(&cs[wm * 32 + 16 * i][wn * 32 + 16 * j], acc[i][j], kTileN + kPadC, wmma::mem_row_major);
  __syncthreads();
  for (int idx = tid; idx < kTileM * kTileN; idx += 128) {
    const int r = idx / kTileN, cc = idx % kTileN;
    const int gr = row0 + r, gc = col0 + cc;
    if (gr < row_end && gc < n) c[static_cast<std::size_t>(gr) * n + gc] = __float2bfloat16(cs[r][cc]);
  }
#else
  // Built only for sm_80 and newer (cmake/cuda.cmake); bf16 WMMA needs them.
  (void)a, (void)offsets, (void)w, (void)n, (void)kdim, (void)c;
  __trap();
#endif
}

// Timing inputs are made on the device: filling gigabytes on the host would dominate calibration.
template <class T>
__global__ void fill_kernel(T* p, std::size_t n, unsigned long long seed) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    unsigned long long x = (i + 1) * 0x9E3779B97F4A7C15ULL ^ seed;  // splitmix64 finaliser
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBULL;
    x ^= x >> 31;
    const float v = static_cast<float>(static_cast<double>(x >> 40) * (2.0 / 16777216.0) - 1.0);  // [-1, 1)
    if constexpr (sizeof(T) == sizeof(float)) {
      p[i] = v;
    } else {
      p[i] = __float2bfloat16(v);
    }
  }
}

}  // namespace
}  // namespace moesim::kernels
