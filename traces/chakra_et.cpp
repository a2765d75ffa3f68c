#include "traces/chakra_et.hpp"

#include <fmt/format.h>

#include "core/error.hpp"

#ifdef MOESIM_HAVE_CHAKRA
#include <fcntl.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "et_def.pb.h"
#endif

namespace moesim {

#ifndef MOESIM_HAVE_CHAKRA

bool chakra_supported() { return false; }

namespace {
[[noreturn]] void no_chakra() {
  throw InputError(
      "moesim was built without Chakra trace support: install libprotobuf-dev and protobuf-compiler (Debian) "
      "and configure the build again");
}
}  // namespace

void write_chakra_et(const OpGraph&, const std::string&, const std::string&) { no_chakra(); }
OpGraph read_chakra_et(const std::string&, const std::string&) { no_chakra(); }

#else

bool chakra_supported() { return true; }

namespace {

namespace pb = ChakraProtoMsg;
namespace fs = std::filesystem;

// The attributes moesim adds to Chakra's (their names start with "moesim_").
constexpr const char* kDurationNs = "moesim_duration_ns";

pb::CollectiveCommType chakra_type(CommKind k) {
  switch (k) {
    case CommKind::AllReduce: return pb::ALL_REDUCE;
    case CommKind::AllGather: return pb::ALL_GATHER;
    case CommKind::ReduceScatter: return pb::REDUCE_SCATTER;
    case CommKind::Broadcast: return pb::BROADCAST;
    case CommKind::AllToAll:
    case CommKind::PointToPoint:
    case CommKind::Unknown: return pb::ALL_TO_ALL;
  }
  return pb::ALL_TO_ALL;
}

CommKind moesim_kind(std::int64_t t) {
  switch (t) {
    case pb::ALL_REDUCE: return CommKind::AllReduce;
    case pb::ALL_GATHER: return CommKind::AllGather;
    case pb::REDUCE_SCATTER:
    case pb::REDUCE_SCATTER_BLOCK: return CommKind::ReduceScatter;
    case pb::BROADCAST: return CommKind::Broadcast;
    case pb::ALL_TO_ALL: return CommKind::AllToAll;
    default: return CommKind::Unknown;
  }
}

void add_int(pb::Node& n, const char* name, std::int64_t v) {
  pb::AttributeProto* a = n.add_attr();
  a->set_name(name);
  a->set_int64_val(v);
}

void add_int32(pb::Node& n, const char* name, std::int32_t v) {
  pb::AttributeProto* a = n.add_attr();
  a->set_name(name);
  a->set_int32_val(v);
}

void add_list(pb::Node& n, const char* name, const std::vector<double>& v) {
  pb::AttributeProto* a = n.add_attr();
  a->set_name(name);
  for (double x : v) a->mutable_int64_list()->add_values(static_cast<std::int64_t>(std::llround(x)));
}

void append_delimited(std::string& out, const google::protobuf::MessageLite& m) {
  google::protobuf::io::StringOutputStream so(&out);
  google::protobuf::io::CodedOutputStream co(&so);
  co.WriteVarint32(static_cast<std::uint32_t>(m.ByteSizeLong()));
  m.SerializeWithCachedSizes(&co);
}

void write_atomically(const fs::path& path, const std::string& content) {
  const std::string tmp = path.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  auto fail = [&](const char* what) {
    const std::string reason = std::strerror(errno);
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw InputError(fmt::format("{}: {} failed: {}", path.string(), what, reason));
  };
  if (fd < 0) fail("open");
  std::size_t done = 0;
  while (done < content.size()) {
    const ssize_t w = ::write(fd, content.data() + done, content.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail("write");
    }
    done += static_cast<std::size_t>(w);
  }
  if (::fsync(fd) != 0) fail("fsync");
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw InputError(fmt::format("{}: close failed: {}", path.string(), std::strerror(errno)));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    ::unlink(tmp.c_str());
    throw InputError(fmt::format("{}: cannot rename {} to it: {}", path.string(), tmp, ec.message()));
  }
}

std::string file_of(const std::string& dir, const std::string& prefix, int rank) {
  return (fs::path(dir) / fmt::format("{}.{}.et", prefix, rank)).string();
}

}  // namespace

