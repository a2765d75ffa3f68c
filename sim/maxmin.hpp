#pragma once
// Max-min fair sharing of link bandwidth among flows (progressive filling), updated
// incrementally.
//
// The allocation is certified by the bottleneck property (Bertsekas & Gallager, Data Networks,
// 6.5.2): rates are max-min fair iff they fit the capacities and every flow has a bottleneck,
// a full link on its path where no flow gets more (or it runs at its own cap). A change can only
// break that certificate for flows on the links whose load changed, so update() re-solves
// (progressive filling with every other flow held at its rate) only the added flows, the flows
// sharing a link with them, and the flows that relied on a link that lost a flow and no longer
// hold a bottleneck. After each re-solve it checks the certificate again where the re-solved
// flows changed a link (it stopped being full, or one of them now gets the most on it) and grows
// the set by the flows found broken or held down there; once the set holds most active flows it
// takes them all. The set never leaves the changed flows' connected component, and is often far
// smaller: in an all-to-all, a finished flow's spare bandwidth usually cannot be used by the
// other flows on its links, each still held by another full link, and nothing is re-solved.
//
// Units: capacities and rates in GB/s (any consistent unit works). Deterministic: the result
// depends only on the sequence of calls; ties go to the lowest link index.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <utility>
#include <vector>

namespace moesim {

// Binary min-heap over ids 0..n-1, each present at most once, ordered by (key, id); a key
// change moves the entry in place, so no stale entries pile up.
class IndexedMinHeap {
 public:
  explicit IndexedMinHeap(std::size_t ids = 0) : pos_(ids, kNone), key_(ids, 0.0) {}
  void grow(std::size_t ids) {
    pos_.resize(ids, kNone);
    key_.resize(ids, 0.0);
  }
  [[nodiscard]] bool empty() const { return heap_.empty(); }
  [[nodiscard]] bool contains(int id) const { return pos_[static_cast<std::size_t>(id)] != kNone; }
  [[nodiscard]] int top() const { return heap_.front(); }
  [[nodiscard]] double top_key() const { return key_[static_cast<std::size_t>(heap_.front())]; }
  // Inserts `id` or changes its key.
  void set(int id, double key);
  void pop() { erase(heap_.front()); }
  void erase(int id);
  void clear();
  // Forgets every id but keeps the memory.
  void reset() {
    heap_.clear();
    pos_.clear();
    key_.clear();
  }

 private:
  static constexpr std::size_t kNone = static_cast<std::size_t>(-1);
  [[nodiscard]] bool before(int a, int b) const {
    const double ka = key_[static_cast<std::size_t>(a)], kb = key_[static_cast<std::size_t>(b)];
    return ka < kb || (ka == kb && a < b);
  }
  void place(std::size_t i, int id) {
    heap_[i] = id;
    pos_[static_cast<std::size_t>(id)] = i;
  }
  void up(std::size_t i);
  void down(std::size_t i);
  std::vector<int> heap_;
  std::vector<std::size_t> pos_;
  std::vector<double> key_;
};

// Lists of entries, one per link, in one array (CSR with room to grow): an exchange's first
// update lays every list out at once with room for its flows, so filling them writes one block
// instead of thousands of separately allocated ones. A full list moves to the end with twice
// the room; the array is compacted once holes make up most of it. Each list keeps the order of
// its pushes and swap-removals, as one vector per list would.
template <class E>
class ListArena {
 public:
  // Forgets every list but keeps the memory.
  void clear() {
    begin_.clear();
    size_.clear();
    room_.clear();
    used_ = holes_ = 0;
  }
  void add_list() {
    begin_.push_back(used_);
    size_.push_back(0);
    room_.push_back(0);
  }
  [[nodiscard]] std::span<E> of(std::size_t l) { return {arena_.data() + begin_[l], size_[l]}; }
  [[nodiscard]] std::span<const E> of(std::size_t l) const { return {arena_.data() + begin_[l], size_[l]}; }
  [[nodiscard]] std::size_t size(std::size_t l) const { return size_[l]; }
  void push(std::size_t l, const E& e) {
    if (size_[l] == room_[l]) move_to_end(l, std::max<std::size_t>(4, 2 * room_[l]));
    arena_[begin_[l] + size_[l]++] = e;
  }
  void pop_back(std::size_t l) { --size_[l]; }
  // Keeps the lists, each empty.
  void empty_all() {
    std::fill(begin_.begin(), begin_.end(), std::size_t{0});
    std::fill(size_.begin(), size_.end(), std::size_t{0});
    std::fill(room_.begin(), room_.end(), std::size_t{0});
    used_ = holes_ = 0;
  }
  // Becomes a copy of `o`, reusing this one's memory.
  void copy_from(const ListArena& o);
  // Every list empty, with room for counts[l] entries (the lists must be empty already).
  void lay_out(std::span<const int> counts);

