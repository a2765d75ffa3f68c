#pragma once
// One iteration as a dependency graph of operations per rank: the form execution-trace formats
// (MLCommons Chakra) exchange. Programs::graph() turns a recorded iteration into one, and
// replay_graph() runs one back with the semantics of Programs::run, so that a graph written and
// read again gives the iteration time it came from.
#include <cstdint>
#include <string>
#include <vector>

#include "core/units.hpp"

namespace moesim {

// What a collective or a message is, for an exporter (Programs only needs durations).
enum class CommKind : std::uint8_t { Unknown, AllReduce, AllGather, ReduceScatter, AllToAll, Broadcast, PointToPoint };
[[nodiscard]] const char* to_string(CommKind k);

struct OpGraph {
  enum class Kind : std::uint8_t { Compute, Collective, Send, Recv };
  struct Node {
    Kind kind = Kind::Compute;
    int rank = 0;
    std::string name;
    // Compute: its time. Collective: its time once the last member is there (the same on every
    // member). Send: the transfer time to the receiver (the sender goes on at once). Recv: unused.
    TimeNs duration_ns = 0;
    std::vector<std::int64_t> deps;  // nodes (indices) that must end first
    int collective = -1;             // Collective: the instance its members share
    int peer = -1;                   // Send: the receiving rank; Recv: the sending rank
    std::int64_t tag = -1;           // Send/Recv: a send and its receive share (peer pair, tag)
    CommKind comm = CommKind::Unknown;
    double bytes = 0;                // Collective: each member's payload; Send: the message
    // All-to-all: what this rank sends each member of its group and receives from each (in the
    // group's rank order), where known.
    std::vector<double> out_split_bytes, in_split_bytes;
  };
  int ranks = 0;
  std::vector<Node> nodes;
  std::vector<std::vector<int>> collective_members;  // [instance]: its ranks, sorted
};

// The longest operation a graph may hold, 2^50 ns (about 13 days): past it a file is refused
// rather than overflowing the clock.
inline constexpr TimeNs kMaxGraphNodeNs = TimeNs{1} << 50;

struct GraphReplay {
  std::vector<TimeNs> rank_end_ns;  // [rank]: when its last node ends (0 without nodes)
  TimeNs makespan_ns = 0;           // the largest of them
  std::vector<TimeNs> node_end_ns;  // [node]
};

// Runs the graph from time 0: a node starts when its dependencies have ended; a compute node
// then takes its time; a collective's members all end its time after the last of them started;
// a send ends when it starts and its receive ends no earlier than the send's start plus its
// transfer time. Throws InputError (naming `source` and the node) on a dependency cycle, a
// dependency out of range, a receive without its send or a collective whose members disagree.
[[nodiscard]] GraphReplay replay_graph(const OpGraph& g, const std::string& source = "graph");

}  // namespace moesim
