// NCCL all-reduce and all-to-all over the GPUs of this machine, one process (kernels/collectives.hpp),
// built as the module libmoesim_nccl.so (cmake/cuda.cmake) and loaded by make_nccl_collectives()
// only for `moesim calibrate --collectives` and the NCCL tests. Without NCCL at build time
// (MOESIM_HAVE_NCCL unset) the module still builds and its factory says so.
//
// One communicator per GPU (ncclCommInitAll), one stream per GPU, every rank's call issued from
// this thread inside ncclGroupStart/ncclGroupEnd. All-to-all is one ncclSend and one ncclRecv per
// peer in a group, as NCCL documents it (docs: "Point-to-point communication", all-to-all) and as
// nccl-tests' alltoall does.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/collectives.hpp"

#ifdef MOESIM_HAVE_NCCL
#include <cuda_bf16.h>
#include <nccl.h>

namespace moesim::kernels {
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA: ") + what + ": " + cudaGetErrorString(e));
}
void check(ncclResult_t r, const char* what) {
  if (r != ncclSuccess) throw std::runtime_error(std::string("NCCL: ") + what + ": " + ncclGetErrorString(r));
}

std::string nccl_version_string() {
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess) return "";
  // NCCL_VERSION(X,Y,Z) = X*10000 + Y*100 + Z since 2.9 (X*1000 + Y*100 + Z before).
  if (v >= 20900)
    return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
  return std::to_string(v / 1000) + "." + std::to_string(v / 100 % 10) + "." + std::to_string(v % 100);
}