 private:
  void move_to_end(std::size_t l, std::size_t room);
  void grow_to(std::size_t n);
  std::vector<E> arena_;  // never shrinks: its size is the memory, used_ the part in use
  std::vector<std::size_t> begin_, size_, room_;
  std::size_t used_ = 0, holes_ = 0;
};

class MaxMinSolver {
  enum class State : std::uint8_t { Pending, Active, Removed };
  struct LinkEntry {
    int flow;
    int slot;  // index of this link in the flow's link list
  };

 public:
  static constexpr double kNoCap = std::numeric_limits<double>::infinity();

  // `tolerance`: relative slack used when checking saturation and equal shares, well above the
  // rounding of the sums involved and well below any difference that matters.
  explicit MaxMinSolver(double tolerance = 1e-9);

  // A link of `capacity` > 0; returns its id (0, 1, ...).
  int add_link(double capacity);
  // A flow over distinct existing links (at least one, or a finite cap), at most `cap`; returns
  // its id (0, 1, ...). Its rate is 0 until the next update().
  int add_flow(std::span<const int> links, double cap = kNoCap);
  // Room for `flows` more flows crossing `link_entries` links in all (a speed hint).
  void reserve(std::size_t flows, std::size_t link_entries);
  // Removes an active or pending flow; its links are freed at the next update().
  void remove_flow(int flow);

  // Applies the pending additions and removals and recomputes the rates they may affect.
  // Returns the active flows whose rate changed (added flows included), in a deterministic order.
  const std::vector<int>& update();

  // Forgets every link and flow but keeps the memory, so that one solver serves many exchanges
  // without allocating (and page-faulting) its arrays again.
  void reset();
  // Forgets every flow but keeps the links: the same state as reset() and add_link() of each
  // link again, without rebuilding the per-link arrays (an exchange among a few GPUs of a large
  // cluster has far fewer flows than the cluster has links).
  void clear_flows();
  // The first update() from no active flows takes a leaner path (no certificate to repair, no
  // candidate lists to build) with bit-identical rates and sums; off only to test against the
  // general path.
  void set_fresh_path(bool on) { fresh_path_ = on; }

  // What an update left, to go back to: a run repeats each exchange every layer, and the same
  // links and flows give the same allocation whatever the bytes. Stamps are left out: every
  // pass takes a new one before it reads them, so their values never reach a result.
  class Snapshot {
    friend class MaxMinSolver;
    ListArena<LinkEntry> on_link_;
    std::vector<double> usage_, max_, max_before_, rem_;
    std::vector<char> max_exact_, sat_before_, raised_;
    std::vector<int> unfrozen_, cnt_, pos_, changed_;
    std::vector<std::size_t> csr_;
    std::vector<double> rate_;
    std::vector<State> state_;
    std::size_t left_ = 0, active_ = 0, last_resolved_ = 0;
    std::uint64_t total_resolved_ = 0;
  };
  // Saves the state the last update() left (nothing may be pending).
  void save(Snapshot& s) const;
  // Goes back to a state save() took while the solver had the same links, capacities and flows
  // (their links and caps) as now: the caller checks. Returns what that update() returned.
  const std::vector<int>& restore(const Snapshot& s);

  [[nodiscard]] double rate(int flow) const { return rate_[static_cast<std::size_t>(flow)]; }
  [[nodiscard]] bool active(int flow) const { return state_[static_cast<std::size_t>(flow)] == State::Active; }
  [[nodiscard]] int num_links() const { return static_cast<int>(cap_.size()); }
  [[nodiscard]] int num_flows() const { return static_cast<int>(state_.size()); }
  [[nodiscard]] double capacity(int link) const { return cap_[static_cast<std::size_t>(link)]; }
  // Sum of the active flows' rates on a link (as of the last update()).
  [[nodiscard]] double load(int link) const { return usage_[static_cast<std::size_t>(link)]; }
  [[nodiscard]] std::span<const int> links_of(int flow) const {
    const auto f = static_cast<std::size_t>(flow);
    return {links_.data() + off_[f], off_[f + 1] - off_[f]};
  }
  // Flows re-solved by the last update() and since construction (to observe incrementality).
  [[nodiscard]] std::size_t last_resolved() const { return last_resolved_; }
  [[nodiscard]] std::uint64_t total_resolved() const { return total_resolved_; }

