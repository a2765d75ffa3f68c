#include "sim/op_graph.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <tuple>

#include "core/error.hpp"

namespace moesim {

const char* to_string(CommKind k) {
  switch (k) {
    case CommKind::Unknown: return "unknown";
    case CommKind::AllReduce: return "all_reduce";
    case CommKind::AllGather: return "all_gather";
    case CommKind::ReduceScatter: return "reduce_scatter";
    case CommKind::AllToAll: return "all_to_all";
    case CommKind::Broadcast: return "broadcast";
    case CommKind::PointToPoint: return "point_to_point";
  }
  return "?";
}

GraphReplay replay_graph(const OpGraph& g, const std::string& source) {
  const std::size_t n = g.nodes.size();
  auto where = [&](std::size_t i) {
    const OpGraph::Node& x = g.nodes[i];
    return fmt::format("{}: node {} ('{}') of rank {}", source, i, x.name, x.rank);
  };
  std::vector<std::vector<std::size_t>> next(n);
  std::vector<std::size_t> waiting(n, 0);  // dependencies (and the send, for a receive) not ended
  std::vector<TimeNs> ready(n, 0), end(n, 0);
  for (std::size_t i = 0; i < n; ++i) {
    const OpGraph::Node& x = g.nodes[i];
    if (x.rank < 0 || x.rank >= g.ranks) throw InputError(fmt::format("{}: rank outside 0..{}", where(i), g.ranks - 1));
    if (x.duration_ns < 0 || x.duration_ns > kMaxGraphNodeNs)
      throw InputError(fmt::format("{}: duration {} ns; allowed: 0 to 2^50", where(i), x.duration_ns));
    for (std::int64_t d : x.deps) {
      if (d < 0 || static_cast<std::size_t>(d) >= n || static_cast<std::size_t>(d) == i)
        throw InputError(fmt::format("{}: dependency {} is not another node (0..{})", where(i), d, n - 1));
      next[static_cast<std::size_t>(d)].push_back(i);
      ++waiting[i];
    }
  }
  // Sends by (from, to, tag); each receive waits for its own.
  std::map<std::tuple<int, int, std::int64_t>, std::size_t> sends;
  for (std::size_t i = 0; i < n; ++i) {
    const OpGraph::Node& x = g.nodes[i];
    if (x.kind != OpGraph::Kind::Send) continue;
    if (x.peer < 0 || x.peer >= g.ranks) throw InputError(fmt::format("{}: destination rank {} outside 0..{}", where(i), x.peer, g.ranks - 1));
    if (!sends.emplace(std::make_tuple(x.rank, x.peer, x.tag), i).second)
      throw InputError(fmt::format("{}: a second send from rank {} to rank {} with tag {}", where(i), x.rank, x.peer, x.tag));
  }
  std::vector<std::size_t> send_of(n, n);
  std::vector<TimeNs> arrival(n, 0);
  for (std::size_t i = 0; i < n; ++i) {
    const OpGraph::Node& x = g.nodes[i];
    if (x.kind != OpGraph::Kind::Recv) continue;
    const auto it = sends.find(std::make_tuple(x.peer, x.rank, x.tag));
    if (it == sends.end())
      throw InputError(fmt::format("{}: receives from rank {} with tag {}, which no node sends", where(i), x.peer, x.tag));
    send_of[i] = it->second;
    next[it->second].push_back(i);
    ++waiting[i];
  }
  // Collective instances: their members, one node a member rank, one duration.
  const std::size_t instances = g.collective_members.size();
  std::vector<std::vector<std::size_t>> inst_nodes(instances);
  for (std::size_t i = 0; i < n; ++i) {
    const OpGraph::Node& x = g.nodes[i];
    if (x.kind != OpGraph::Kind::Collective) continue;
    if (x.collective < 0 || static_cast<std::size_t>(x.collective) >= instances)
      throw InputError(fmt::format("{}: collective instance {} outside 0..{}", where(i), x.collective, instances));
    inst_nodes[static_cast<std::size_t>(x.collective)].push_back(i);
  }
  for (std::size_t c = 0; c < instances; ++c) {
    std::vector<int> ranks;
    for (std::size_t i : inst_nodes[c]) ranks.push_back(g.nodes[i].rank);
    std::sort(ranks.begin(), ranks.end());
    if (ranks != g.collective_members[c])
      throw InputError(fmt::format("{}: collective {} is reached by ranks [{}] but its group is [{}]", source, c,
                                   fmt::join(ranks, ","), fmt::join(g.collective_members[c], ",")));
    for (std::size_t i : inst_nodes[c])
      if (g.nodes[i].duration_ns != g.nodes[inst_nodes[c].front()].duration_ns)
        throw InputError(fmt::format("{}: collective {} has {} ns here but {} ns on rank {}", where(i), c,
                                     g.nodes[i].duration_ns, g.nodes[inst_nodes[c].front()].duration_ns,
                                     g.nodes[inst_nodes[c].front()].rank));
  }
  std::vector<std::size_t> arrived(instances, 0);
  std::vector<TimeNs> inst_start(instances, 0);

  std::vector<std::size_t> done;  // nodes whose end is known, to be passed on
  done.reserve(n);
  auto after = [&](std::size_t i, TimeNs start, TimeNs d) {
    TimeNs t = 0;
    if (__builtin_add_overflow(start, d, &t))
      throw InputError(fmt::format("{}: the clock passes 2^63 ns here (the graph's times add up too far)", where(i)));
    return t;
  };
  auto become_ready = [&](std::size_t i) {
    const OpGraph::Node& x = g.nodes[i];
    switch (x.kind) {
      case OpGraph::Kind::Compute: end[i] = after(i, ready[i], x.duration_ns); done.push_back(i); break;
      case OpGraph::Kind::Send:
        end[i] = ready[i];
        arrival[i] = after(i, ready[i], x.duration_ns);
        done.push_back(i);
        break;
      case OpGraph::Kind::Recv: end[i] = ready[i]; done.push_back(i); break;
      case OpGraph::Kind::Collective: {
        const auto c = static_cast<std::size_t>(x.collective);
        inst_start[c] = std::max(inst_start[c], ready[i]);
        if (++arrived[c] == inst_nodes[c].size())
          for (std::size_t m : inst_nodes[c]) {
            end[m] = after(m, inst_start[c], x.duration_ns);
            done.push_back(m);
          }
        break;
      }
    }
  };
  for (std::size_t i = 0; i < n; ++i)
    if (waiting[i] == 0) become_ready(i);
  for (std::size_t k = 0; k < done.size(); ++k) {
    const std::size_t i = done[k];
    for (std::size_t s : next[i]) {
      const TimeNs t = (send_of[s] == i) ? arrival[i] : end[i];
      ready[s] = std::max(ready[s], t);
      if (--waiting[s] == 0) become_ready(s);
    }
  }
  if (done.size() != n) {
    std::vector<char> ended(n, 0);
    for (std::size_t i : done) ended[i] = 1;
    const std::size_t stuck = static_cast<std::size_t>(std::find(ended.begin(), ended.end(), 0) - ended.begin());
    throw InputError(fmt::format("{} never ends: {} of {} nodes ran; {} waits on a dependency cycle or on a "
                                 "collective some member never reaches",
                                 source, done.size(), n, where(stuck)));
  }
  GraphReplay r;
  r.rank_end_ns.assign(static_cast<std::size_t>(std::max(g.ranks, 0)), 0);
  for (std::size_t i = 0; i < n; ++i) {
    TimeNs& e = r.rank_end_ns[static_cast<std::size_t>(g.nodes[i].rank)];
    e = std::max(e, end[i]);
  }
  for (TimeNs e : r.rank_end_ns) r.makespan_ns = std::max(r.makespan_ns, e);
  r.node_end_ns = std::move(end);
  return r;
}

}  // namespace moesim
