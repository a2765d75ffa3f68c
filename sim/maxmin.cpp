#include "sim/maxmin.hpp"

#include "sim/huge_pages.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace moesim {
namespace {
constexpr std::size_t kAhead = 16;  // prefetch distance, in list entries
}  // namespace

void IndexedMinHeap::set(int id, double key) {
  const auto i = static_cast<std::size_t>(id);
  key_[i] = key;
  if (pos_[i] == kNone) {
    pos_[i] = heap_.size();
    heap_.push_back(id);
    up(pos_[i]);
  } else {
    up(pos_[i]);
    down(pos_[i]);
  }
}

void IndexedMinHeap::erase(int id) {
  const std::size_t i = pos_[static_cast<std::size_t>(id)];
  pos_[static_cast<std::size_t>(id)] = kNone;
  const int last = heap_.back();
  heap_.pop_back();
  if (i == heap_.size()) return;  // it was the last entry
  place(i, last);
  up(i);
  down(pos_[static_cast<std::size_t>(last)]);
}

void IndexedMinHeap::clear() {
  for (int id : heap_) pos_[static_cast<std::size_t>(id)] = kNone;
  heap_.clear();
}

void IndexedMinHeap::up(std::size_t i) {
  const int id = heap_[i];
  while (i > 0) {
    const std::size_t p = (i - 1) / 2;
    if (!before(id, heap_[p])) break;
    place(i, heap_[p]);
    i = p;
  }
  place(i, id);
}

void IndexedMinHeap::down(std::size_t i) {
  const int id = heap_[i];
  const std::size_t n = heap_.size();
  for (;;) {
    std::size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && before(heap_[c + 1], heap_[c])) ++c;
    if (!before(heap_[c], id)) break;
    place(i, heap_[c]);
    i = c;
  }
  place(i, id);
}

template <class E>
void ListArena<E>::grow_to(std::size_t n) {
  if (n <= arena_.size()) return;
  if (n > arena_.capacity()) {
    // Moved into a fresh block, advised before it is touched; the old contents copied after.
    std::vector<E> bigger;
    reserve_huge(bigger, std::max(n, 2 * arena_.capacity()));
    bigger.assign(arena_.begin(), arena_.end());
    arena_.swap(bigger);
  }
  arena_.resize(n);
}

template <class E>
void ListArena<E>::move_to_end(std::size_t l, std::size_t room) {
  if (holes_ > 4096 && 2 * holes_ > used_) {
    // Mostly holes: pack every list in link order, each with its room.
    std::vector<E> packed;
    reserve_huge(packed, std::max(arena_.size(), used_ - holes_ + room));
    for (std::size_t k = 0; k < begin_.size(); ++k) {
      const std::size_t at = packed.size();
      packed.insert(packed.end(), arena_.begin() + static_cast<std::ptrdiff_t>(begin_[k]),
                    arena_.begin() + static_cast<std::ptrdiff_t>(begin_[k] + size_[k]));
      packed.resize(at + room_[k]);
      begin_[k] = at;
    }
    used_ = packed.size();
    holes_ = 0;
    packed.resize(std::max(packed.size(), arena_.size()));
    arena_.swap(packed);
  }
  grow_to(used_ + room);
  std::copy_n(arena_.begin() + static_cast<std::ptrdiff_t>(begin_[l]), size_[l],
              arena_.begin() + static_cast<std::ptrdiff_t>(used_));
  holes_ += room_[l];
  begin_[l] = used_;
  room_[l] = room;
  used_ += room;
}

template <class E>
void ListArena<E>::lay_out(std::span<const int> counts) {
  std::size_t at = 0;
  for (std::size_t l = 0; l < begin_.size(); ++l) {
    begin_[l] = at;
    size_[l] = 0;
    room_[l] = static_cast<std::size_t>(counts[l]);
    at += room_[l];
  }
  used_ = at;
  holes_ = 0;
  grow_to(used_);
}

MaxMinSolver::MaxMinSolver(double tolerance) : tol_(tolerance) {
  if (!(tolerance >= 0.0 && tolerance < 1e-3)) throw std::invalid_argument("maxmin: tolerance out of [0, 1e-3)");
}