 private:
  void forget_flows();
  void attach(int flow);
  void detach(int flow);
  // The largest rate on a link, exact: rescanned only after a decrease may have lowered it.
  [[nodiscard]] double link_max(int link);
  [[nodiscard]] bool saturated(int link) const;
  [[nodiscard]] bool certified(int flow);
  void solve(const std::vector<int>& flows);
  const std::vector<int>& update_fresh();
  void fill_fresh();
  // The starting set of an update: added flows with every flow sharing a link with them.
  void collect_added(std::vector<int>& set);
  void freeze(int flow, double r);
  // Brings the top link's key up to date (keys only lag behind by going up) and returns the
  // share it offers, never below `level` (rounding in the subtractions could make it dip);
  // infinity when no link is left.
  [[nodiscard]] double settle_top_share(double level);
  void set_rate(int flow, double r);
  [[nodiscard]] std::uint32_t next_stamp();
  [[nodiscard]] bool in_set(int flow) const { return in_set_[static_cast<std::size_t>(flow)] == set_stamp_; }
  void add_to_set(int flow, std::vector<int>& set);
  // Flows outside the set on `link` that may have relied on it (they had its largest rate
  // before) and no longer hold a bottleneck.
  void collect_broken(int link, double max_before, std::vector<int>& out);

  double tol_;
  // Links.
  std::vector<double> cap_;
  ListArena<LinkEntry> on_link_;
  std::vector<double> usage_;  // sum of the rates, kept up to date incrementally
  std::vector<double> max_;    // largest rate; an upper bound while max_exact_ is 0
  std::vector<char> max_exact_;
  std::vector<std::uint32_t> link_stamp_;
  // Flows: links flattened, [off_[f], off_[f+1]).
  std::vector<std::size_t> off_{0};
  std::vector<int> links_;
  std::vector<int> pos_;  // index of the flow in on_link_[links_[i]]
  std::vector<double> rate_;
  // Caps of flows 0 .. size-1 (kNoCap where none); a flow past the end has none. Most
  // exchanges cap no flow: the array stays empty instead of holding a value per flow.
  std::vector<double> fcap_;
  [[nodiscard]] double cap_of(std::size_t f) const { return f < fcap_.size() ? fcap_[f] : kNoCap; }
  std::vector<State> state_;
  std::vector<std::uint32_t> in_set_;
  std::vector<std::uint32_t> flow_stamp_;
  std::uint32_t set_stamp_ = 0;
  std::uint32_t stamp_ = 0;  // shared by link_stamp_ and flow_stamp_ passes

  std::vector<int> pending_add_;
  std::vector<int> pending_remove_;
  std::vector<int> changed_;

  // Per-link scratch of one update or solve pass (valid for the links it marks).
  std::vector<char> sat_before_;
  std::vector<double> max_before_;
  std::vector<char> raised_;     // a re-solved flow now gets more than max_before_
  std::vector<double> rem_;      // capacity left to the unfrozen flows of the set
  std::vector<int> unfrozen_;    // unfrozen flows of the set on the link
  std::vector<std::size_t> csr_;  // start of the link's set flows in cand_
  std::vector<int> cnt_;
  // Scratch of solve().
  std::vector<int> cand_;
  std::vector<double> old_rate_;
  IndexedMinHeap heap_;  // links by the equal share of what is left
  std::vector<int> touched_;
  std::vector<int> scan_;
  std::vector<std::pair<double, int>> capped_;
  std::size_t left_ = 0;
  std::size_t active_ = 0;  // flows in State::Active
  bool fresh_path_ = true;
  std::vector<int> set_;  // update_fresh()'s set

  std::size_t last_resolved_ = 0;
  std::uint64_t total_resolved_ = 0;
};

}  // namespace moesim