void write_chakra_et(const OpGraph& g, const std::string& dir, const std::string& prefix) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw InputError(fmt::format("{}: cannot make the folder: {}", dir, ec.message()));
  // Process groups: one name per distinct member set, numbered from 1 as ASTRA-sim's files are.
  std::map<std::vector<int>, int> pg_of;
  nlohmann::ordered_json groups = nlohmann::ordered_json::object();
  for (const auto& m : g.collective_members)
    if (pg_of.emplace(m, static_cast<int>(pg_of.size()) + 1).second) groups[std::to_string(pg_of.size())] = m;
  // Each rank's nodes, numbered within its file.
  std::vector<std::vector<std::size_t>> of_rank(static_cast<std::size_t>(g.ranks));
  std::vector<std::uint64_t> local(g.nodes.size(), 0);
  for (std::size_t i = 0; i < g.nodes.size(); ++i) {
    auto& v = of_rank[static_cast<std::size_t>(g.nodes[i].rank)];
    local[i] = v.size();
    v.push_back(i);
  }
  for (int r = 0; r < g.ranks; ++r) {
    std::string out;
    pb::GlobalMetadata meta;
    meta.set_version("0.0.4");
    pb::AttributeProto* a = meta.add_attr();
    a->set_name("moesim_rank");
    a->set_int64_val(r);
    append_delimited(out, meta);
    for (std::size_t i : of_rank[static_cast<std::size_t>(r)]) {
      const OpGraph::Node& x = g.nodes[i];
      pb::Node n;
      n.set_id(local[i]);
      n.set_name(x.name);
      for (std::int64_t d : x.deps) {
        if (g.nodes[static_cast<std::size_t>(d)].rank != r)
          throw std::logic_error("write_chakra_et: a dependency crosses ranks");
        n.add_data_deps(local[static_cast<std::size_t>(d)]);
      }
      n.set_duration_micros(static_cast<std::uint64_t>((x.duration_ns + 500) / 1000));
      switch (x.kind) {
        case OpGraph::Kind::Compute:
          n.set_type(pb::COMP_NODE);
          add_int(n, kDurationNs, x.duration_ns);
          break;
        case OpGraph::Kind::Collective: {
          n.set_type(pb::COMM_COLL_NODE);
          add_int(n, "comm_type", chakra_type(x.comm));
          add_int(n, "comm_size", static_cast<std::int64_t>(std::llround(x.bytes)));
          pb::AttributeProto* pg = n.add_attr();
          pg->set_name("pg_name");
          pg->set_string_val(std::to_string(pg_of.at(g.collective_members[static_cast<std::size_t>(x.collective)])));
          if (!x.out_split_bytes.empty()) {
            add_list(n, "in_split_sizes", x.in_split_bytes);
            add_list(n, "out_split_sizes", x.out_split_bytes);
          }
          add_int(n, kDurationNs, x.duration_ns);
          break;
        }
        case OpGraph::Kind::Send:
        case OpGraph::Kind::Recv:
          n.set_type(x.kind == OpGraph::Kind::Send ? pb::COMM_SEND_NODE : pb::COMM_RECV_NODE);
          add_int32(n, "comm_src", x.kind == OpGraph::Kind::Send ? r : x.peer);
          add_int32(n, "comm_dst", x.kind == OpGraph::Kind::Send ? x.peer : r);
          add_int32(n, "comm_tag", static_cast<std::int32_t>(x.tag));
          add_int(n, "comm_size", static_cast<std::int64_t>(std::llround(x.bytes)));
          if (x.kind == OpGraph::Kind::Send) add_int(n, kDurationNs, x.duration_ns);
          break;
      }
      append_delimited(out, n);
    }
    write_atomically(file_of(dir, prefix, r), out);
  }
  write_atomically(fs::path(dir) / "comm_group.json", groups.dump(1) + "\n");
}