std::uint32_t MaxMinSolver::next_stamp() {
  if (++stamp_ == 0) {  // wrapped: forget every old mark
    std::fill(link_stamp_.begin(), link_stamp_.end(), 0U);
    std::fill(flow_stamp_.begin(), flow_stamp_.end(), 0U);
    stamp_ = 1;
  }
  return stamp_;
}

int MaxMinSolver::add_link(double capacity) {
  if (!(capacity > 0.0) || !std::isfinite(capacity)) throw std::invalid_argument("maxmin: link capacity must be > 0");
  on_link_.add_list();
  cap_.push_back(capacity);
  usage_.push_back(0.0);
  max_.push_back(0.0);
  max_exact_.push_back(1);
  link_stamp_.push_back(0);
  sat_before_.push_back(0);
  max_before_.push_back(0.0);
  raised_.push_back(0);
  rem_.push_back(0.0);
  unfrozen_.push_back(0);
  csr_.push_back(0);
  cnt_.push_back(0);
  heap_.grow(cap_.size());
  return num_links() - 1;
}

void MaxMinSolver::reserve(std::size_t flows, std::size_t link_entries) {
  reserve_huge(links_, links_.size() + link_entries);
  reserve_huge(pos_, links_.size() + link_entries);
  reserve_huge(off_, off_.size() + flows);
  reserve_huge(rate_, rate_.size() + flows);
  reserve_huge(state_, state_.size() + flows);
  reserve_huge(pending_add_, pending_add_.size() + flows);
  reserve_huge(in_set_, state_.size() + flows);
  reserve_huge(flow_stamp_, state_.size() + flows);
  reserve_huge(changed_, state_.size() + flows);
}

int MaxMinSolver::add_flow(std::span<const int> links, double cap) {
  if (!(cap > 0.0)) throw std::invalid_argument("maxmin: flow cap must be > 0");
  if (links.empty() && !std::isfinite(cap)) throw std::invalid_argument("maxmin: a flow needs a link or a cap");
  for (std::size_t i = 0; i < links.size(); ++i) {
    if (links[i] < 0 || links[i] >= num_links()) throw std::out_of_range("maxmin: no such link");
    for (std::size_t j = 0; j < i; ++j) {
      if (links[j] == links[i]) throw std::invalid_argument("maxmin: a flow crosses a link twice");
    }
  }
  const int f = num_flows();
  links_.insert(links_.end(), links.begin(), links.end());  // pos_ follows at update()
  off_.push_back(links_.size());
  rate_.push_back(0.0);
  if (std::isfinite(cap)) {
    fcap_.resize(static_cast<std::size_t>(f), kNoCap);
    fcap_.push_back(cap);
  }
  state_.push_back(State::Pending);
  pending_add_.push_back(f);
  return f;
}

void MaxMinSolver::remove_flow(int flow) {
  if (flow < 0 || flow >= num_flows()) throw std::out_of_range("maxmin: no such flow");
  if (state_[static_cast<std::size_t>(flow)] == State::Removed) throw std::logic_error("maxmin: flow removed twice");
  pending_remove_.push_back(flow);
}

void MaxMinSolver::attach(int flow) {
  const auto f = static_cast<std::size_t>(flow);
  for (std::size_t i = off_[f]; i < off_[f + 1]; ++i) {
    const auto l = static_cast<std::size_t>(links_[i]);
    pos_[i] = static_cast<int>(on_link_.size(l));
    on_link_.push(l, LinkEntry{flow, static_cast<int>(i - off_[f])});
  }
}

void MaxMinSolver::detach(int flow) {
  const auto f = static_cast<std::size_t>(flow);
  for (std::size_t i = off_[f]; i < off_[f + 1]; ++i) {
    const auto l = static_cast<std::size_t>(links_[i]);
    const std::span<LinkEntry> list = on_link_.of(l);
    const auto p = static_cast<std::size_t>(pos_[i]);
    const LinkEntry last = list.back();
    list[p] = last;
    pos_[off_[static_cast<std::size_t>(last.flow)] + static_cast<std::size_t>(last.slot)] = static_cast<int>(p);
    on_link_.pop_back(l);
  }
}

