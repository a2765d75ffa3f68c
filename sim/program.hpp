#pragma once
// Per-GPU programs of one iteration and their execution on the event engine. Each GPU runs its
// operations in order: local work (compute, optimizer, movement), collectives (a collective
// starts when its last member arrives and all members leave together) and pipeline messages (a
// send costs its sender nothing and delivers after its transfer time; a receive waits until the
// message is there). Waiting at a collective is `Wait`, waiting for a message is `Bubble`, so the
// phases of every GPU add up to its time.
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "sim/engine.hpp"
#include "sim/op_graph.hpp"
#include "core/units.hpp"

namespace moesim {

// TpComm: tensor-parallel all-gathers, reduce-scatters and all-reduces.
enum class Phase { Compute = 0, AllToAll, GradSync, Optimizer, Movement, Wait, Bubble, TpComm };
inline constexpr int kNumPhases = 8;
// Column names ("compute", "a2a", ..., "pipeline_bubble", "tp_comm"); outputs add "_ns".
[[nodiscard]] const char* to_string(Phase p);

class Programs {
 public:
  // A span of the timeline: an operation on a GPU's compute or communication lane.
  struct Span {
    int gpu = 0;
    bool comm = false;
    int label = 0;
    TimeNs start_ns = 0;
    TimeNs duration_ns = 0;
  };

  // `lanes`: 1, or 2 for a communication stream per GPU: lane `gpus + g` runs GPU g's
  // overlapped communication, meeting its compute lane g only through messages.
  void reset(int gpus, int messages, int lanes = 1);
  // A fresh message id (beyond those reset() reserved).
  [[nodiscard]] int new_message();
  void set_label(int label) { label_ = label; }
  void set_recording(bool on) { record_ = on; }

  void add_local(int gpu, Phase phase, TimeNs duration);
  // A collective of `members` (sorted, distinct), in program order on each of them.
  void add_collective(const std::vector<int>& members, TimeNs duration, Phase phase);
  // A pipeline message `id` (< messages): `gpu` sends it, arriving `transfer_ns` later.
  void add_send(int gpu, int id, TimeNs transfer_ns);
  // Waiting for the message counts as `phase` (Bubble between pipeline stages; the phase of the
  // communication it waits for when a compute lane waits for its communication lane).
  void add_recv(int gpu, int id, Phase phase = Phase::Bubble);

  // Teams: lanes whose operations are the same in kind and order (the compute lanes of a
  // pipeline stage, or their communication lanes). A team operation means that operation on each
  // member lane, in member order; it is stored once for the team, so a stage's thousands of
  // operations are not copied onto each of its GPUs, and the team runs them member by member
  // without the event queue. Teams and partitions stay until clear_teams(); reset() clears
  // their operations. A lane is in one team at most.
  [[nodiscard]] int add_team(std::vector<int> lanes);
  // Disjoint groups of a team's member indices (0-based, each sorted) for team_collective.
  [[nodiscard]] int add_partition(std::vector<std::vector<int>> groups);
  void clear_teams();
  // Local work on every member: one duration for all, or one a member (durations <= 0 add
  // nothing, as in add_local).
  void team_local(int team, Phase phase, TimeNs duration);
  void team_local(int team, Phase phase, std::span<const TimeNs> per_member);
  // One collective per group of `partition` (over the team's members), `per_group` its times.
  void team_collective(int team, int partition, std::span<const TimeNs> per_group, Phase phase);
  // Team messages: a fresh id, then member i of the sending team sends to member i of the
  // receiving one (teams of one size).
  [[nodiscard]] int new_team_message();
  void team_send(int team, int message, TimeNs transfer_ns);
  void team_recv(int team, int message, Phase phase = Phase::Bubble);

  // What the next collective, team collective or send is, for exporters (OpGraph); kept only
  // while recording. `bytes`: each member's payload, one value for all groups or one a group;
  // `peer_bytes` (all-to-alls, may be empty): [group] a row-major members x members matrix of
  // what each member sends each other.
  void note_comm(CommKind kind, std::span<const double> bytes,
                 std::span<const std::vector<double>> peer_bytes = {});
  void note_comm(CommKind kind, double bytes) { note_comm(kind, std::span<const double>(&bytes, 1)); }

  // Runs every program from `start_ns` to its end.
  void run(Engine& engine, TimeNs start_ns);

  // A GPU's end (both lanes) and its compute lane's phases.
  [[nodiscard]] TimeNs end_ns(int gpu) const;
  [[nodiscard]] const std::array<TimeNs, kNumPhases>& busy(int gpu) const {
    return busy_[static_cast<std::size_t>(gpu)];
  }
  [[nodiscard]] const std::vector<Span>& spans() const { return spans_; }
  // The iteration just run with recording on, as a graph over its GPUs (ranks): each lane's
  // operations in order, a GPU's two lanes meeting through zero-time nodes; `labels` names
  // nodes by their label index.
  [[nodiscard]] OpGraph graph(const std::vector<std::string>& labels) const;

