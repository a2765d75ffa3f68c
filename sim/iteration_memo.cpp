// IterationModel's memos: times that depend only on shapes (a GEMM's token count, a collective's
// kind, bytes and members), kept across iterations, and the scratch run() reuses.
#include <algorithm>
#include <cstring>

#include "sim/iteration.hpp"

namespace moesim {

TimeNs IterationModel::expert_fwd_memo(std::int64_t tokens) {
  // Bounded: counts beyond it (rare, and each a few look-ups) are computed every time.
  constexpr std::int64_t kMemoTokens = std::int64_t{1} << 18;
  if (!memo_expert_fwd_ || tokens <= 0 || tokens >= kMemoTokens) return expert_fwd_ns(tokens);
  const auto i = static_cast<std::size_t>(tokens);
  if (i >= expert_fwd_memo_.size()) expert_fwd_memo_.resize(std::max(i + 1, 2 * expert_fwd_memo_.size()), -1);
  TimeNs& t = expert_fwd_memo_[i];
  if (t < 0) t = expert_fwd_ns(tokens);
  return t;
}

std::size_t IterationModel::CollectiveKeyHash::operator()(const CollectiveKey& k) const {
  // FNV-1a style mixing of the kind, the bytes' value (0.0 and -0.0 alike) and the members.
  std::uint64_t h = 1469598103934665603ULL ^ static_cast<std::uint64_t>(k.kind);
  const double b = k.bytes == 0.0 ? 0.0 : k.bytes;
  std::uint64_t bits = 0;
  std::memcpy(&bits, &b, sizeof bits);
  h = (h ^ bits) * 1099511628211ULL;
  for (int g : k.gpus) h = (h ^ static_cast<std::uint32_t>(g)) * 1099511628211ULL;
  return static_cast<std::size_t>(h ^ (h >> 29));
}

TimeNs IterationModel::collective_ns(Collective kind, double bytes, const std::vector<int>& gpus) {
  constexpr std::size_t kMemoBound = 1 << 16;
  // The look-up key is a scratch key whose vector keeps its capacity between calls: a hit
  // (nearly every call after the first iteration) allocates nothing. One per thread, as
  // compare --jobs runs models on several threads.
  static thread_local CollectiveKey key;
  key.kind = static_cast<int>(kind);
  key.bytes = bytes;
  key.gpus.assign(gpus.begin(), gpus.end());
  auto it = collective_memo_.find(key);
  if (it == collective_memo_.end()) {
    if (collective_memo_.size() >= kMemoBound) {
      collective_memo_.clear();
      ++memo_generation_;
    }
    it = collective_memo_.emplace(key, network_.collective(kind, bytes, gpus).time_ns).first;
  }
  return it->second;
}

TimeNs IterationModel::op_ns(OpTimes& m, std::size_t i, const CollectiveOp& op) {
  const auto restart = [&] {
    if (m.memo_generation == memo_generation_) return;
    m.memo_generation = memo_generation_;
    m.kinds.assign(m.kinds.size(), -1);
  };
  restart();
  const int kind = static_cast<int>(op.kind);
  if (i < m.kinds.size() && m.kinds[i] == kind && m.bytes[i] == op.bytes && m.gpus[i] == op.gpus)
    return m.ns[i];
  const TimeNs t = collective_ns(op.kind, op.bytes, op.gpus);
  restart();  // the look-up may have cleared the memo: only this entry is in it then
  if (i >= m.kinds.size()) {
    m.kinds.resize(i + 1, -1);
    m.bytes.resize(i + 1);
    m.gpus.resize(i + 1);
    m.ns.resize(i + 1);
  }
  m.kinds[i] = kind;
  m.bytes[i] = op.bytes;
  m.gpus[i] = op.gpus;
  m.ns[i] = t;
  return t;
}

void IterationModel::LayerCost::clear() {
  for (std::vector<TimeNs>* v : {&dispatch_ns, &combine_ns, &expert_ns, &dispatch_chunk_ns, &combine_chunk_ns,
                                 &expert_chunk_ns, &etp_ag_ns, &etp_rs_ns, &etp_ag_chunk_ns, &etp_rs_chunk_ns,
                                 &back_dispatch_ns, &back_dispatch_chunk_ns})
    v->clear();
  for (std::vector<double>* v : {&dispatch_bytes, &combine_bytes, &etp_bytes, &back_dispatch_bytes})
    v->clear();
  for (std::vector<std::vector<double>>* v :
       {&dispatch_peer_bytes, &combine_peer_bytes, &back_dispatch_peer_bytes})
    v->clear();
}

}  // namespace moesim