double MaxMinSolver::link_max(int link) {
  const auto l = static_cast<std::size_t>(link);
  if (!max_exact_[l]) {
    // Rescanning anyway: refresh the running sum too, so rounding never accumulates.
    double sum = 0.0, mx = 0.0;
    for (const LinkEntry& e : on_link_.of(l)) {
      const double r = rate_[static_cast<std::size_t>(e.flow)];
      sum += r;
      mx = std::max(mx, r);
    }
    usage_[l] = sum;
    max_[l] = mx;
    max_exact_[l] = 1;
  }
  return max_[l];
}

void MaxMinSolver::set_rate(int flow, double r) {
  const auto f = static_cast<std::size_t>(flow);
  const double old = rate_[f];
  if (r == old) return;
  for (int link : links_of(flow)) {
    const auto l = static_cast<std::size_t>(link);
    usage_[l] += r - old;
    if (r > max_[l]) {
      max_[l] = r;  // still exact if it was
    } else if (r < old && old >= max_[l] * (1.0 - tol_)) {
      max_exact_[l] = 0;  // the largest rate may have gone down
    }
  }
  rate_[f] = r;
}

bool MaxMinSolver::saturated(int link) const {
  const auto l = static_cast<std::size_t>(link);
  return usage_[l] >= cap_[l] * (1.0 - tol_);
}

bool MaxMinSolver::certified(int flow) {
  const double r = rate_[static_cast<std::size_t>(flow)];
  if (r >= cap_of(static_cast<std::size_t>(flow)) * (1.0 - tol_)) return true;
  for (int l : links_of(flow)) {
    if (saturated(l) && r >= link_max(l) * (1.0 - tol_)) return true;
  }
  return false;
}

void MaxMinSolver::add_to_set(int flow, std::vector<int>& set) {
  in_set_[static_cast<std::size_t>(flow)] = set_stamp_;
  set.push_back(flow);
}

void MaxMinSolver::collect_broken(int link, double max_before, std::vector<int>& out) {
  for (const LinkEntry& e : on_link_.of(static_cast<std::size_t>(link))) {
    const auto h = static_cast<std::size_t>(e.flow);
    if (in_set(e.flow) || flow_stamp_[h] == stamp_ || rate_[h] < max_before * (1.0 - tol_)) continue;
    flow_stamp_[h] = stamp_;
    if (!certified(e.flow)) out.push_back(e.flow);
  }
}

double MaxMinSolver::settle_top_share(double level) {
  while (!heap_.empty()) {
    const int top = heap_.top();
    const auto ti = static_cast<std::size_t>(top);
    if (unfrozen_[ti] == 0) {
      heap_.pop();
      continue;
    }
    const double share = rem_[ti] / unfrozen_[ti];
    if (share <= heap_.top_key()) break;
    heap_.set(top, share);
  }
  if (heap_.empty()) return std::numeric_limits<double>::infinity();
  const auto t = static_cast<std::size_t>(heap_.top());
  return std::max(rem_[t] / unfrozen_[t], level);
}

void MaxMinSolver::freeze(int flow, double r) {
  rate_[static_cast<std::size_t>(flow)] = r;
  flow_stamp_[static_cast<std::size_t>(flow)] = stamp_;
  --left_;
  for (int l : links_of(flow)) {
    const auto li = static_cast<std::size_t>(l);
    rem_[li] = std::max(0.0, rem_[li] - r);
    --unfrozen_[li];
    // The link's heap key is left as it is: freezing a flow at the current level never lowers
    // a link's share, so the key stays a lower bound, refreshed when it reaches the top.
  }
}