 private:
  enum class Kind : std::uint8_t { Local, Collective, Send, Recv };
  struct Op {
    Kind kind;
    Phase phase;
    TimeNs duration_ns;
    int target;  // collective or message id
    int label;
  };
  struct CollectiveState {
    int members = 0;
    TimeNs duration_ns = 0;
    Phase phase = Phase::AllToAll;
    int arrived = 0;
    int label = 0;
    std::size_t waiters = 0;  // its members' lanes, in arrival order, at waiters_[waiters ..]
    TimeNs last_arrival_ns = 0;
  };
  struct Message {
    TimeNs ready_ns = -1;  // -1: not sent yet
    int waiting = -1;      // lane blocked on it
    Phase wait_phase = Phase::Bubble;
    int wait_label = 0;
  };
  // Team operations, stored while no lane operation has been added since reset(); later ones go
  // straight onto the member lanes (append_team_op), so the order on every lane is the order of
  // the calls either way.
  struct TeamOp {
    Kind kind;
    Phase phase;
    int target;         // partition or team message
    int label;
    std::uint32_t at;   // durations: pool[at, at + n)
    std::uint32_t n;    // 1: the same on every member (a local) or the transfer (a send)
  };
  struct Team {
    std::vector<int> lanes;
    int base = -1;  // lanes are base, base + 1, ...: run_teams indexes them directly
    std::vector<TeamOp> ops;
    std::vector<TimeNs> pool;
    std::vector<int> notes;  // [op]: its note while recording
  };
  struct TeamMessage {
    std::vector<TimeNs> ready;  // [member]: arrival time at the receiver
    bool sent = false;
    int waiting = -1;           // team blocked on it
    Phase wait_phase = Phase::Bubble;
    int lane_base = -1;         // the lane messages it became, lane_base + member
  };
  void add_team_op(int team, TeamOp op, std::span<const TimeNs> durations, int note = -1);
  // The lane operations of team operation `op` of `team`, appended to its member lanes.
  void append_team_op(const Team& team, const TeamOp& op, const TimeNs* durations, int note);
  void add_collective_noted(const std::vector<int>& members, TimeNs duration, Phase phase, int note, int group);
  void add_send_noted(int gpu, int id, TimeNs transfer_ns, int note);
  // The pending note_comm (-1: none), which the next communication operation takes.
  [[nodiscard]] int take_note() {
    const int n = pending_note_;
    pending_note_ = -1;
    return n;
  }
  // Replaces the stored team operations by their lane operations, before the lanes' own.
  void expand_teams();
  // Runs the stored team operations from clock_ on; false (a deadlock) if some team never ends.
  bool run_teams(std::uint64_t& events);
  // One team from its pc until it blocks or ends; `Lanes` maps a member to its lane. Returns
  // whether it ended.
  template <class Lanes>
  bool run_team(std::size_t t, const Lanes& lane_of, std::uint64_t& events);
  void step(Engine& engine, int lane);
  // The same programs without the event queue: each lane runs until it blocks, and the lane
  // that completes a collective or delivers a message resumes the blocked ones. Every time is a
  // max or a sum of the same terms, so the result is the event-driven one exactly; the events
  // the queue would have run are counted and charged to `engine`. Returns false (and changes
  // nothing) where that count could depend on the order of same-time events.
  bool run_direct(Engine& engine, TimeNs start_ns);
  void start(TimeNs start_ns);

  bool record_ = false;
  int label_ = 0;
  struct CommNote {
    CommKind kind;
    std::vector<double> bytes;
    std::vector<std::vector<double>> peer_bytes;
  };
  // While recording: the notes, and which one (and which of its groups) each collective and
  // message has.
  std::vector<CommNote> notes_;
  int pending_note_ = -1;
  std::vector<std::pair<int, int>> collective_note_;  // [collective]: (note, group)
  std::vector<int> message_note_;                     // [message]
  std::vector<Team> teams_;
  std::vector<int> team_of_lane_;
  std::vector<std::vector<std::vector<int>>> partitions_;
  std::vector<int> partition_members_;  // [partition]: 1 + its largest member index
  std::vector<TeamMessage> team_messages_;
  std::size_t used_team_messages_ = 0;
  bool lane_ops_ = false;        // a lane operation was added since reset(): team ones expand
  bool team_ops_ = false;        // some team operation is stored
  bool team_zero_send_ = false;  // a stored team message delivered at its send time
  // [lane]: its team operations ended in local work (not char: a char store may alias anything,
  // which kept run_teams' loops reloading their pointers).
  std::vector<std::uint32_t> continuing_;
  std::vector<std::size_t> team_pc_;
  std::vector<int> runnable_teams_;
  int gpus_ = 0;
  std::vector<std::vector<Op>> program_;
  std::vector<CollectiveState> collectives_;
  std::vector<int> waiters_;
  bool zero_send_ = false;  // a message delivered at its send time
  std::vector<Message> messages_;
  std::vector<std::size_t> pc_;
  std::vector<TimeNs> arrival_, end_, clock_;
  std::vector<int> runnable_;
  std::vector<std::array<TimeNs, kNumPhases>> busy_;
  std::vector<Span> spans_;
};

}  // namespace moesim
