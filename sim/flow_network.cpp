#include "sim/flow_network.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <utility>
#include <limits>
#include <stdexcept>

#include "sim/huge_pages.hpp"
#include "sim/maxmin.hpp"

namespace moesim {
namespace {

TimeNs round_up_ns(double t) { return t <= 0.0 ? 0 : static_cast<TimeNs>(std::ceil(t)); }

// Flows whose ends fall within this relative distance of the earliest are retired together:
// in a symmetric exchange hundreds of flows end at the same instant up to rounding, and one
// re-share for all of them is both faster and what the exact model would do.
constexpr double kSameInstant = 1e-9;

// Flows by their end, ascending (end, flow id), as an indexed heap would give them, built for
// the exchanges of an all-to-all: up to millions of flows that mostly end in a few large
// batches. It starts without a heap, finding each batch (and the next end) by one pass over
// every flow's end: a symmetric exchange has only a few batches and never needs the heap. After
// kScans such passes it builds one; entries then go stale instead of moving (a flow's newest end
// is in `end_`), and a batch that would take many pops is found by one scan and sorted instead,
// and the heap rebuilt once.
class EndQueue {
 public:
  // Empties the queue for `flows` flows, keeping the memory.
  void reset(std::size_t flows) {
    reserve_huge(end_, flows);
    end_.assign(flows, kNone);
    heap_.clear();
    staged_.clear();
    live_ = 0;
    heap_on_ = false;
    scans_ = 0;
    min_ = std::numeric_limits<double>::infinity();
    min_valid_ = true;
  }
  void reserve_pushes(std::size_t n) {
    if (heap_on_) staged_.reserve(n);
  }
  // Sets a flow's end (takes effect at commit()).
  void set(int flow, double at) {
    double& e = end_[static_cast<std::size_t>(flow)];
    if (e == kNone) ++live_;
    if (heap_on_) {
      staged_.emplace_back(at, flow);
    } else if (at <= min_) {
      min_ = at;
    } else if (e == min_) {
      min_valid_ = false;  // the earliest end moved later
    }
    e = at;
  }
  void commit() {
    if (!heap_on_) return;
    if (heap_.size() + staged_.size() > 2 * live_ + 1024) {
      // Mostly stale: rebuild from the live ends.
      rebuild();
    } else if (staged_.size() * 4 > heap_.size()) {
      heap_.insert(heap_.end(), staged_.begin(), staged_.end());
      std::make_heap(heap_.begin(), heap_.end(), std::greater<>());
    } else {
      for (const auto& e : staged_) {
        heap_.push_back(e);
        std::push_heap(heap_.begin(), heap_.end(), std::greater<>());
      }
    }
    staged_.clear();
    drop_stale();
  }
  [[nodiscard]] bool empty() const { return live_ == 0; }
  [[nodiscard]] double top_key() {
    if (heap_on_) return heap_.front().first;
    if (!min_valid_) {
      min_ = std::numeric_limits<double>::infinity();
      for (double e : end_)
        if (e != kNone) min_ = std::min(min_, e);
      min_valid_ = true;
    }
    return min_;
  }
  // Removes every flow ending at or before `horizon` into `out`, in (end, id) order (a batch
  // that empties the queue may come in another order).
  void pop_through(double horizon, std::vector<std::pair<double, int>>& out) {
    out.clear();
    if (!heap_on_) {
      if (scans_ < kScans) {
        ++scans_;
        scan_through(horizon, out);
        return;
      }
      rebuild();
      heap_on_ = true;
    }
    // A batch holding a sizable share of many flows is cheaper found by one scan than by
    // popping: a sample at a fixed stride tells.
    if (live_ >= kSampleFrom) {
      const std::size_t stride = end_.size() / kSamples;
      std::size_t seen = 0, hits = 0;
      for (std::size_t i = 0; i < kSamples; ++i) {
        const double e = end_[i * stride];
        if (e == kNone) continue;
        ++seen;
        if (e <= horizon) ++hits;
      }
      if (hits > 0 && hits * 32 >= seen) {
        scan_through(horizon, out);
        return;
      }
    }
    const std::size_t pops = std::max<std::size_t>(1024, live_ / 16);
    while (live_ > 0 && heap_.front().first <= horizon) {
      if (out.size() == pops) {
        scan_through(horizon, out);
        return;
      }
      out.push_back(heap_.front());
      take_top();
    }
  }