// Progressive filling of `flows` while every other flow keeps its rate: raise all unfrozen
// flows together; the link whose equal share of what is left is lowest saturates first and
// freezes its flows at that share (or a flow reaches its cap first). Records, per link the set
// crosses, whether it was saturated and its largest rate before, and whether a re-solved flow
// now exceeds that.
void MaxMinSolver::solve(const std::vector<int>& flows) {
  const std::uint32_t st = next_stamp();
  touched_.clear();
  capped_.clear();
  for (int f : flows) {
    for (int l : links_of(f)) {
      const auto li = static_cast<std::size_t>(l);
      if (link_stamp_[li] != st) {
        link_stamp_[li] = st;
        cnt_[li] = 0;
        touched_.push_back(l);
      }
      ++cnt_[li];
    }
    const double c = cap_of(static_cast<std::size_t>(f));
    if (std::isfinite(c)) capped_.emplace_back(c, f);
  }
  // The set's flows per link, contiguous in cand_.
  std::size_t pos = 0;
  for (int l : touched_) {
    const auto li = static_cast<std::size_t>(l);
    csr_[li] = pos;
    pos += static_cast<std::size_t>(cnt_[li]);
    unfrozen_[li] = cnt_[li];
    cnt_[li] = 0;
  }
  cand_.resize(pos);
  for (int f : flows) {
    for (int l : links_of(f)) {
      const auto li = static_cast<std::size_t>(l);
      cand_[csr_[li] + static_cast<std::size_t>(cnt_[li]++)] = f;
    }
  }
  std::sort(capped_.begin(), capped_.end());
  heap_.clear();  // empty already unless a previous solve threw
  for (int l : touched_) {
    const auto li = static_cast<std::size_t>(l);
    max_before_[li] = link_max(l);
    sat_before_[li] = saturated(l) ? 1 : 0;
    raised_[li] = 0;
    // What the flows outside the set leave.
    double r = cap_[li] - usage_[li];
    for (std::size_t i = csr_[li]; i < csr_[li] + static_cast<std::size_t>(unfrozen_[li]); ++i) {
      r += rate_[static_cast<std::size_t>(cand_[i])];
    }
    rem_[li] = std::max(0.0, r);
    heap_.set(l, rem_[li] / unfrozen_[li]);
  }
  old_rate_.resize(flows.size());
  for (std::size_t i = 0; i < flows.size(); ++i) old_rate_[i] = rate_[static_cast<std::size_t>(flows[i])];

  left_ = flows.size();
  std::size_t ci = 0;
  double level = 0.0;
  const auto frozen = [&](int f) { return flow_stamp_[static_cast<std::size_t>(f)] == st; };
  while (left_ > 0) {
    const double link_share = settle_top_share(level);
    while (ci < capped_.size() && frozen(capped_[ci].second)) ++ci;
    const double cap_share = ci < capped_.size() ? capped_[ci].first : std::numeric_limits<double>::infinity();
    if (!std::isfinite(link_share) && !std::isfinite(cap_share)) throw std::logic_error("maxmin: unbounded flow");
    if (cap_share <= link_share) {
      level = std::max(level, cap_share);
      freeze(capped_[ci].second, cap_share);
      continue;
    }
    const int l = heap_.top();
    const auto li = static_cast<std::size_t>(l);
    heap_.pop();
    level = link_share;
    const std::size_t end = csr_[li] + static_cast<std::size_t>(cnt_[li]);
    for (std::size_t i = csr_[li]; i < end; ++i) {
      if (!frozen(cand_[i])) freeze(cand_[i], level);
    }
    unfrozen_[li] = 0;
  }
  // Commit: the running sums and maxima follow each rate change.
  for (std::size_t i = 0; i < flows.size(); ++i) {
    const int f = flows[i];
    const double r = rate_[static_cast<std::size_t>(f)];
    rate_[static_cast<std::size_t>(f)] = old_rate_[i];
    set_rate(f, r);
    for (int l : links_of(f)) {
      if (r > max_before_[static_cast<std::size_t>(l)] * (1.0 + tol_)) raised_[static_cast<std::size_t>(l)] = 1;
    }
  }
}

void MaxMinSolver::collect_added(std::vector<int>& set) {
  const std::uint32_t whole = next_stamp();  // links whose every flow is in the set
  for (int f : pending_add_) {
    if (state_[static_cast<std::size_t>(f)] != State::Active) continue;
    if (!in_set(f)) add_to_set(f, set);  // covers a flow with no links
    for (int l : links_of(f)) {
      if (link_stamp_[static_cast<std::size_t>(l)] == whole) continue;
      link_stamp_[static_cast<std::size_t>(l)] = whole;
      for (const LinkEntry& e : on_link_.of(static_cast<std::size_t>(l))) {
        if (!in_set(e.flow)) add_to_set(e.flow, set);
      }
    }
  }
}

