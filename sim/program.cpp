#include "sim/program.hpp"

#include <algorithm>
#include <span>
#include <stdexcept>

namespace moesim {

const char* to_string(Phase p) {
  switch (p) {
    case Phase::Compute: return "compute";
    case Phase::AllToAll: return "a2a";
    case Phase::GradSync: return "grad_sync";
    case Phase::Optimizer: return "optimizer";
    case Phase::Movement: return "movement";
    case Phase::Wait: return "wait";
    case Phase::Bubble: return "pipeline_bubble";
    case Phase::TpComm: return "tp_comm";
  }
  return "?";
}

void Programs::reset(int gpus, int messages, int lanes) {
  gpus_ = gpus;
  // The programs keep their capacity: the next iteration has about as many operations, and
  // allocating them afresh each time cost more than running them.
  program_.resize(static_cast<std::size_t>(gpus) * static_cast<std::size_t>(lanes));
  for (std::vector<Op>& p : program_) p.clear();
  collectives_.clear();
  waiters_.clear();
  zero_send_ = false;
  messages_.assign(static_cast<std::size_t>(messages), Message{});
  spans_.clear();
  label_ = 0;
  notes_.clear();
  pending_note_ = -1;
  collective_note_.clear();
  message_note_.clear();
  for (Team& t : teams_) {
    t.ops.clear();
    t.pool.clear();
    t.notes.clear();
  }
  used_team_messages_ = 0;
  lane_ops_ = team_ops_ = team_zero_send_ = false;
}

void Programs::add_local(int gpu, Phase phase, TimeNs duration) {
  if (duration <= 0) return;
  lane_ops_ = true;
  std::vector<Op>& p = program_[static_cast<std::size_t>(gpu)];
  // Back-to-back local work of one phase is one operation: the same phase sums and the same
  // events (a run of local operations is one), in fewer operations. Spans keep them apart.
  if (!record_ && !p.empty() && p.back().kind == Kind::Local && p.back().phase == phase) {
    p.back().duration_ns += duration;
    return;
  }
  p.push_back(Op{Kind::Local, phase, duration, -1, label_});
}

void Programs::note_comm(CommKind kind, std::span<const double> bytes, std::span<const std::vector<double>> peer_bytes) {
  if (!record_) return;
  notes_.push_back(CommNote{kind, {bytes.begin(), bytes.end()}, {peer_bytes.begin(), peer_bytes.end()}});
  pending_note_ = static_cast<int>(notes_.size()) - 1;
}

void Programs::add_collective(const std::vector<int>& members, TimeNs duration, Phase phase) {
  add_collective_noted(members, duration, phase, take_note(), 0);
}

void Programs::add_collective_noted(const std::vector<int>& members, TimeNs duration, Phase phase, int note,
                                    int group) {
  lane_ops_ = true;
  if (record_) collective_note_.emplace_back(note, group);
  const int id = static_cast<int>(collectives_.size());
  collectives_.push_back(
      CollectiveState{static_cast<int>(members.size()), duration, phase, 0, label_, waiters_.size(), 0});
  waiters_.resize(waiters_.size() + members.size());
  for (int g : members) program_[static_cast<std::size_t>(g)].push_back(Op{Kind::Collective, phase, duration, id, label_});
}

void Programs::add_send(int gpu, int id, TimeNs transfer_ns) { add_send_noted(gpu, id, transfer_ns, take_note()); }

void Programs::add_send_noted(int gpu, int id, TimeNs transfer_ns, int note) {
  lane_ops_ = true;
  if (record_) {
    if (message_note_.size() <= static_cast<std::size_t>(id)) message_note_.resize(static_cast<std::size_t>(id) + 1, -1);
    message_note_[static_cast<std::size_t>(id)] = note;
  }
  zero_send_ |= transfer_ns <= 0;
  program_[static_cast<std::size_t>(gpu)].push_back(Op{Kind::Send, Phase::Bubble, transfer_ns, id, label_});
}

void Programs::add_recv(int gpu, int id, Phase phase) {
  lane_ops_ = true;
  program_[static_cast<std::size_t>(gpu)].push_back(Op{Kind::Recv, phase, 0, id, label_});
}

int Programs::new_message() {
  messages_.push_back(Message{});
  return static_cast<int>(messages_.size()) - 1;
}

TimeNs Programs::end_ns(int gpu) const {
  const auto g = static_cast<std::size_t>(gpu);
  TimeNs e = end_[g];
  if (program_.size() > static_cast<std::size_t>(gpus_)) e = std::max(e, end_[g + static_cast<std::size_t>(gpus_)]);
  return e;
}

void Programs::start(TimeNs start_ns) {
  const std::size_t g = program_.size();
  pc_.assign(g, 0);
  arrival_.assign(g, 0);
  end_.assign(g, start_ns);
  busy_.assign(g, std::array<TimeNs, kNumPhases>{});
}

void Programs::run(Engine& engine, TimeNs start_ns) {
  // Recording keeps the queue: spans are written in the order events run.
  if (!record_ && !zero_send_ && !team_zero_send_ && run_direct(engine, start_ns)) return;
  if (team_ops_) expand_teams();
  start(start_ns);
  for (Message& m : messages_) m = Message{};
  for (CollectiveState& c : collectives_) c.arrived = 0;
  const std::size_t g = program_.size();
  for (std::size_t i = 0; i < g; ++i) {
    const int gpu = static_cast<int>(i);
    engine.schedule_at(start_ns, [this, gpu](Engine& e) { step(e, gpu); });
  }
  engine.run();
  for (const Message& m : messages_)
    if (m.waiting >= 0) throw std::logic_error("Programs: a pipeline receive was never matched by a send");
}

void Programs::step(Engine& engine, int lane) {
  const auto gi = static_cast<std::size_t>(lane);
  // Spans name the GPU; a communication lane's spans are on its GPU's communication lane.
  const int gpu = lane % gpus_;
  const bool comm_lane = lane >= gpus_;
  const std::vector<Op>& prog = program_[gi];
  for (;;) {
    if (pc_[gi] == prog.size()) {
      end_[gi] = engine.now();
      return;
    }
    const Op& op = prog[pc_[gi]];
    switch (op.kind) {
      case Kind::Local: {
        // A run of local operations needs no event between them: nothing else can touch this
        // GPU until it reaches its next collective or message.
        TimeNs run = 0;
        while (pc_[gi] < prog.size() && prog[pc_[gi]].kind == Kind::Local) {
          const Op& o = prog[pc_[gi]++];
          busy_[gi][static_cast<int>(o.phase)] += o.duration_ns;
          if (record_)
            spans_.push_back(Span{gpu, comm_lane || o.phase == Phase::Movement, o.label, engine.now() + run, o.duration_ns});
          run += o.duration_ns;
        }
        engine.schedule_in(run, [this, lane](Engine& e) { step(e, lane); });
        return;
      }
      case Kind::Send: {
        ++pc_[gi];
        Message& m = messages_[static_cast<std::size_t>(op.target)];
        m.ready_ns = engine.now() + op.duration_ns;
        if (record_ && op.duration_ns > 0) spans_.push_back(Span{gpu, true, op.label, engine.now(), op.duration_ns});
        if (m.waiting >= 0) {
          const int w = m.waiting;
          m.waiting = -1;
          const auto wi = static_cast<std::size_t>(w);
          busy_[wi][static_cast<int>(m.wait_phase)] += m.ready_ns - arrival_[wi];
          if (record_ && m.ready_ns > arrival_[wi])
            spans_.push_back(Span{w % gpus_, true, m.wait_label, arrival_[wi], m.ready_ns - arrival_[wi]});
          engine.schedule_at(m.ready_ns, [this, w](Engine& e) { step(e, w); });
        }
        continue;
      }
      case Kind::Recv: {
        ++pc_[gi];
        Message& m = messages_[static_cast<std::size_t>(op.target)];
        if (m.ready_ns < 0) {
          m.waiting = lane;
          m.wait_phase = op.phase;
          m.wait_label = op.label;
          arrival_[gi] = engine.now();
          return;
        }
        const TimeNs wait = std::max<TimeNs>(0, m.ready_ns - engine.now());
        if (wait == 0) continue;
        busy_[gi][static_cast<int>(op.phase)] += wait;
        if (record_) spans_.push_back(Span{gpu, true, op.label, engine.now(), wait});
        engine.schedule_in(wait, [this, lane](Engine& e) { step(e, lane); });
        return;
      }
      case Kind::Collective: {
        ++pc_[gi];
        CollectiveState& c = collectives_[static_cast<std::size_t>(op.target)];
        arrival_[gi] = engine.now();
        waiters_[c.waiters + static_cast<std::size_t>(c.arrived)] = lane;
        if (++c.arrived < c.members) return;
        // The last member has arrived (events run in time order, so now is the latest arrival).
        const std::span<const int> members(waiters_.data() + c.waiters, static_cast<std::size_t>(c.members));
        for (int w : members) {
          const auto wi = static_cast<std::size_t>(w);
          busy_[wi][static_cast<int>(Phase::Wait)] += engine.now() - arrival_[wi];
          busy_[wi][static_cast<int>(c.phase)] += c.duration_ns;
          if (record_) {
            if (engine.now() > arrival_[wi]) spans_.push_back(Span{w % gpus_, true, 0, arrival_[wi], engine.now() - arrival_[wi]});
            spans_.push_back(Span{w % gpus_, true, op.label, engine.now(), c.duration_ns});
          }
        }
        // All members leave together: one event resumes them in arrival order.
        const int id = op.target;
        engine.schedule_in(c.duration_ns, [this, id](Engine& e) {
          const CollectiveState& done = collectives_[static_cast<std::size_t>(id)];
          for (int k = 0; k < done.members; ++k) step(e, waiters_[done.waiters + static_cast<std::size_t>(k)]);
        });
        return;
      }
    }
  }
}

bool Programs::run_direct(Engine& engine, TimeNs start_ns) {
  // Every message takes time, so a receive waits (one event) exactly when the message is ready
  // after the receiver arrives, whichever of the two the queue would have run first; with
  // zero-time messages that depends on the order of same-time events.
  if (zero_send_ || team_zero_send_) return false;
  start(start_ns);
  const std::size_t lanes = program_.size();
  clock_.assign(lanes, start_ns);
  continuing_.assign(lanes, 0);
  std::uint64_t events = lanes;  // each lane's first step
  // The teams first: their operations come before every lane's own, and no message or
  // collective joins the two parts (expand_teams would otherwise have run).
  if (team_ops_ && !run_teams(events)) {
    start(start_ns);
    return false;
  }
  runnable_.clear();
  for (std::size_t i = lanes; i-- > 0;) runnable_.push_back(static_cast<int>(i));
  std::size_t finished = 0;
  TimeNs last_ns = start_ns;
  while (!runnable_.empty()) {
    const int lane = runnable_.back();
    runnable_.pop_back();
    const auto gi = static_cast<std::size_t>(lane);
    const std::vector<Op>& prog = program_[gi];
    std::size_t pc = pc_[gi];
    TimeNs now = clock_[gi];
    std::array<TimeNs, kNumPhases>& busy = busy_[gi];
    for (;;) {
      if (pc == prog.size()) {
        end_[gi] = now;
        last_ns = std::max(last_ns, now);
        ++finished;
        break;
      }
      const Op& op = prog[pc];
      if (op.kind == Kind::Local) {
        // A lane's first local work may go on from its team's last: one run, counted there.
        if (pc != 0 || continuing_[gi] == 0) ++events;  // the end of the run
        while (pc < prog.size() && prog[pc].kind == Kind::Local) {
          busy[static_cast<int>(prog[pc].phase)] += prog[pc].duration_ns;
          now += prog[pc].duration_ns;
          ++pc;
        }
        continue;
      }
      ++pc;
      if (op.kind == Kind::Send) {
        Message& m = messages_[static_cast<std::size_t>(op.target)];
        m.ready_ns = now + op.duration_ns;
        if (m.waiting >= 0) {
          // The receiver got there first in this order, not necessarily in time.
          const auto wi = static_cast<std::size_t>(m.waiting);
          if (m.ready_ns > arrival_[wi]) {
            busy_[wi][static_cast<int>(m.wait_phase)] += m.ready_ns - arrival_[wi];
            ++events;
          }
          clock_[wi] = std::max(m.ready_ns, arrival_[wi]);
          runnable_.push_back(m.waiting);
          m.waiting = -1;
        }
        continue;
      }
      if (op.kind == Kind::Recv) {
        Message& m = messages_[static_cast<std::size_t>(op.target)];
        if (m.ready_ns < 0) {
          m.waiting = lane;
          m.wait_phase = op.phase;
          arrival_[gi] = now;
          break;
        }
        if (m.ready_ns > now) {
          busy[static_cast<int>(op.phase)] += m.ready_ns - now;
          now = m.ready_ns;
          ++events;
        }
        continue;
      }
      CollectiveState& c = collectives_[static_cast<std::size_t>(op.target)];
      arrival_[gi] = now;
      c.last_arrival_ns = c.arrived == 0 ? now : std::max(c.last_arrival_ns, now);
      waiters_[c.waiters + static_cast<std::size_t>(c.arrived)] = lane;
      if (++c.arrived < c.members) break;
      ++events;  // all members leave together
      const TimeNs leave_ns = c.last_arrival_ns + c.duration_ns;
      for (int k = c.members; k-- > 0;) {
        const int w = waiters_[c.waiters + static_cast<std::size_t>(k)];
        const auto wi = static_cast<std::size_t>(w);
        busy_[wi][static_cast<int>(Phase::Wait)] += c.last_arrival_ns - arrival_[wi];
        busy_[wi][static_cast<int>(c.phase)] += c.duration_ns;
        clock_[wi] = leave_ns;
        if (w != lane) runnable_.push_back(w);
      }
      now = leave_ns;
    }
    pc_[gi] = pc;
    clock_[gi] = now;
  }
  if (finished != lanes) {
    // Some lane never finished (a program bug): let the queue report it as it always has.
    start(start_ns);
    return false;
  }
  engine.advance(last_ns, events);
  return true;
}

}  // namespace moesim
