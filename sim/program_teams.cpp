// Teams of lanes that run the same operations (sim/program.hpp): stored once, run member by
// member without the event queue, or expanded into each member's own operations where the
// queue must run them (a recorded timeline, a zero-time message).
#include <algorithm>
#include <stdexcept>

#include "sim/program.hpp"

namespace moesim {

int Programs::add_team(std::vector<int> lanes) {
  for (int lane : lanes) {
    if (lane < 0) throw std::logic_error("Programs: a team lane is negative");
    const auto l = static_cast<std::size_t>(lane);
    if (team_of_lane_.size() <= l) team_of_lane_.resize(l + 1, -1);
    if (team_of_lane_[l] >= 0) throw std::logic_error("Programs: a lane is in two teams");
    team_of_lane_[l] = static_cast<int>(teams_.size());
  }
  bool contiguous = !lanes.empty();
  for (std::size_t i = 1; i < lanes.size(); ++i) contiguous &= lanes[i] == lanes[0] + static_cast<int>(i);
  const int base = contiguous ? lanes[0] : -1;
  teams_.push_back(Team{std::move(lanes), base, {}, {}, {}});
  return static_cast<int>(teams_.size()) - 1;
}

int Programs::add_partition(std::vector<std::vector<int>> groups) {
  int members = 0;
  for (const auto& g : groups) {
    if (g.empty()) throw std::logic_error("Programs: an empty group in a partition");
    for (int m : g) {
      if (m < 0) throw std::logic_error("Programs: a negative member in a partition");
      members = std::max(members, m + 1);
    }
  }
  partition_members_.push_back(members);
  partitions_.push_back(std::move(groups));
  return static_cast<int>(partitions_.size()) - 1;
}

void Programs::clear_teams() {
  teams_.clear();
  team_of_lane_.clear();
  partitions_.clear();
  partition_members_.clear();
  team_ops_ = false;
}

int Programs::new_team_message() {
  if (used_team_messages_ == team_messages_.size()) team_messages_.emplace_back();
  TeamMessage& m = team_messages_[used_team_messages_];
  m.ready.clear();
  m.sent = false;
  m.waiting = -1;
  m.lane_base = -1;
  return static_cast<int>(used_team_messages_++);
}

void Programs::add_team_op(int team, TeamOp op, std::span<const TimeNs> durations, int note) {
  Team& t = teams_.at(static_cast<std::size_t>(team));
  op.label = label_;
  op.at = static_cast<std::uint32_t>(t.pool.size());
  op.n = static_cast<std::uint32_t>(durations.size());
  if (lane_ops_) {
    // After a lane's own operations: straight onto the lanes, keeping each lane's order.
    append_team_op(t, op, durations.data(), note);
    return;
  }
  if (op.kind == Kind::Local && !record_ && !t.ops.empty() && t.ops.back().kind == Kind::Local &&
      t.ops.back().phase == op.phase) {
    // Back-to-back local work of one phase is one operation, as in add_local (the same sums and
    // runs of local work), member by member where either differs between members.
    TeamOp& prev = t.ops.back();
    if (prev.n == 1 && op.n == 1) {
      t.pool[prev.at] += durations[0];
      return;
    }
    const std::size_t n = t.lanes.size();
    const TimeNs p0 = t.pool[prev.at];
    if (prev.n == 1) t.pool.resize(prev.at + n, p0);
    for (std::size_t i = 0; i < n; ++i) {
      TimeNs& a = t.pool[prev.at + i];
      const TimeNs b = durations[op.n == 1 ? 0 : i];
      a = std::max<TimeNs>(a, 0) + std::max<TimeNs>(b, 0);
    }
    prev.n = static_cast<std::uint32_t>(n);
    return;
  }
  t.pool.insert(t.pool.end(), durations.begin(), durations.end());
  t.ops.push_back(op);
  if (record_) t.notes.push_back(note);
  team_ops_ = true;
}

void Programs::team_local(int team, Phase phase, TimeNs duration) {
  if (duration <= 0) return;
  const TimeNs d[1] = {duration};
  add_team_op(team, TeamOp{Kind::Local, phase, -1, 0, 0, 0}, d);
}

void Programs::team_local(int team, Phase phase, std::span<const TimeNs> per_member) {
  if (per_member.size() != teams_.at(static_cast<std::size_t>(team)).lanes.size())
    throw std::logic_error("Programs: team_local needs one duration a member");
  if (std::none_of(per_member.begin(), per_member.end(), [](TimeNs d) { return d > 0; })) return;
  add_team_op(team, TeamOp{Kind::Local, phase, -1, 0, 0, 0}, per_member);
}

void Programs::team_collective(int team, int partition, std::span<const TimeNs> per_group, Phase phase) {
  const auto& groups = partitions_.at(static_cast<std::size_t>(partition));
  if (per_group.size() != groups.size()) throw std::logic_error("Programs: team_collective needs one time a group");
  const std::size_t n = teams_.at(static_cast<std::size_t>(team)).lanes.size();
  if (static_cast<std::size_t>(partition_members_[static_cast<std::size_t>(partition)]) > n)
    throw std::logic_error("Programs: a partition names no member of the team");
  if (groups.empty()) return;
  add_team_op(team, TeamOp{Kind::Collective, phase, partition, 0, 0, 0}, per_group, take_note());
}

void Programs::team_send(int team, int message, TimeNs transfer_ns) {
  if (message < 0 || static_cast<std::size_t>(message) >= used_team_messages_)
    throw std::logic_error("Programs: team_send of an unknown message");
  if (!lane_ops_) team_zero_send_ |= transfer_ns <= 0;
  const TimeNs d[1] = {transfer_ns};
  add_team_op(team, TeamOp{Kind::Send, Phase::Bubble, message, 0, 0, 0}, d, take_note());
}

void Programs::team_recv(int team, int message, Phase phase) {
  if (message < 0 || static_cast<std::size_t>(message) >= used_team_messages_)
    throw std::logic_error("Programs: team_recv of an unknown message");
  add_team_op(team, TeamOp{Kind::Recv, phase, message, 0, 0, 0}, {});
}

void Programs::append_team_op(const Team& team, const TeamOp& op, const TimeNs* durations, int note) {
  const int saved_label = label_;
  label_ = op.label;
  const std::size_t n = team.lanes.size();
  switch (op.kind) {
    case Kind::Local:
      for (std::size_t i = 0; i < n; ++i) add_local(team.lanes[i], op.phase, durations[op.n == 1 ? 0 : i]);
      break;
    case Kind::Collective: {
      const auto& groups = partitions_[static_cast<std::size_t>(op.target)];
      std::vector<int> members;
      for (std::size_t g = 0; g < groups.size(); ++g) {
        members.clear();
        for (int m : groups[g]) members.push_back(team.lanes[static_cast<std::size_t>(m)]);
        add_collective_noted(members, durations[g], op.phase, note, static_cast<int>(g));
      }
      break;
    }
    case Kind::Send:
    case Kind::Recv: {
      TeamMessage& m = team_messages_[static_cast<std::size_t>(op.target)];
      if (m.lane_base < 0) {
        m.lane_base = static_cast<int>(messages_.size());
        messages_.resize(messages_.size() + n);
      }
      for (std::size_t i = 0; i < n; ++i) {
        const int id = m.lane_base + static_cast<int>(i);
        if (op.kind == Kind::Send) add_send_noted(team.lanes[i], id, durations[0], note);
        else add_recv(team.lanes[i], id, op.phase);
      }
      break;
    }
  }
  label_ = saved_label;
}

void Programs::expand_teams() {
  // The lanes' own operations go after their team's.
  std::vector<std::vector<Op>> own(program_.size());
  for (std::size_t l = 0; l < program_.size(); ++l) own[l].swap(program_[l]);
  for (const Team& t : teams_)
    for (std::size_t k = 0; k < t.ops.size(); ++k)
      append_team_op(t, t.ops[k], t.pool.data() + t.ops[k].at, k < t.notes.size() ? t.notes[k] : -1);
  for (std::size_t l = 0; l < program_.size(); ++l)
    program_[l].insert(program_[l].end(), own[l].begin(), own[l].end());
  for (Team& t : teams_) {
    t.ops.clear();
    t.pool.clear();
    t.notes.clear();
  }
  team_ops_ = false;
}

template <class Lanes>
bool Programs::run_team(std::size_t t, const Lanes& lane_of, std::uint64_t& events) {
  TimeNs* clock = clock_.data();
  std::array<TimeNs, kNumPhases>* busy = busy_.data();
  std::uint32_t* in_run = continuing_.data();
  auto deliver = [&](const TeamMessage& m, std::size_t to, Phase phase) {
    const Team& r = teams_[to];
    const int ph = static_cast<int>(phase);
    if (r.lanes.size() != m.ready.size()) throw std::logic_error("Programs: a team message between teams of two sizes");
    for (std::size_t i = 0; i < r.lanes.size(); ++i) {
      const auto lane = static_cast<std::size_t>(r.lanes[i]);
      if (m.ready[i] > clock[lane]) {
        busy[lane][ph] += m.ready[i] - clock[lane];
        clock[lane] = m.ready[i];
        ++events;
      }
    }
  };
  const Team& team = teams_[t];
  const std::size_t n = team.lanes.size();
  std::size_t pc = team_pc_[t];
  while (pc < team.ops.size()) {
    const TeamOp& op = team.ops[pc++];
    const TimeNs* d = team.pool.data() + op.at;
    const int ph = static_cast<int>(op.phase);
    if (op.kind == Kind::Local) {
      for (std::size_t i = 0; i < n; ++i) {
        const TimeNs x = d[op.n == 1 ? 0 : i];
        if (x <= 0) continue;
        const std::size_t lane = lane_of(i);
        busy[lane][ph] += x;
        clock[lane] += x;
        in_run[lane] = 1;
      }
      continue;
    }
    // The members' runs of local work end here.
    for (std::size_t i = 0; i < n; ++i) {
      std::uint32_t& r = in_run[lane_of(i)];
      events += r;
      r = 0;
    }
    if (op.kind == Kind::Collective) {
      const auto& groups = partitions_[static_cast<std::size_t>(op.target)];
      for (std::size_t g = 0; g < groups.size(); ++g) {
        TimeNs last = clock[lane_of(static_cast<std::size_t>(groups[g].front()))];
        for (int m : groups[g]) last = std::max(last, clock[lane_of(static_cast<std::size_t>(m))]);
        for (int m : groups[g]) {
          const std::size_t lane = lane_of(static_cast<std::size_t>(m));
          busy[lane][static_cast<int>(Phase::Wait)] += last - clock[lane];
          busy[lane][ph] += d[g];
          clock[lane] = last + d[g];
        }
      }
      events += groups.size();  // each group's members leave together
      continue;
    }
    TeamMessage& m = team_messages_[static_cast<std::size_t>(op.target)];
    if (op.kind == Kind::Send) {
      m.ready.resize(n);
      for (std::size_t i = 0; i < n; ++i) m.ready[i] = clock[lane_of(i)] + d[0];
      m.sent = true;
      if (m.waiting >= 0) {
        deliver(m, static_cast<std::size_t>(m.waiting), m.wait_phase);
        runnable_teams_.push_back(m.waiting);
        m.waiting = -1;
      }
      continue;
    }
    if (!m.sent) {
      m.waiting = static_cast<int>(t);
      m.wait_phase = op.phase;
      team_pc_[t] = pc;
      return false;
    }
    deliver(m, t, op.phase);
  }
  team_pc_[t] = pc;
  // A run of local work at the end goes on into the lane's own operations (run_direct counts
  // it once, here).
  for (std::size_t i = 0; i < n; ++i) events += in_run[lane_of(i)];
  return true;
}

bool Programs::run_teams(std::uint64_t& events_out) {
  // The same sums and maxima as run_direct on the expanded lanes, and the same event count: one
  // a member's run of local work, one a collective, one a receive that waits.
  const std::size_t T = teams_.size();
  team_pc_.assign(T, 0);
  runnable_teams_.clear();
  for (std::size_t t = T; t-- > 0;) runnable_teams_.push_back(static_cast<int>(t));
  for (std::size_t m = 0; m < used_team_messages_; ++m) {
    team_messages_[m].sent = false;
    team_messages_[m].waiting = -1;
  }
  std::uint64_t events = 0;  // a local: events_out may alias the arrays run_team writes
  std::size_t finished = 0;
  while (!runnable_teams_.empty()) {
    const auto t = static_cast<std::size_t>(runnable_teams_.back());
    runnable_teams_.pop_back();
    const Team& team = teams_[t];
    bool ended = false;
    if (team.base >= 0) {
      const auto base = static_cast<std::size_t>(team.base);
      ended = run_team(t, [base](std::size_t i) { return base + i; }, events);
    } else {
      const int* lanes = team.lanes.data();
      ended = run_team(t, [lanes](std::size_t i) { return static_cast<std::size_t>(lanes[i]); }, events);
    }
    finished += ended ? 1 : 0;
  }
  events_out += events;
  return finished == T;
}

}  // namespace moesim