const std::vector<int>& MaxMinSolver::update() {
  // Marks of the flows added since, sized here at once rather than per flow.
  in_set_.resize(state_.size(), 0U);
  flow_stamp_.resize(state_.size(), 0U);
  pos_.resize(links_.size());  // set by attach()
  if (fresh_path_ && active_ == 0) return update_fresh();
  changed_.clear();
  last_resolved_ = 0;
  std::vector<int> dirty;
  {
    const std::uint32_t st = next_stamp();
    for (int f : pending_remove_) {
      const auto fi = static_cast<std::size_t>(f);
      if (state_[fi] == State::Active) {
        for (int l : links_of(f)) {
          const auto li = static_cast<std::size_t>(l);
          if (link_stamp_[li] == st) continue;
          link_stamp_[li] = st;
          dirty.push_back(l);
          max_before_[li] = link_max(l);
          sat_before_[li] = saturated(l) ? 1 : 0;
        }
        set_rate(f, 0.0);
        detach(f);
        --active_;
      }
      state_[fi] = State::Removed;
    }
    for (int f : pending_add_) {
      const auto fi = static_cast<std::size_t>(f);
      if (state_[fi] != State::Pending) continue;  // removed before it was ever solved
      attach(f);
      state_[fi] = State::Active;
      ++active_;
    }
  }

  // The starting set: added flows with every flow sharing a link with them (those may have to
  // give way), and flows that relied on a link that lost a flow and no longer hold a bottleneck.
  if (++set_stamp_ == 0) {
    std::fill(in_set_.begin(), in_set_.end(), 0U);
    set_stamp_ = 1;
  }
  std::vector<int> set;
  collect_added(set);
  const std::uint32_t whole = stamp_;  // collect_added's: links whose every flow is in the set
  std::vector<int> broken;
  for (int l : dirty) {
    if (link_stamp_[static_cast<std::size_t>(l)] == whole || !sat_before_[static_cast<std::size_t>(l)]) continue;
    collect_broken(l, max_before_[static_cast<std::size_t>(l)], broken);
  }
  for (int f : broken) {
    if (!in_set(f)) add_to_set(f, set);
  }
  // Rates before, to report what changed; added flows always count as changed.
  const std::uint32_t added = next_stamp();
  for (int f : pending_add_) flow_stamp_[static_cast<std::size_t>(f)] = added;
  std::vector<double> before;
  before.reserve(set.size());
  for (int f : set) {
    const auto fi = static_cast<std::size_t>(f);
    before.push_back(flow_stamp_[fi] == added ? -1.0 : rate_[fi]);
  }
  pending_add_.clear();
  pending_remove_.clear();

  std::vector<int> bad_inside;
  while (!set.empty()) {
    solve(set);
    total_resolved_ += set.size();
    // Flows outside the set lose their bottleneck only on a link the set crosses that stopped
    // being full, or where a re-solved flow now gets more than they do.
    (void)next_stamp();
    broken.clear();
    for (int l : touched_) {
      const auto li = static_cast<std::size_t>(l);
      if ((sat_before_[li] && !saturated(l)) || raised_[li]) collect_broken(l, max_before_[li], broken);
    }
    bad_inside.clear();
    for (int f : set) {
      if (!certified(f)) bad_inside.push_back(f);
    }
    const std::size_t old_size = set.size();
    // An outside flow without a bottleneck can grow: re-solve it.
    for (int f : broken) add_to_set(f, set);
    // A re-solved flow without a bottleneck is held down by outside flows that get more on a
    // full link it shares with them: re-solve those too.
    // Each full link is scanned once, against the lowest rate it holds down.
    const std::uint32_t st = next_stamp();
    scan_.clear();
    for (int f : bad_inside) {
      const double r = rate_[static_cast<std::size_t>(f)];
      for (int l : links_of(f)) {
        const auto li = static_cast<std::size_t>(l);
        if (!saturated(l)) continue;
        if (link_stamp_[li] != st) {
          link_stamp_[li] = st;
          scan_.push_back(l);
          rem_[li] = r;  // solve()'s scratch, free again: the threshold
        } else {
          rem_[li] = std::min(rem_[li], r);
        }
      }
    }
    for (int l : scan_) {
      const double r = rem_[static_cast<std::size_t>(l)];
      for (const LinkEntry& e : on_link_.of(static_cast<std::size_t>(l))) {
        if (!in_set(e.flow) && rate_[static_cast<std::size_t>(e.flow)] > r) add_to_set(e.flow, set);
      }
    }
    if (set.size() == old_size) break;  // certified (or no progress possible at this precision)
    // Once the set holds most flows, more rounds cost more than re-solving every flow at once.
    if (2 * set.size() > active_) {
      for (std::size_t f = 0; f < state_.size(); ++f) {
        if (state_[f] == State::Active && !in_set(static_cast<int>(f))) add_to_set(static_cast<int>(f), set);
      }
    }
    for (std::size_t i = old_size; i < set.size(); ++i) before.push_back(rate_[static_cast<std::size_t>(set[i])]);
  }
  last_resolved_ = set.size();
  for (std::size_t i = 0; i < set.size(); ++i) {
    if (rate_[static_cast<std::size_t>(set[i])] != before[i]) changed_.push_back(set[i]);
  }
  return changed_;
}

