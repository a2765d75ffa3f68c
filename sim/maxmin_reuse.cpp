// The max-min solver reused from one exchange to the next: reset(), clear_flows() (the links
// kept) and the snapshot of a first allocation (save() and restore()).
#include <algorithm>
#include <stdexcept>

#include "sim/huge_pages.hpp"
#include "sim/maxmin.hpp"

namespace moesim {

namespace {
template <class T>
void copy_huge(std::vector<T>& to, const std::vector<T>& from) {
  reserve_huge(to, from.size());
  to.assign(from.begin(), from.end());
}
}  // namespace

template <class E>
void ListArena<E>::copy_from(const ListArena& o) {
  reserve_huge(arena_, o.used_);
  arena_.resize(std::max(arena_.size(), o.used_));
  std::copy_n(o.arena_.begin(), o.used_, arena_.begin());
  begin_ = o.begin_;
  size_ = o.size_;
  room_ = o.room_;
  used_ = o.used_;
  holes_ = o.holes_;
}

void MaxMinSolver::save(Snapshot& s) const {
  if (!pending_add_.empty() || !pending_remove_.empty())
    throw std::logic_error("maxmin: save with changes pending");
  s.on_link_.copy_from(on_link_);
  s.usage_ = usage_;
  s.max_ = max_;
  s.max_before_ = max_before_;
  s.rem_ = rem_;
  s.max_exact_ = max_exact_;
  s.sat_before_ = sat_before_;
  s.raised_ = raised_;
  s.unfrozen_ = unfrozen_;
  s.cnt_ = cnt_;
  s.csr_ = csr_;
  copy_huge(s.pos_, pos_);
  copy_huge(s.changed_, changed_);
  copy_huge(s.rate_, rate_);
  copy_huge(s.state_, state_);
  s.left_ = left_;
  s.active_ = active_;
  s.last_resolved_ = last_resolved_;
  s.total_resolved_ = total_resolved_;
}

const std::vector<int>& MaxMinSolver::restore(const Snapshot& s) {
  if (s.rate_.size() != rate_.size() || s.usage_.size() != usage_.size())
    throw std::logic_error("maxmin: restore into other links or flows");
  pending_add_.clear();
  pending_remove_.clear();
  on_link_.copy_from(s.on_link_);
  usage_ = s.usage_;
  max_ = s.max_;
  max_before_ = s.max_before_;
  rem_ = s.rem_;
  max_exact_ = s.max_exact_;
  sat_before_ = s.sat_before_;
  raised_ = s.raised_;
  unfrozen_ = s.unfrozen_;
  cnt_ = s.cnt_;
  csr_ = s.csr_;
  copy_huge(pos_, s.pos_);
  copy_huge(changed_, s.changed_);
  copy_huge(rate_, s.rate_);
  copy_huge(state_, s.state_);
  left_ = s.left_;
  active_ = s.active_;
  last_resolved_ = s.last_resolved_;
  total_resolved_ = s.total_resolved_;
  return changed_;
}

void MaxMinSolver::reset() {
  cap_.clear();
  on_link_.clear();
  usage_.clear();
  max_.clear();
  max_exact_.clear();
  link_stamp_.clear();
  sat_before_.clear();
  max_before_.clear();
  raised_.clear();
  rem_.clear();
  unfrozen_.clear();
  csr_.clear();
  cnt_.clear();
  heap_.reset();
  forget_flows();
}

void MaxMinSolver::clear_flows() {
  // Every link as add_link() left it.
  on_link_.empty_all();
  std::fill(usage_.begin(), usage_.end(), 0.0);
  std::fill(max_.begin(), max_.end(), 0.0);
  std::fill(max_exact_.begin(), max_exact_.end(), char{1});
  std::fill(link_stamp_.begin(), link_stamp_.end(), 0U);
  std::fill(sat_before_.begin(), sat_before_.end(), char{0});
  std::fill(max_before_.begin(), max_before_.end(), 0.0);
  std::fill(raised_.begin(), raised_.end(), char{0});
  std::fill(rem_.begin(), rem_.end(), 0.0);
  std::fill(unfrozen_.begin(), unfrozen_.end(), 0);
  std::fill(csr_.begin(), csr_.end(), std::size_t{0});
  std::fill(cnt_.begin(), cnt_.end(), 0);
  heap_.clear();
  forget_flows();
}

void MaxMinSolver::forget_flows() {
  off_.assign(1, 0);
  links_.clear();
  pos_.clear();
  rate_.clear();
  fcap_.clear();
  state_.clear();
  in_set_.clear();
  flow_stamp_.clear();
  set_stamp_ = 0;
  stamp_ = 0;
  pending_add_.clear();
  pending_remove_.clear();
  changed_.clear();
  left_ = 0;
  active_ = 0;
  last_resolved_ = 0;
  total_resolved_ = 0;
}

}  // namespace moesim