std::string cuda_version_string(int v) {
  return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

// One device buffer on a given GPU.
class DevMem {
 public:
  DevMem() = default;
  DevMem(int dev, std::size_t bytes) : dev_(dev), bytes_(bytes) {
    if (bytes_ == 0) return;
    check(cudaSetDevice(dev_), "cudaSetDevice");
    check(cudaMalloc(&p_, bytes_), "cudaMalloc");
  }
  DevMem(const DevMem&) = delete;
  DevMem& operator=(const DevMem&) = delete;
  DevMem(DevMem&& o) noexcept : p_(o.p_), dev_(o.dev_), bytes_(o.bytes_) { o.p_ = nullptr; }
  DevMem& operator=(DevMem&&) = delete;
  ~DevMem() {
    if (p_ != nullptr) {
      cudaSetDevice(dev_);
      cudaFree(p_);
    }
  }
  [[nodiscard]] void* get() const { return p_; }
  [[nodiscard]] char* bytes_at(std::size_t off) const { return static_cast<char*>(p_) + off; }

 private:
  void* p_ = nullptr;
  int dev_ = 0;
  std::size_t bytes_ = 0;
};

class NcclCollectives final : public CollectiveBackend {
 public:
  explicit NcclCollectives(int gpus) {
    int count = 0;
    check(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
    const int n = gpus > 0 ? std::min(gpus, count) : count;
    if (gpus > count)
      throw std::runtime_error("asked for " + std::to_string(gpus) + " GPUs (--ranks) but only " +
                               std::to_string(count) + (count == 1 ? " is" : " are") + " visible");
    for (int d = 0; d < n; ++d) devs_.push_back(d);
    comms_.resize(devs_.size());
    streams_.resize(devs_.size());
    check(ncclCommInitAll(comms_.data(), n, devs_.data()), "ncclCommInitAll");
    inited_ = true;
    for (std::size_t r = 0; r < devs_.size(); ++r) {
      check(cudaSetDevice(devs_[r]), "cudaSetDevice");
      check(cudaStreamCreateWithFlags(&streams_[r], cudaStreamNonBlocking), "cudaStreamCreate");
    }
    info_.ranks = n;
    info_.nccl = nccl_version_string();
    int drv = 0, rt = 0;
    if (cudaDriverGetVersion(&drv) == cudaSuccess) info_.driver = "CUDA " + cuda_version_string(drv);
    if (cudaRuntimeGetVersion(&rt) == cudaSuccess) info_.toolkit = "CUDA runtime " + cuda_version_string(rt);
    std::vector<std::string> names;
    for (int d : devs_) {
      cudaDeviceProp p{};
      check(cudaGetDeviceProperties(&p, d), "cudaGetDeviceProperties");
      if (std::find(names.begin(), names.end(), std::string(p.name)) == names.end())
        names.emplace_back(p.name);
    }
    for (const auto& s : names) info_.name += (info_.name.empty() ? "" : " + ") + s;
  }
  NcclCollectives(const NcclCollectives&) = delete;
  NcclCollectives& operator=(const NcclCollectives&) = delete;
  ~NcclCollectives() override {
    for (std::size_t r = 0; r < streams_.size(); ++r) {
      if (streams_[r] == nullptr) continue;
      cudaSetDevice(devs_[r]);
      cudaStreamSynchronize(streams_[r]);
      cudaStreamDestroy(streams_[r]);
    }
    if (inited_)
      for (ncclComm_t c : comms_) ncclCommDestroy(c);
  }

  [[nodiscard]] std::string name() const override { return "nccl"; }
  [[nodiscard]] CollectiveDeviceInfo info() const override { return info_; }
  [[nodiscard]] int ranks() const override { return static_cast<int>(devs_.size()); }

  // A send and a receive buffer of `bytes` per GPU, within 3/4 of the least free memory.
  [[nodiscard]] std::size_t max_bytes() const override {
    std::size_t least = 0;
    for (std::size_t r = 0; r < devs_.size(); ++r) {
      std::size_t free_bytes = 0, total_bytes = 0;
      if (cudaSetDevice(devs_[r]) != cudaSuccess || cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess)
        return 0;
      least = r == 0 ? free_bytes : std::min(least, free_bytes);
    }
    return least / 4 * 3 / 2;
  }

  [[nodiscard]] std::vector<std::vector<float>> run(CollectiveOp op, CollectiveDtype dtype,
                                                    const std::vector<std::vector<float>>& in) override {
    if (in.size() != devs_.size())
      throw std::invalid_argument("NCCL collectives: " + std::to_string(in.size()) + " buffers for " +
                                  std::to_string(devs_.size()) + " ranks");
    const std::size_t count = in[0].size(), es = element_bytes(dtype);
    for (const auto& b : in)
      if (b.size() != count) throw std::invalid_argument("NCCL collectives: buffers differ in size");
    Buffers buf = allocate(count * es);
    for (std::size_t r = 0; r < devs_.size(); ++r) {
      std::vector<char> host = encode(in[r], dtype);
      check(cudaSetDevice(devs_[r]), "cudaSetDevice");
      if (count > 0)
        check(cudaMemcpy(buf.send[r].get(), host.data(), host.size(), cudaMemcpyHostToDevice), "upload");
    }
    enqueue(op, dtype, count, buf);
    synchronize();
    std::vector<std::vector<float>> out(devs_.size());
    for (std::size_t r = 0; r < devs_.size(); ++r) {
      std::vector<char> host(count * es);
      check(cudaSetDevice(devs_[r]), "cudaSetDevice");
      if (count > 0)
        check(cudaMemcpy(host.data(), buf.recv[r].get(), host.size(), cudaMemcpyDeviceToHost), "download");
      out[r] = decode(host, dtype);
    }
    return out;
  }

  [[nodiscard]] std::vector<double> time(CollectiveOp op, CollectiveDtype dtype, std::size_t bytes,
                                         const TimingOptions& opt) override {
    const std::size_t es = element_bytes(dtype);
    std::size_t count = bytes / es;
    if (op == CollectiveOp::AllToAll) count -= count % devs_.size();
    Buffers buf = allocate(count * es);
    for (std::size_t r = 0; r < devs_.size(); ++r) {
      check(cudaSetDevice(devs_[r]), "cudaSetDevice");
      if (count > 0) check(cudaMemsetAsync(buf.send[r].get(), 0, count * es, streams_[r]), "cudaMemsetAsync");
    }
    // Warm-up: NCCL sets up its connections and buffers on the first calls.
    for (int i = 0; i < std::max(1, opt.warmup); ++i) enqueue(op, dtype, count, buf);
    synchronize();
    // Each timed call is bracketed by events on every rank's stream, calls queued back to back;
    // a call's time is the longest of the ranks' (no rank can finish before every rank joined).
    // Repetitions: opt.reps, cut to what fits opt.budget_s by the warm-up's pace, at least min_reps.
    int reps = std::max(1, opt.reps);
    {
      Events probe(devs_, 2);
      probe.record(0, streams_);
      enqueue(op, dtype, count, buf);
      probe.record(1, streams_);
      synchronize();
      const double one_ns = probe.longest(0);
      if (one_ns > 0) {
        const int fit = static_cast<int>(std::min(1e6, opt.budget_s * 1e9 / one_ns));
        reps = std::max(std::min(reps, fit), std::min(reps, std::max(1, opt.min_reps)));
      }
    }
    Events ev(devs_, reps + 1);
    ev.record(0, streams_);
    for (int i = 0; i < reps; ++i) {
      enqueue(op, dtype, count, buf);
      ev.record(i + 1, streams_);
    }
    synchronize();
    std::vector<double> samples;
    for (int i = 0; i < reps; ++i) samples.push_back(std::max(1.0, ev.longest(i)));
    return samples;
  }

 private:
  struct Buffers {
    std::vector<DevMem> send, recv;
  };

  // Events per rank: ev[r][i] on rank r's device.
  class Events {
   public:
    Events(const std::vector<int>& devs, int per_rank) : devs_(devs) {
      ev_.resize(devs.size());
      for (std::size_t r = 0; r < devs.size(); ++r) {
        check(cudaSetDevice(devs[r]), "cudaSetDevice");
        ev_[r].assign(static_cast<std::size_t>(per_rank), nullptr);
        for (auto& e : ev_[r]) check(cudaEventCreate(&e), "cudaEventCreate");
      }
    }
    Events(const Events&) = delete;
    Events& operator=(const Events&) = delete;
    ~Events() {
      for (std::size_t r = 0; r < ev_.size(); ++r) {
        cudaSetDevice(devs_[r]);
        for (auto& e : ev_[r])
          if (e != nullptr) cudaEventDestroy(e);
      }
    }
    void record(int i, const std::vector<cudaStream_t>& streams) {
      for (std::size_t r = 0; r < ev_.size(); ++r) {
        check(cudaSetDevice(devs_[r]), "cudaSetDevice");
        check(cudaEventRecord(ev_[r][static_cast<std::size_t>(i)], streams[r]), "cudaEventRecord");
      }
    }
    // The longest of the ranks' times from event i to event i + 1, ns.
    [[nodiscard]] double longest(int i) const {
      double out = 0;
      for (std::size_t r = 0; r < ev_.size(); ++r) {
        float ms = 0.0f;
        check(cudaSetDevice(devs_[r]), "cudaSetDevice");
        check(cudaEventElapsedTime(&ms, ev_[r][static_cast<std::size_t>(i)],
                                   ev_[r][static_cast<std::size_t>(i) + 1]),
              "cudaEventElapsedTime");
        out = std::max(out, static_cast<double>(ms) * 1e6);
      }
      return out;
    }

   private:
    std::vector<int> devs_;
    std::vector<std::vector<cudaEvent_t>> ev_;
  };

  Buffers allocate(std::size_t bytes) {
    Buffers b;
    for (int d : devs_) {
      b.send.emplace_back(d, bytes);
      b.recv.emplace_back(d, bytes);
    }
    return b;
  }

  static std::vector<char> encode(const std::vector<float>& v, CollectiveDtype dtype) {
    std::vector<char> out(v.size() * element_bytes(dtype));
    if (dtype == CollectiveDtype::F32) {
      if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
      return out;
    }
    for (std::size_t i = 0; i < v.size(); ++i) {
      const __nv_bfloat16 h = __float2bfloat16(v[i]);
      std::memcpy(out.data() + 2 * i, &h, 2);
    }
    return out;
  }
  static std::vector<float> decode(const std::vector<char>& raw, CollectiveDtype dtype) {
    const std::size_t n = raw.size() / element_bytes(dtype);
    std::vector<float> out(n);
    if (dtype == CollectiveDtype::F32) {
      if (n > 0) std::memcpy(out.data(), raw.data(), raw.size());
      return out;
    }
    for (std::size_t i = 0; i < n; ++i) {
      __nv_bfloat16 h;
      std::memcpy(&h, raw.data() + 2 * i, 2);
      out[i] = __bfloat162float(h);
    }
    return out;
  }

  void enqueue(CollectiveOp op, CollectiveDtype dtype, std::size_t count, const Buffers& b) {
    const ncclDataType_t t = dtype == CollectiveDtype::F32 ? ncclFloat32 : ncclBfloat16;
    const std::size_t n = devs_.size(), es = element_bytes(dtype);
    check(ncclGroupStart(), "ncclGroupStart");
    try {
      for (std::size_t r = 0; r < n; ++r) {
        if (op == CollectiveOp::AllReduce) {
          check(ncclAllReduce(b.send[r].get(), b.recv[r].get(), count, t, ncclSum, comms_[r], streams_[r]),
                "ncclAllReduce");
          continue;
        }
        const std::size_t block = count / n;
        for (std::size_t p = 0; p < n; ++p) {
          check(ncclSend(b.send[r].bytes_at(p * block * es), block, t, static_cast<int>(p), comms_[r],
                         streams_[r]),
                "ncclSend");
          check(ncclRecv(b.recv[r].bytes_at(p * block * es), block, t, static_cast<int>(p), comms_[r],
                         streams_[r]),
                "ncclRecv");
        }
      }
    } catch (...) {
      ncclGroupEnd();
      throw;
    }
    check(ncclGroupEnd(), "ncclGroupEnd");
  }

  void synchronize() {
    for (std::size_t r = 0; r < devs_.size(); ++r) {
      check(cudaSetDevice(devs_[r]), "cudaSetDevice");
      check(cudaStreamSynchronize(streams_[r]), "cudaStreamSynchronize");
    }
  }

  std::vector<int> devs_;
  std::vector<ncclComm_t> comms_;
  std::vector<cudaStream_t> streams_;
  bool inited_ = false;
  CollectiveDeviceInfo info_;
};

}  // namespace
}  // namespace moesim::kernels
#endif  // MOESIM_HAVE_NCCL

extern "C" __attribute__((visibility("default"))) moesim::kernels::CollectiveBackend*
moesim_nccl_collectives_create(int gpus, char* err, std::size_t err_size) {
#ifndef MOESIM_HAVE_NCCL
  (void)gpus;
  std::snprintf(
      err, err_size,
      "this build has no NCCL collectives: nccl.h and libnccl were not found under the CUDA toolkit when "
      "it was configured (see docs/calibration.md)");
  return nullptr;
#else
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    std::snprintf(err, err_size, "no CUDA device: cudaGetDeviceCount failed: %s", cudaGetErrorString(e));
    return nullptr;
  }
  if (count == 0) {
    std::snprintf(err, err_size, "no CUDA device: cudaGetDeviceCount found 0 devices");
    return nullptr;
  }
  try {
    return new moesim::kernels::NcclCollectives(gpus);
  } catch (const std::exception& ex) {
    std::snprintf(err, err_size, "%s", ex.what());
    return nullptr;
  }
#endif
}