// From no active flows (an exchange's first update): every added flow is re-solved. These are the
// general path's steps in its order wherever the order reaches a result (the set's order fixes
// the order of each link's sum of rates), without what a solve from empty never needs: candidate
// lists (every flow on a touched link is in the set), old rates, and the certificate repair,
// which finds nothing to add when no active flow lies outside the set.
const std::vector<int>& MaxMinSolver::update_fresh() {
  changed_.clear();
  for (int f : pending_remove_) state_[static_cast<std::size_t>(f)] = State::Removed;  // none was active
  // No list holds a flow: lay them out with room for exactly the flows added.
  std::fill(cnt_.begin(), cnt_.end(), 0);
  for (int f : pending_add_) {
    if (state_[static_cast<std::size_t>(f)] != State::Pending) continue;
    for (int l : links_of(f)) ++cnt_[static_cast<std::size_t>(l)];
  }
  on_link_.lay_out(cnt_);
  for (int f : pending_add_) {
    const auto fi = static_cast<std::size_t>(f);
    if (state_[fi] != State::Pending) continue;
    attach(f);
    state_[fi] = State::Active;
    ++active_;
  }
  // The set is every active flow; all of it changed (added flows always count). Reported in id
  // order, which the caller walks through its own per-flow arrays far faster than the set's.
  if (active_ > 0) fill_fresh();
  for (int f : pending_add_) {
    if (state_[static_cast<std::size_t>(f)] == State::Active) changed_.push_back(f);
  }
  pending_add_.clear();
  pending_remove_.clear();
  total_resolved_ += active_;
  last_resolved_ = active_;
  return changed_;
}

