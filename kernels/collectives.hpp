#pragma once
// Collectives for `moesim calibrate --collectives`: all-reduce (sum) and all-to-all over the GPUs
// of one machine through NCCL (kernels/nccl_collectives.cu, built as the module
// libmoesim_nccl.so, loaded only when asked for), and their CPU twin over N in-memory ranks: the
// reference the NCCL results are checked against, and what runs and is tested without a GPU.
//
// Sizes follow nccl-tests (doc/PERFORMANCE.md): `bytes` is the per-rank buffer. All-reduce sums
// `bytes` on every rank; all-to-all sends bytes / ranks to each rank (itself included) and
// receives as much from each.
//
// This header is also compiled by nvcc (C++17): no C++20 here.
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "kernels/kernels.hpp"

namespace moesim::kernels {

enum class CollectiveOp { AllReduce, AllToAll };
enum class CollectiveDtype { F32, BF16 };

[[nodiscard]] inline const char* to_string(CollectiveOp op) {
  return op == CollectiveOp::AllReduce ? "all_reduce" : "all_to_all";
}
[[nodiscard]] inline const char* to_string(CollectiveDtype d) {
  return d == CollectiveDtype::F32 ? "fp32" : "bf16";
}
[[nodiscard]] inline std::size_t element_bytes(CollectiveDtype d) {
  return d == CollectiveDtype::F32 ? 4 : 2;
}

// ---------------------------------------------------------------------------------------------
// The CPU twin. `in` holds one buffer per rank, all of `count` elements.
//
// All-reduce (sum): out[r][i] = in[0][i] + in[1][i] + ... + in[N-1][i], added in rank order, for
// every rank r. Throws std::invalid_argument when the buffers differ in size.
void all_reduce_sum(const std::vector<const float*>& in, std::size_t count, const std::vector<float*>& out);
// All-to-all: each buffer is N blocks of count / N elements; block s of rank r's output is
// block r of rank s's input (ncclSend/ncclRecv of block p to and from rank p, as nccl-tests'
// alltoall). Throws std::invalid_argument when count is not a multiple of N.
void all_to_all(const std::vector<const float*>& in, std::size_t count, const std::vector<float*>& out);
// The same on vectors, returning the outputs.
[[nodiscard]] std::vector<std::vector<float>> all_reduce_sum(const std::vector<std::vector<float>>& in);
[[nodiscard]] std::vector<std::vector<float>> all_to_all(const std::vector<std::vector<float>>& in);

// nccl-tests' bus bandwidth (doc/PERFORMANCE.md, github.com/NVIDIA/nccl-tests), GB/s (1e9 B/s):
// algbw = bytes / time; all-reduce busbw = algbw x 2(n-1)/n, all-to-all busbw = algbw x (n-1)/n.
// 0 for one rank or a non-positive time.
[[nodiscard]] double collective_bus_gbps(CollectiveOp op, double bytes, double time_ns, int ranks);

// ---------------------------------------------------------------------------------------------
struct CollectiveDeviceInfo {
  std::string name;     // device 0's name (every distinct one, when they differ); the CPU model on the CPU
  int ranks = 0;        // GPUs (or in-memory ranks on the CPU)
  std::string nccl;     // NCCL library version, e.g. "2.28.9" ("" on the CPU)
  std::string driver;   // CUDA driver version ("" on the CPU)
  std::string toolkit;  // CUDA runtime the module was built with
};

class CollectiveBackend {
 public:
  virtual ~CollectiveBackend() = default;
  [[nodiscard]] virtual std::string name() const = 0;  // "nccl" | "cpu"
  [[nodiscard]] virtual CollectiveDeviceInfo info() const = 0;
  [[nodiscard]] virtual int ranks() const = 0;
  // The largest per-rank `bytes` that time() can allocate (a send and a receive buffer per rank).
  [[nodiscard]] virtual std::size_t max_bytes() const = 0;
  // One collective on host inputs, one buffer per rank (values converted to `dtype` on the way
  // in, back to float on the way out). Returns one output buffer per rank.
  [[nodiscard]] virtual std::vector<std::vector<float>> run(CollectiveOp op, CollectiveDtype dtype,
                                                            const std::vector<std::vector<float>>& in) = 0;
  // Times `op` on `bytes` per rank (inputs made up by the backend): `warmup` untimed calls, then
  // timed ones. Returns one duration per timed call, in nanoseconds.
  [[nodiscard]] virtual std::vector<double> time(CollectiveOp op, CollectiveDtype dtype, std::size_t bytes,
                                                 const TimingOptions& opt) = 0;
};

// The CPU twin as a backend over `ranks` in-memory ranks (timed with the wall clock; computes in
// fp32 whatever the dtype asked, on buffers of `bytes`).
[[nodiscard]] std::unique_ptr<CollectiveBackend> make_cpu_collectives(int ranks);
// NCCL over the first `gpus` visible GPUs (0: all of them), one communicator per GPU in this
// process (ncclCommInitAll). Null when it cannot be used; `why_not` then says why: "no CUDA
// device: ..." without a device, or that this build has no NCCL.
[[nodiscard]] std::unique_ptr<CollectiveBackend> make_nccl_collectives(int gpus, std::string* why_not);

// Runs `op` once on `b` with made-up inputs of `elements_per_rank` each and compares every
// output element with the CPU twin's. Inputs are small integers, exact in bf16 and fp32 and in
// their sums whatever order NCCL adds them in, so a correct result matches exactly.
struct CollectiveCheck {
  std::size_t elements = 0;    // compared, over all ranks
  std::size_t mismatches = 0;  // elements that differ
  std::string first;           // the first mismatch, "" when none
};
[[nodiscard]] CollectiveCheck check_collective(CollectiveBackend& b, CollectiveOp op, CollectiveDtype dtype,
                                               std::size_t elements_per_rank);

// Entry point of the NCCL module (C linkage, looked up with dlsym). Writes a reason into `err`
// and returns null when it cannot be used.
using NcclCollectivesFactory = CollectiveBackend* (*)(int gpus, char* err, std::size_t err_size);
inline constexpr const char* kNcclFactorySymbol = "moesim_nccl_collectives_create";

}  // namespace moesim::kernels