 private:
  static constexpr double kNone = -1.0;  // not queued (ends are >= 0)
  static constexpr std::size_t kSampleFrom = 1 << 12, kSamples = 256, kScans = 8;
  [[nodiscard]] bool stale(const std::pair<double, int>& e) const {
    return end_[static_cast<std::size_t>(e.second)] != e.first;
  }
  void rebuild() {
    heap_.clear();
    for (std::size_t f = 0; f < end_.size(); ++f)
      if (end_[f] != kNone) heap_.emplace_back(end_[f], static_cast<int>(f));
    std::make_heap(heap_.begin(), heap_.end(), std::greater<>());
  }
  void take_top() {
    end_[static_cast<std::size_t>(heap_.front().second)] = kNone;
    --live_;
    std::pop_heap(heap_.begin(), heap_.end(), std::greater<>());
    heap_.pop_back();
    drop_stale();
  }
  void drop_stale() {
    while (!heap_.empty() && stale(heap_.front())) {
      std::pop_heap(heap_.begin(), heap_.end(), std::greater<>());
      heap_.pop_back();
    }
  }
  // Takes every end through `horizon` by one pass; in heap mode rebuilds the heap from the
  // rest, otherwise notes the earliest of the rest.
  void scan_through(double horizon, std::vector<std::pair<double, int>>& out) {
    const std::size_t popped = out.size();
    heap_.clear();
    double next = std::numeric_limits<double>::infinity();
    for (std::size_t f = 0; f < end_.size(); ++f) {
      const double e = end_[f];
      if (e == kNone) continue;
      if (e <= horizon) {
        out.emplace_back(e, static_cast<int>(f));
        end_[f] = kNone;
        --live_;
      } else if (heap_on_) {
        heap_.emplace_back(e, static_cast<int>(f));
      } else {
        next = std::min(next, e);
      }
    }
    // Scanned in id order: most batches of a symmetric exchange are sorted already. The last
    // batch is left in id order: nothing follows it whose result its order could reach.
    if (live_ > 0 && !std::is_sorted(out.begin() + static_cast<std::ptrdiff_t>(popped), out.end()))
      std::sort(out.begin() + static_cast<std::ptrdiff_t>(popped), out.end());
    if (heap_on_) {
      std::make_heap(heap_.begin(), heap_.end(), std::greater<>());
    } else {
      min_ = next;
      min_valid_ = true;
    }
  }
  std::vector<double> end_;
  std::vector<std::pair<double, int>> heap_, staged_;
  std::size_t live_ = 0;
  bool heap_on_ = false;
  std::size_t scans_ = 0;
  double min_ = std::numeric_limits<double>::infinity();
  bool min_valid_ = true;
};

// Per-thread scratch of simulate(): an exchange of a large cluster has millions of flows, and
// allocating (and page-faulting) their arrays afresh each call cost more than using them. The
// memory of the largest exchange so far stays with the thread (a run repeats its exchanges every
// layer, so the peak is the same; giving it back after each call made the 4,096-GPU benchmark
// take 6.2 s instead of 4.0 s).
// A flow's bytes left at `since`, drained at `rate` from then on (together: a re-share reads
// all three of each flow it changes).
struct Fluid {
  double left, rate, since;
};
struct Workspace {
  MaxMinSolver solver;
  EndQueue ends;
  std::vector<Fluid> fluid;
  MaxMinSolver::Snapshot first;  // the solver after the first update of its flows
  bool saved = false;
  std::vector<std::pair<double, int>> batch;
};
Workspace& workspace() {
  thread_local Workspace w;
  return w;
}

}  // namespace

FlowNetwork::FlowNetwork(const Cluster& cluster, double end_window)
    : cluster_(cluster), end_window_(end_window), analytical_(cluster) {
  if (!(end_window >= 0.0 && end_window <= 0.1)) throw std::invalid_argument("network: end_window out of [0, 0.1]");
  const ClusterGraph& g = cluster.graph();
  const int gpus = cluster.num_gpus();
  link_gbps_.assign(2 * static_cast<std::size_t>(cluster.num_edges()), 0.0);
  link_latency_ns_.assign(link_gbps_.size(), 0.0);
  for (auto [it, end] = boost::edges(g); it != end; ++it) {
    const EdgeProps& ep = g[*it];
    for (std::size_t k : {0, 1}) {
      link_gbps_[2 * static_cast<std::size_t>(ep.id) + k] = ep.gbps;
      link_latency_ns_[2 * static_cast<std::size_t>(ep.id) + k] = ep.latency_ns;
    }
  }
  // Bundle links: leaf b's uplinks together, up (2 b) and down (2 b + 1), when all of them have
  // the same bandwidth.
  bundle_base_ = static_cast<int>(link_gbps_.size());
  link_bundle_.assign(link_gbps_.size(), -1);
  const int bundles = cluster.num_bundles();
  bundle_uplinks_.assign(static_cast<std::size_t>(bundles), 0);
  std::vector<double> lo(static_cast<std::size_t>(bundles), std::numeric_limits<double>::infinity());
  std::vector<double> hi(static_cast<std::size_t>(bundles), 0.0);
  for (auto [it, end] = boost::edges(g); it != end; ++it) {
    const EdgeProps& ep = g[*it];
    if (ep.bundle < 0) continue;
    const auto b = static_cast<std::size_t>(ep.bundle);
    ++bundle_uplinks_[b];
    lo[b] = std::min(lo[b], ep.gbps);
    hi[b] = std::max(hi[b], ep.gbps);
    const auto leaf = cluster.bundle_leaf(ep.bundle);
    const bool from_leaf_is_lower = leaf == std::min(boost::source(*it, g), boost::target(*it, g));
    // Link 2 id runs from the lower-numbered vertex.
    link_bundle_[2 * static_cast<std::size_t>(ep.id)] = 2 * ep.bundle + (from_leaf_is_lower ? 0 : 1);
    link_bundle_[2 * static_cast<std::size_t>(ep.id) + 1] = 2 * ep.bundle + (from_leaf_is_lower ? 1 : 0);
  }
  // One leaf with uplinks of different bandwidths turns the bundle links off everywhere: a
  // message from a symmetric leaf into it would otherwise use its uplinks one by one beside
  // messages using them as a bundle.
  bool symmetric = true;
  for (int b = 0; b < bundles; ++b)
    symmetric = symmetric && lo[static_cast<std::size_t>(b)] == hi[static_cast<std::size_t>(b)];
  if (!symmetric) bundle_uplinks_.assign(bundle_uplinks_.size(), 0);
  bundles_on_ = symmetric && bundles > 0;
  for (int b = 0; b < bundles; ++b) {
    const double gbps = bundle_uplinks_[static_cast<std::size_t>(b)] > 0 ? cluster.bundle_gbps(b) : 0.0;
    link_gbps_.insert(link_gbps_.end(), 2, gbps);
    link_latency_ns_.insert(link_latency_ns_.end(), 2, 0.0);
  }
  bundled_.resize(static_cast<std::size_t>(gpus));
  to_host_.assign(static_cast<std::size_t>(gpus), -1);
  from_host_.assign(static_cast<std::size_t>(gpus), -1);
  for (int i = 0; i < gpus; ++i) {
    const int up = cluster.host_link(i);
    if (up < 0) continue;
    to_host_[static_cast<std::size_t>(i)] = up;
    from_host_[static_cast<std::size_t>(i)] = up ^ 1;
  }
}

std::span<const int> FlowNetwork::bundled_links(int src_gpu, int dst_gpu) const {
  auto& known = bundled_[static_cast<std::size_t>(src_gpu)];
  auto [at, added] = known.try_emplace(dst_gpu);
  std::vector<int>& out = at->second;
  if (added) {
    // Empty: the message's paths do not differ in the uplinks of one bundle only.
    const int paths = cluster_.route(src_gpu, dst_gpu).paths;
    const auto first = cluster_.path_links(src_gpu, dst_gpu, 0);
    bool ok = paths > 1;
    std::vector<int> seen;
    for (std::size_t k = 0; k < first.size() && ok; ++k) {
      bool same = true;
      for (int p = 1; p < paths; ++p) same = same && cluster_.path_links(src_gpu, dst_gpu, p)[k] == first[k];
      if (same) {
        out.push_back(first[k]);
        continue;
      }
      // Every path crosses a different uplink of the same leaf, in the same direction, and
      // together they are all of that leaf's uplinks, of one bandwidth.
      const int db = link_bundle_[static_cast<std::size_t>(first[k])];
      ok = db >= 0 && bundle_uplinks_[static_cast<std::size_t>(db / 2)] == paths;
      seen.clear();
      for (int p = 0; p < paths && ok; ++p) {
        const int l = cluster_.path_links(src_gpu, dst_gpu, p)[k];
        ok = link_bundle_[static_cast<std::size_t>(l)] == db && std::find(seen.begin(), seen.end(), l) == seen.end();
        seen.push_back(l);
      }
      out.push_back(bundle_base_ + db);
    }
    if (!ok) out.clear();
  }
  return {out.data(), out.size()};
}

std::size_t FlowNetwork::add_message(std::vector<Flow>& flows, int src_gpu, int dst_gpu, double bytes) const {
  const int paths = cluster_.route(src_gpu, dst_gpu).paths;
  if (paths > 1 && bundles_on_) {
    const auto links = bundled_links(src_gpu, dst_gpu);
    // In a symmetric fat tree every message with several paths differs only in the uplinks.
    if (links.empty())
      throw std::logic_error("network: a message's equal-cost paths differ outside the uplinks");
    flows.push_back(Flow{links, bytes});
    return 1;
  }
  const double share = bytes / paths;
  for (int p = 0; p < paths; ++p) flows.push_back(Flow{cluster_.path_links(src_gpu, dst_gpu, p), share});
  return static_cast<std::size_t>(paths);
}

void FlowNetwork::simulate(const std::vector<Flow>& flows, TimeNs bound_ns, std::vector<double>* finish) const {
  last_ = RunStats{};
  last_.flows = flows.size();
  const std::size_t n = flows.size();
  if (finish != nullptr) finish->assign(n, 0.0);
  if (flows.empty()) return;

  Workspace& w = workspace();
  MaxMinSolver& solver = w.solver;
  // Unused links need a capacity too.
  const auto capacity = [&](std::size_t l) { return link_gbps_[l] > 0.0 ? link_gbps_[l] : 1.0; };
  // The same links and flows as the exchange the solver last started (a run repeats each
  // exchange every layer): the first allocation depends on nothing else, so once seen twice in
  // a row it is saved, and restored from then on rather than solved again. An exchange unlike
  // the last one costs no copy.
  bool same_links = solver.num_links() == num_links();
  for (std::size_t l = 0; same_links && l < link_gbps_.size(); ++l)
    same_links = solver.capacity(static_cast<int>(l)) == capacity(l);
  bool same = same_links && solver.num_flows() == static_cast<int>(n);
  // Fluid state, from the start.
  std::vector<Fluid>& fluid = w.fluid;
  resize_huge(fluid, n);
  for (std::size_t i = 0; i < n; ++i) {
    const Flow& f = flows[i];
    for (int l : f.links) {
      if (!(link_gbps_[static_cast<std::size_t>(l)] > 0.0)) {
        throw std::logic_error("network: traffic on a link without bandwidth");
      }
    }
    if (same) same = std::ranges::equal(solver.links_of(static_cast<int>(i)), f.links);
    fluid[i] = Fluid{f.bytes, 0.0, 0.0};
  }
  const bool restore = same && w.saved, save = same && !w.saved;
  last_.restored = restore;
  if (!restore) {
    w.saved = false;
    if (same_links) {
      solver.clear_flows();
    } else {
      solver.reset();
      for (std::size_t l = 0; l < link_gbps_.size(); ++l) solver.add_link(capacity(l));
    }
    // Each flow has two links in most exchanges; the solver's arrays grow past that if needed.
    solver.reserve(n, 2 * n);
    for (const Flow& f : flows) solver.add_flow(f.links);
  }
  EndQueue& ends = w.ends;
  ends.reset(n);

  const double window = end_window_ * static_cast<double>(bound_ns);
  double now = 0.0;
  bool starting = true;
  const auto reshare = [&] {
    const std::vector<int>& changed = starting && restore ? solver.restore(w.first) : solver.update();
    if (starting && save) {
      solver.save(w.first);
      w.saved = true;
    }
    starting = false;
    ends.reserve_pushes(changed.size());
    for (int f : changed) {
      Fluid& x = fluid[static_cast<std::size_t>(f)];
      x.left = std::max(0.0, x.left - x.rate * (now - x.since));
      x.since = now;
      x.rate = solver.rate(f);
      if (!(x.rate > 0.0)) throw std::logic_error("network: a flow was left without bandwidth");
      ends.set(f, now + x.left / x.rate);
    }
    ends.commit();
  };
  std::vector<std::pair<double, int>>& batch = w.batch;
  reserve_huge(batch, n);
  double last_end = 0.0;
  reshare();
  while (!ends.empty()) {
    const double first = ends.top_key();
    const double horizon = std::max(first * (1.0 + kSameInstant), first + window);
    ends.pop_through(horizon, batch);
    const bool last = ends.empty();  // no re-share follows: the solver need not hear of it
    for (const auto& [at, f] : batch) {
      if (finish != nullptr) (*finish)[static_cast<std::size_t>(f)] = at;
      last_end = std::max(last_end, at);
      if (!last) solver.remove_flow(f);
    }
    if (last) break;
    now = batch.back().first;  // capacity is released at the last end of a batch: never early
    ++last_.events;
    reshare();
  }
  last_.resolved = solver.total_resolved();
  last_.bandwidth_ns = last_end;
}

TimeNs FlowNetwork::all_to_all_v(const std::vector<double>& bytes) const {
  const int g = cluster_.num_gpus();
  if (bytes.size() != static_cast<std::size_t>(g) * static_cast<std::size_t>(g)) {
    throw std::logic_error("network: all-to-all matrix is not GPUs x GPUs");
  }
  std::vector<int> all(static_cast<std::size_t>(g));
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int>(i);
  return all_to_all_v(bytes, all);
}

TimeNs FlowNetwork::all_to_all_v(const std::vector<double>& bytes, const std::vector<int>& gpus) const {
  const std::size_t n = gpus.size();
  if (bytes.size() != n * n) throw std::logic_error("network: all-to-all matrix is not group x group");
  PortLoad load(cluster_, false);
  thread_local std::vector<Flow> flows;  // kept: a large exchange has millions
  flows.clear();
  reserve_huge(flows, n * n);
  for (std::size_t s = 0; s < n; ++s) {
    for (std::size_t d = 0; d < n; ++d) {
      const double b = bytes[s * n + d];
      if (s == d || b <= 0.0) continue;
      load.add(gpus[s], gpus[d], b);
      (void)add_message(flows, gpus[s], gpus[d], b);
    }
  }
  const TimeNs bound = load.max_time();
  simulate(flows, bound, nullptr);  // the makespan is in last_
  const TimeNs t = std::max(round_up_ns(last_.bandwidth_ns), bound);
  if (t == 0) return 0;
  return t + load.exchange_latency();
}

CollectiveEstimate FlowNetwork::collective(Collective c, double bytes, const std::vector<int>& gpus) const {
  return analytical_.collective(c, bytes, gpus);
}

std::vector<TimeNs> FlowNetwork::transfers(const std::vector<Transfer>& ts) const {
  const int g = cluster_.num_gpus();
  const auto gn = static_cast<std::size_t>(g);
  PortLoad load(cluster_, true);
  std::vector<Flow> flows;
  std::vector<std::array<int, 2>> ends;  // GPUs each flow keeps busy (-1: none)
  for (const Transfer& t : ts) {
    if (t.bytes <= 0.0) continue;
    if (t.src.host && t.dst.host) throw std::logic_error("network: host-to-host transfers are not modelled");
    if (t.src.host) {
      const auto d = static_cast<std::size_t>(t.dst.index);
      load.add_host_copy(t.dst.index, false, t.bytes);
      flows.push_back(Flow{std::span<const int>(&from_host_[d], 1), t.bytes});
      ends.push_back({t.dst.index, -1});
      continue;
    }
    if (t.dst.host) {
      const auto s = static_cast<std::size_t>(t.src.index);
      load.add_host_copy(t.src.index, true, t.bytes);
      flows.push_back(Flow{std::span<const int>(&to_host_[s], 1), t.bytes});
      ends.push_back({t.src.index, -1});
      continue;
    }
    if (t.src.index == t.dst.index) continue;
    load.add(t.src.index, t.dst.index, t.bytes);
    const std::size_t parts = add_message(flows, t.src.index, t.dst.index, t.bytes);
    ends.insert(ends.end(), parts, {t.src.index, t.dst.index});
  }
  for (const Flow& f : flows) {
    if (f.links.empty() || f.links[0] < 0) throw std::logic_error("network: a GPU without a host link copies to the host");
  }
  // Per GPU only its own ports bound it: an oversubscribed bundle bounds the last of the
  // messages crossing it, not each GPU's.
  std::vector<TimeNs> bound(gn, 0);
  for (std::size_t i = 0; i < gn; ++i) bound[i] = load.gpu_time(static_cast<int>(i), false);
  std::vector<double> finish;
  simulate(flows, *std::max_element(bound.begin(), bound.end()), &finish);
  std::vector<double> last(gn, 0.0);
  for (std::size_t i = 0; i < flows.size(); ++i) {
    for (int e : ends[i]) {
      if (e >= 0) last[static_cast<std::size_t>(e)] = std::max(last[static_cast<std::size_t>(e)], finish[i]);
    }
  }
  std::vector<TimeNs> out(gn, 0);
  for (std::size_t i = 0; i < gn; ++i) {
    TimeNs t = std::max(round_up_ns(last[i]), bound[i]);
    if (t > 0) t += load.gpu_latency(static_cast<int>(i));
    out[i] = t;
  }
  return out;
}

}  // namespace moesim