// solve() for a set holding every active flow, each at rate 0.
void MaxMinSolver::fill_fresh() {
  capped_.clear();
  for (std::size_t f = 0; f < fcap_.size(); ++f) {
    if (state_[f] == State::Active && std::isfinite(fcap_[f])) capped_.emplace_back(fcap_[f], static_cast<int>(f));
  }
  std::sort(capped_.begin(), capped_.end());
  heap_.clear();
  for (std::size_t li = 0; li < cap_.size(); ++li) {
    if (on_link_.size(li) == 0) continue;
    const int l = static_cast<int>(li);
    (void)link_max(l);  // as solve(): a rescan also refreshes the running sum
    unfrozen_[li] = static_cast<int>(on_link_.size(li));
    rem_[li] = std::max(0.0, cap_[li] - usage_[li]);
    heap_.set(l, rem_[li] / unfrozen_[li]);
  }
  // Unfrozen flows carry rate -1 (every flow is in the set): the check reads the line that
  // freezing writes anyway, one cache miss fewer per flow than a stamp.
  for (std::size_t f = 0; f < state_.size(); ++f) {
    if (state_[f] == State::Active) rate_[f] = -1.0;
  }
  left_ = active_;
  std::size_t ci = 0;
  double level = 0.0;
  const auto frozen = [&](int f) { return rate_[static_cast<std::size_t>(f)] >= 0.0; };
  const auto freeze_at = [&](int f, double r) {
    rate_[static_cast<std::size_t>(f)] = r;
    --left_;
    for (int fl : links_of(f)) {
      const auto li = static_cast<std::size_t>(fl);
      rem_[li] = std::max(0.0, rem_[li] - r);  // as freeze()
      --unfrozen_[li];
    }
  };
  while (left_ > 0) {
    const double link_share = settle_top_share(level);
    while (ci < capped_.size() && frozen(capped_[ci].second)) ++ci;
    const double cap_share = ci < capped_.size() ? capped_[ci].first : std::numeric_limits<double>::infinity();
    if (!std::isfinite(link_share) && !std::isfinite(cap_share)) throw std::logic_error("maxmin: unbounded flow");
    if (cap_share <= link_share) {
      level = std::max(level, cap_share);
      freeze_at(capped_[ci].second, cap_share);
      continue;
    }
    const int l = heap_.top();
    const auto li = static_cast<std::size_t>(l);
    heap_.pop();
    level = link_share;
    // Flows frozen at one level all subtract the same value, so their order changes no sum.
    const std::span<const LinkEntry> list = std::as_const(on_link_).of(li);
    for (std::size_t i = 0; i < list.size(); ++i) {
      // A NIC's incoming flows lie far apart in memory: fetch ahead (a flow's link list once
      // its offset has arrived).
      if (i + 2 * kAhead < list.size()) {
        const auto ahead = static_cast<std::size_t>(list[i + 2 * kAhead].flow);
        __builtin_prefetch(&off_[ahead]);
        __builtin_prefetch(&rate_[ahead], 1);
      }
      if (i + kAhead < list.size()) __builtin_prefetch(&links_[off_[static_cast<std::size_t>(list[i + kAhead].flow)]]);
      if (!frozen(list[i].flow)) freeze_at(list[i].flow, level);
    }
    unfrozen_[li] = 0;
  }
  // Commit as set_rate() from 0 would in the set's order: each link's running sum adds its
  // flows' rates in the order the set holds them. Where every flow on a link got the same rate
  // (the rule in a symmetric exchange) the order changes no bit, and the sum is taken in id
  // order, walking the flows in memory order; only the other links need the set's order.
  for (std::size_t li = 0; li < cap_.size(); ++li) {
    max_before_[li] = -1.0;  // the link's first rate, once seen
    rem_[li] = usage_[li];   // its running sum in id order
    raised_[li] = 0;         // rates differ on it
  }
  for (std::size_t f = 0; f < state_.size(); ++f) {
    if (state_[f] != State::Active) continue;
    const double r = rate_[f];
    for (std::size_t i = off_[f]; i < off_[f + 1]; ++i) {
      const auto li = static_cast<std::size_t>(links_[i]);
      if (max_before_[li] < 0.0)
        max_before_[li] = r;
      else if (r != max_before_[li])
        raised_[li] = 1;
      if (r == 0.0) continue;  // set_rate() from 0 to 0 adds nothing
      rem_[li] += r;
      if (r > max_[li]) max_[li] = r;  // the largest does not depend on the order
    }
  }
  bool mixed = false;
  for (std::size_t li = 0; li < cap_.size(); ++li) {
    if (raised_[li])
      mixed = true;
    else
      usage_[li] = rem_[li];
  }
  if (!mixed) return;
  if (++set_stamp_ == 0) {
    std::fill(in_set_.begin(), in_set_.end(), 0U);
    set_stamp_ = 1;
  }
  set_.clear();
  collect_added(set_);
  for (std::size_t i = 0; i < set_.size(); ++i) {
    if (i + 2 * kAhead < set_.size()) {  // the set's order is scattered in memory: fetch ahead
      const auto ahead = static_cast<std::size_t>(set_[i + 2 * kAhead]);
      __builtin_prefetch(&off_[ahead]);
      __builtin_prefetch(&rate_[ahead]);
    }
    if (i + kAhead < set_.size()) __builtin_prefetch(&links_[off_[static_cast<std::size_t>(set_[i + kAhead])]]);
    const int f = set_[i];
    const double r = rate_[static_cast<std::size_t>(f)];
    if (r == 0.0) continue;
    for (int l : links_of(f)) {
      if (raised_[static_cast<std::size_t>(l)]) usage_[static_cast<std::size_t>(l)] += r;
    }
  }
}

}  // namespace moesim