namespace {

// One rank's file, parsed.
struct RankFile {
  std::string path;
  std::vector<pb::Node> nodes;
};

RankFile read_rank(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string data = ss.str();
  google::protobuf::io::ArrayInputStream ai(data.data(), static_cast<int>(data.size()));
  google::protobuf::io::CodedInputStream ci(&ai);
  RankFile f;
  f.path = path;
  bool first = true;
  for (;;) {
    const int at = ci.CurrentPosition();
    std::uint32_t size = 0;
    if (!ci.ReadVarint32(&size)) {
      if (at == static_cast<int>(data.size())) break;
      throw InputError(fmt::format("{}: byte {}: a message length that does not parse", path, at));
    }
    if (size > data.size() - static_cast<std::size_t>(ci.CurrentPosition()))
      throw InputError(fmt::format("{}: byte {}: a message of {} bytes but only {} are left", path, at, size,
                                   data.size() - static_cast<std::size_t>(ci.CurrentPosition())));
    const auto limit = ci.PushLimit(static_cast<int>(size));
    bool ok = false;
    if (first) {
      pb::GlobalMetadata meta;
      ok = meta.ParseFromCodedStream(&ci);
    } else {
      pb::Node n;
      ok = n.ParseFromCodedStream(&ci);
      if (ok) f.nodes.push_back(std::move(n));
    }
    if (!ok || !ci.ConsumedEntireMessage())
      throw InputError(fmt::format("{}: byte {}: not a Chakra {} message", path, at, first ? "GlobalMetadata" : "Node"));
    ci.PopLimit(limit);
    first = false;
  }
  if (first) throw InputError(fmt::format("{}: empty: a Chakra trace starts with its GlobalMetadata", path));
  return f;
}

const pb::AttributeProto* attr(const pb::Node& n, const char* name) {
  for (const pb::AttributeProto& a : n.attr())
    if (a.name() == name) return &a;
  return nullptr;
}

// An integer attribute of any of Chakra's integer kinds.
bool int_attr(const pb::Node& n, const char* name, std::int64_t& v) {
  const pb::AttributeProto* a = attr(n, name);
  if (a == nullptr) return false;
  switch (a->value_case()) {
    case pb::AttributeProto::kInt64Val: v = a->int64_val(); return true;
    case pb::AttributeProto::kInt32Val: v = a->int32_val(); return true;
    case pb::AttributeProto::kUint32Val: v = a->uint32_val(); return true;
    case pb::AttributeProto::kUint64Val: v = static_cast<std::int64_t>(a->uint64_val()); return true;
    case pb::AttributeProto::kSint64Val: v = a->sint64_val(); return true;
    case pb::AttributeProto::kSint32Val: v = a->sint32_val(); return true;
    default: return false;
  }
}

}  // namespace

