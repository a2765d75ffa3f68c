// Programs::graph: a recorded iteration's lane programs as an OpGraph (sim/op_graph.hpp).
#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

#include "sim/program.hpp"

namespace moesim {

OpGraph Programs::graph(const std::vector<std::string>& labels) const {
  if (team_ops_) throw std::logic_error("Programs::graph: the iteration was not recorded (team operations unexpanded)");
  OpGraph g;
  g.ranks = gpus_;
  const std::size_t lanes = program_.size();
  auto rank_of = [&](std::size_t lane) { return static_cast<int>(lane % static_cast<std::size_t>(gpus_)); };
  auto name_of = [&](int label) {
    return label >= 0 && static_cast<std::size_t>(label) < labels.size() ? labels[static_cast<std::size_t>(label)]
                                                                          : std::string("operation");
  };
  // Who sends and who receives each message, and each collective's ranks.
  std::vector<int> send_lane(messages_.size(), -1), recv_lane(messages_.size(), -1);
  g.collective_members.assign(collectives_.size(), {});
  for (std::size_t l = 0; l < lanes; ++l)
    for (const Op& op : program_[l]) {
      const auto t = static_cast<std::size_t>(op.target);
      if (op.kind == Kind::Send) send_lane.at(t) = static_cast<int>(l);
      if (op.kind == Kind::Recv) recv_lane.at(t) = static_cast<int>(l);
      if (op.kind == Kind::Collective) g.collective_members.at(t).push_back(rank_of(l));
    }
  for (auto& m : g.collective_members) std::sort(m.begin(), m.end());
  auto note_of = [&](int note) -> const CommNote* {
    return note >= 0 && static_cast<std::size_t>(note) < notes_.size() ? &notes_[static_cast<std::size_t>(note)] : nullptr;
  };
  std::vector<std::int64_t> signal(messages_.size(), -1);  // a GPU's message between its own lanes
  std::vector<std::pair<std::size_t, std::size_t>> waits;  // (wait node, message)
  for (std::size_t l = 0; l < lanes; ++l) {
    std::int64_t last = -1;
    const int rank = rank_of(l);
    for (const Op& op : program_[l]) {
      OpGraph::Node n;
      n.rank = rank;
      n.name = name_of(op.label);
      if (last >= 0) n.deps.push_back(last);
      const auto t = static_cast<std::size_t>(op.target);
      switch (op.kind) {
        case Kind::Local:
          n.kind = OpGraph::Kind::Compute;
          n.duration_ns = op.duration_ns;
          break;
        case Kind::Collective: {
          n.kind = OpGraph::Kind::Collective;
          n.duration_ns = op.duration_ns;
          n.collective = op.target;
          if (t < collective_note_.size()) {
            const auto [note, group] = collective_note_[t];
            if (const CommNote* c = note_of(note)) {
              n.comm = c->kind;
              const auto gi = static_cast<std::size_t>(group);
              if (!c->bytes.empty()) n.bytes = c->bytes[c->bytes.size() == 1 ? 0 : std::min(gi, c->bytes.size() - 1)];
              if (gi < c->peer_bytes.size()) {
                const std::vector<double>& m = c->peer_bytes[gi];
                const auto& members = g.collective_members[t];
                const std::size_t k = members.size();
                const auto me = static_cast<std::size_t>(
                    std::lower_bound(members.begin(), members.end(), rank) - members.begin());
                if (m.size() == k * k) {
                  double sent = 0.0;
                  for (std::size_t j = 0; j < k; ++j) {
                    n.out_split_bytes.push_back(m[me * k + j]);
                    n.in_split_bytes.push_back(m[j * k + me]);
                    if (j != me) sent += m[me * k + j];
                  }
                  n.bytes = sent;  // what leaves this rank
                }
              }
            }
          }
          break;
        }
        case Kind::Send: {
          const int to = recv_lane.at(t);
          if (to >= 0 && rank_of(static_cast<std::size_t>(to)) == rank) {
            // Between a GPU's own lanes: a node off the sender's chain that ends on arrival.
            n.kind = OpGraph::Kind::Compute;
            n.name = "stream signal: " + n.name;
            n.duration_ns = op.duration_ns;
            signal[t] = static_cast<std::int64_t>(g.nodes.size());
            g.nodes.push_back(std::move(n));
            continue;  // the lane goes on from `last`
          }
          n.kind = OpGraph::Kind::Send;
          n.duration_ns = op.duration_ns;
          n.peer = to >= 0 ? rank_of(static_cast<std::size_t>(to)) : -1;
          n.tag = op.target;
          n.comm = CommKind::PointToPoint;
          if (t < message_note_.size())
            if (const CommNote* c = note_of(message_note_[t]); c != nullptr && !c->bytes.empty()) n.bytes = c->bytes[0];
          break;
        }
        case Kind::Recv: {
          const int from = send_lane.at(t);
          if (from >= 0 && rank_of(static_cast<std::size_t>(from)) == rank) {
            n.kind = OpGraph::Kind::Compute;
            n.name = "stream wait: " + n.name;
            waits.emplace_back(g.nodes.size(), t);
            break;
          }
          n.kind = OpGraph::Kind::Recv;
          n.peer = from >= 0 ? rank_of(static_cast<std::size_t>(from)) : -1;
          n.tag = op.target;
          n.comm = CommKind::PointToPoint;
          break;
        }
      }
      last = static_cast<std::int64_t>(g.nodes.size());
      g.nodes.push_back(std::move(n));
    }
  }
  for (const auto& [node, message] : waits) {
    if (signal[message] < 0) throw std::logic_error("Programs::graph: a lane waits for a message its GPU never sends");
    g.nodes[node].deps.push_back(signal[message]);
  }
  return g;
}

}  // namespace moesim
