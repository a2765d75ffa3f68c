#pragma once
// Per-GPU programs of one iteration and their execution on the event engine. Each GPU runs its
// operations in order: local work (compute, optimizer, movement), collectives (a collective
// starts when its last member arrives and all members leave together) and pipeline messages (a
// send costs its sender nothing and delivers after its transfer time; a receive waits until the
// message is there). Waiting at a collective is `Wait`, waiting for a message is `Bubble`, so the
// phases of every GPU add up to its time.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "sim/engine.hpp"
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

  // Runs every program from `start_ns` to its end.
  void run(Engine& engine, TimeNs start_ns);

  // A GPU's end (both lanes) and its compute lane's phases.
  [[nodiscard]] TimeNs end_ns(int gpu) const;
  [[nodiscard]] const std::array<TimeNs, kNumPhases>& busy(int gpu) const {
    return busy_[static_cast<std::size_t>(gpu)];
  }
  [[nodiscard]] const std::vector<Span>& spans() const { return spans_; }

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