OpGraph read_chakra_et(const std::string& dir, const std::string& prefix) {
  std::vector<RankFile> files;
  std::error_code ec;  // the error_code forms: a name the OS refuses reads as absent
  while (fs::is_regular_file(file_of(dir, prefix, static_cast<int>(files.size())), ec))
    files.push_back(read_rank(file_of(dir, prefix, static_cast<int>(files.size()))));
  if (files.empty()) throw InputError(fmt::format("{}: no {}.0.et in it (Chakra files are PREFIX.RANK.et)", dir, prefix));
  OpGraph g;
  g.ranks = static_cast<int>(files.size());
  // Process groups from comm_group.json; a collective without pg_name spans every rank.
  std::map<std::string, std::vector<int>> groups;
  const fs::path cg = fs::path(dir) / "comm_group.json";
  if (fs::is_regular_file(cg, ec)) {
    std::ifstream in(cg);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      throw InputError(fmt::format("{}: not JSON: {}", cg.string(), e.what()));
    }
    if (!j.is_object()) throw InputError(fmt::format("{}: expected an object of process groups", cg.string()));
    for (const auto& [name, ranks] : j.items()) {
      if (!ranks.is_array()) throw InputError(fmt::format("{}: group '{}': expected a list of ranks", cg.string(), name));
      std::vector<int> v;
      for (const auto& x : ranks) {
        if (!x.is_number_integer() || x.get<std::int64_t>() < 0 || x.get<std::int64_t>() >= g.ranks)
          throw InputError(fmt::format("{}: group '{}': rank {} is not one of 0..{}", cg.string(), name, x.dump(),
                                       g.ranks - 1));
        v.push_back(x.get<int>());
      }
      std::sort(v.begin(), v.end());
      groups[name] = std::move(v);
    }
  }
  std::vector<int> everyone(static_cast<std::size_t>(g.ranks));
  for (int r = 0; r < g.ranks; ++r) everyone[static_cast<std::size_t>(r)] = r;
  // Collective instances: the k-th collective of group P on each of its ranks.
  std::map<std::pair<std::string, std::int64_t>, int> instance;
  for (int r = 0; r < g.ranks; ++r) {
    const RankFile& f = files[static_cast<std::size_t>(r)];
    std::map<std::uint64_t, std::int64_t> index;  // node id -> graph index
    const auto base = static_cast<std::int64_t>(g.nodes.size());
    for (std::size_t k = 0; k < f.nodes.size(); ++k)
      if (!index.emplace(f.nodes[k].id(), base + static_cast<std::int64_t>(k)).second)
        throw InputError(fmt::format("{}: node id {} is given twice", f.path, f.nodes[k].id()));
    std::map<std::string, std::int64_t> seen;  // collectives so far, per group
    for (const pb::Node& n : f.nodes) {
      auto where = [&](const char* field) { return fmt::format("{}: node {} ('{}'), {}", f.path, n.id(), n.name(), field); };
      OpGraph::Node x;
      x.rank = r;
      x.name = n.name();
      for (auto deps : {&n.data_deps(), &n.ctrl_deps()})
        for (std::uint64_t d : *deps) {
          const auto it = index.find(d);
          if (it == index.end()) throw InputError(fmt::format("{}: node {} is not in this file", where("data_deps"), d));
          x.deps.push_back(it->second);
        }
      std::int64_t ns = 0;
      if (int_attr(n, kDurationNs, ns)) {
        if (ns < 0 || ns > kMaxGraphNodeNs)
          throw InputError(fmt::format("{}: {} ns; allowed: 0 to 2^50", where(kDurationNs), ns));
        x.duration_ns = ns;
      } else {
        if (n.duration_micros() > static_cast<std::uint64_t>(kMaxGraphNodeNs / 1000))
          throw InputError(fmt::format("{}: {} us; allowed: 0 to 2^50 ns", where("duration_micros"), n.duration_micros()));
        x.duration_ns = static_cast<TimeNs>(n.duration_micros()) * 1000;
      }
      std::int64_t v = 0;
      if (int_attr(n, "comm_size", v)) {
        if (v < 0) throw InputError(fmt::format("{}: {} bytes is negative", where("comm_size"), v));
        x.bytes = static_cast<double>(v);
      }
      switch (n.type()) {
        case pb::COMP_NODE:
        case pb::MEM_LOAD_NODE:
        case pb::MEM_STORE_NODE:
        case pb::METADATA_NODE: x.kind = OpGraph::Kind::Compute; break;
        case pb::COMM_COLL_NODE: {
          x.kind = OpGraph::Kind::Collective;
          if (!int_attr(n, "comm_type", v)) throw InputError(fmt::format("{}: missing (a collective needs it)", where("comm_type")));
          x.comm = moesim_kind(v);
          std::string pg;
          if (const pb::AttributeProto* a = attr(n, "pg_name"); a != nullptr) pg = a->string_val();
          const std::vector<int>* members = &everyone;
          if (!pg.empty()) {
            const auto it = groups.find(pg);
            if (it == groups.end())
              throw InputError(fmt::format("{}: process group '{}' is not in {}", where("pg_name"), pg, cg.string()));
            members = &it->second;
          }
          if (!std::binary_search(members->begin(), members->end(), r))
            throw InputError(fmt::format("{}: rank {} is not in its process group '{}'", where("pg_name"), r, pg));
          const auto key = std::make_pair(pg, seen[pg]++);
          auto [it, fresh] = instance.emplace(key, static_cast<int>(g.collective_members.size()));
          if (fresh) g.collective_members.push_back(*members);
          x.collective = it->second;
          for (const char* name : {"in_split_sizes", "out_split_sizes"})
            if (const pb::AttributeProto* a = attr(n, name); a != nullptr) {
              auto& out = name[0] == 'i' ? x.in_split_bytes : x.out_split_bytes;
              for (std::int64_t s : a->int64_list().values()) out.push_back(static_cast<double>(s));
              if (out.size() != members->size())
                throw InputError(fmt::format("{}: {} sizes for a group of {}", where(name), out.size(), members->size()));
            }
          break;
        }
        case pb::COMM_SEND_NODE:
        case pb::COMM_RECV_NODE: {
          const bool send = n.type() == pb::COMM_SEND_NODE;
          x.kind = send ? OpGraph::Kind::Send : OpGraph::Kind::Recv;
          x.comm = CommKind::PointToPoint;
          std::int64_t src = 0, dst = 0, tag = 0;
          if (!int_attr(n, "comm_src", src) || !int_attr(n, "comm_dst", dst))
            throw InputError(fmt::format("{}: missing (a send or receive needs both)", where("comm_src/comm_dst")));
          if ((send ? src : dst) != r)
            throw InputError(fmt::format("{}: {} in rank {}'s file", where(send ? "comm_src" : "comm_dst"),
                                         send ? src : dst, r));
          const std::int64_t peer = send ? dst : src;
          if (peer < 0 || peer >= g.ranks)
            throw InputError(fmt::format("{}: rank {}; allowed: 0..{}", where(send ? "comm_dst" : "comm_src"), peer,
                                         g.ranks - 1));
          x.peer = static_cast<int>(peer);
          x.tag = int_attr(n, "comm_tag", tag) ? tag : 0;
          if (!send) x.duration_ns = 0;
          break;
        }
        default:
          throw InputError(fmt::format("{}: node type {} is not one moesim replays", where("type"),
                                       static_cast<int>(n.type())));
      }
      g.nodes.push_back(std::move(x));
    }
  }
  return g;
}

#endif

}  // namespace moesim
