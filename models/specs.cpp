#include "models/specs.hpp"

#include <fmt/format.h>

#include <cmath>
#include <map>

#include "models/embedded.hpp"
#include "core/error.hpp"
#include "core/units.hpp"
#include "core/strings.hpp"

namespace moesim {
namespace {

std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& [path, text] : embedded_presets()) {
    if (path.rfind(dir + "/", 0) == 0 && path.size() > dir.size() + 6) {
      out.push_back(path.substr(dir.size() + 1, path.size() - dir.size() - 6));
    }
  }
  return out;
}


// Loads preset `name` from `dir`; the error names the key that asked for it.
Cfg preset_cfg(const std::string& dir, const std::string& name, const Cfg& asker, const std::string& key) {
  auto it = embedded_presets().find(dir + "/" + name + ".yaml");
  if (it == embedded_presets().end()) {
    asker.fail(key, fmt::format("unknown preset '{}'; available: {}", name, join(names_in(dir))));
  }
  std::string origin = "models/" + dir + "/" + name + ".yaml";
  return Cfg(load_yaml_string(std::string(it->second), origin), origin, "");
}

std::vector<std::string> read_sources(Cfg& c, const std::vector<std::string>& def) {
  c.touch("sources");
  if (!c.has("sources")) return def;
  std::vector<std::string> out;
  const YAML::Node& n = c.node()["sources"];
  if (!n.IsSequence()) c.fail("sources", "expected a list of strings (where the figures come from)");
  for (std::size_t i = 0; i < n.size(); ++i) {
    if (!n[i].IsScalar()) c.fail("sources", fmt::format("item {} must be a string", i));
    out.push_back(n[i].Scalar());
  }
  return out;
}

GpuProfile parse_gpu(Cfg& c, const GpuProfile& b) {
  GpuProfile g = b;
  g.name = c.get_string("name", b.name);
  g.arch = c.get_enum("arch", b.arch.empty() ? "ampere" : b.arch, {"ampere", "hopper"});
  g.peak_tflops = c.get_double("peak_tflops", b.peak_tflops, 1e-3, 1e6);
  g.hbm_bytes = c.get_double("hbm_bytes", b.hbm_bytes, 1e6, 1e15);
  g.hbm_gbps = c.get_double("hbm_gbps", b.hbm_gbps, 1e-3, 1e6);
  g.nvlink_links = static_cast<int>(c.get_int("nvlink_links", b.nvlink_links, 0, 64));
  g.nvlink_gbps = c.get_double("nvlink_gbps", b.nvlink_gbps, 0, 1e5);
  g.nccl_nvlink_link_gbps = c.get_double("nccl_nvlink_link_gbps", b.nccl_nvlink_link_gbps, 0, 1e4);
  g.gemm_efficiency = c.get_double("gemm_efficiency", b.gemm_efficiency, 1e-3, 1.0);
  g.sms = static_cast<int>(c.get_int("sms", b.sms, 0, 4096));
  g.sources = read_sources(c, b.sources);
  return g;
}

// `inherited`: the GPU of the cluster preset underneath, which a mapping without `preset:`
// overrides (so an overlay can set `cluster.gpu.gemm_efficiency` alone); empty name: none.
GpuProfile load_gpu(Cfg& parent, const std::string& key, const GpuProfile& inherited) {
  const YAML::Node& n = parent.node();
  YAML::Node v = n[key];
  if (v && v.IsScalar()) {
    std::string name = parent.get_string(key, "");
    Cfg p = preset_cfg("hardware", name, parent, key);
    GpuProfile g = parse_gpu(p, GpuProfile{});
    p.finish();
    return g;
  }
  Cfg c = parent.child(key);
  GpuProfile base = inherited;
  if (inherited.name.empty() || c.has("preset")) {
    std::string preset = c.need_string("preset");
    Cfg p = preset_cfg("hardware", preset, c, "preset");
    base = parse_gpu(p, GpuProfile{});
    p.finish();
  } else {
    c.touch("preset");
  }
  GpuProfile g = parse_gpu(c, base);
  c.finish();
  return g;
}

// `fabric:` on top of the base's: keys default to the base's fat tree, all are required when the
// base has none.
void parse_fabric(Cfg& parent, ClusterSpec& s, const ClusterSpec& b) {
  parent.touch("fabric");
  if (!parent.has("fabric")) return;
  Cfg f = parent.child("fabric");
  const bool inherit = b.fabric == FabricKind::FatTree;
  const std::string kind = f.get_enum("kind", inherit ? "fat_tree" : "single", {"single", "fat_tree"});
  if (kind == "single") {
    s.fabric = FabricKind::Single;
    s.fat_tree = FatTreeSpec{};
    f.finish();
    return;
  }
  s.fabric = FabricKind::FatTree;
  FatTreeSpec t = inherit ? b.fat_tree : FatTreeSpec{};
  auto num = [&](const char* key, double def, double min, double max) {
    return inherit ? f.get_double(key, def, min, max) : f.need_double(key, min, max);
  };
  auto count = [&](const char* key, int def, int max) {
    return static_cast<int>(inherit ? f.get_int(key, def, 1, max) : f.need_int(key, 1, max));
  };
  t.nodes_per_leaf = count("nodes_per_leaf", t.nodes_per_leaf, 1 << 20);
  t.spines = count("spines", t.spines, 1 << 16);
  t.oversubscription = num("oversubscription", t.oversubscription, 1.0, 1e3);
  t.leaf_latency_ns = num("leaf_latency_ns", t.leaf_latency_ns, 0.0, 1e9);
  t.spine_latency_ns = num("spine_latency_ns", t.spine_latency_ns, 0.0, 1e9);
  s.fat_tree = t;
  f.finish();
}

// `topology:` replaces the base's graph; nodes and GPUs per node follow from its gpu vertices.
void parse_topology(Cfg& parent, ClusterSpec& s) {
  parent.touch("topology");
  if (!parent.has("topology")) return;
  for (const char* key : {"nodes", "gpus_per_node", "fabric"}) {
    if (parent.has(key))
      parent.fail(key, "cannot be set together with topology: (the topology describes it)");
  }
  Cfg t = parent.child("topology");
  TopologySpec topo;
  std::map<std::string, std::size_t> index;  // vertex name -> position in topo.vertices
  auto items = [&](const char* key, const char* what, auto&& f) {
    t.touch(key);
    const YAML::Node& n = t.node()[key];
    if (!n || !n.IsSequence() || n.size() == 0)
      t.fail(key, fmt::format("is required: a non-empty list of {}", what));
    for (std::size_t i = 0; i < n.size(); ++i) {
      if (!n[i].IsMap()) t.fail(key, fmt::format("item {} must be a mapping ({})", i, what));
      Cfg item(n[i], t.origin(), fmt::format("{}.{}[{}]", t.path(), key, i));
      item.set_overrides(t.overrides());
      item.set_origins(t.origins());
      f(item);
      item.finish();
    }
  };
  items("vertices", "{name, kind, node}", [&](Cfg& item) {
    TopologyVertexSpec v;
    v.where = item.where("");
    v.name = item.need_string("name");
    if (!item.has("kind")) item.fail("kind", "is required: gpu, host, node_switch, nic or switch");
    v.kind = item.get_enum("kind", "", {"gpu", "host", "node_switch", "nic", "switch"});
    if (v.kind == "gpu" || v.kind == "host") {
      v.node = static_cast<int>(item.need_int("node", 0, (1 << 20) - 1));
    } else if (item.has("node")) {
      item.fail("node", fmt::format("is only allowed on gpu and host vertices, not on a {}", v.kind));
    }
    auto [it, fresh] = index.emplace(v.name, topo.vertices.size());
    if (!fresh)
      item.fail("name", fmt::format("vertex '{}' is already declared at {}", v.name,
                                    topo.vertices[it->second].where));
    topo.vertices.push_back(std::move(v));
  });
  items("links", "{a, b, gbps, latency_ns}", [&](Cfg& item) {
    TopologyLinkSpec l;
    l.where = item.where("");
    for (auto [key, name] : {std::pair<const char*, std::string*>{"a", &l.a}, {"b", &l.b}}) {
      *name = item.need_string(key);
      if (!index.count(*name))
        item.fail(key, fmt::format("unknown vertex '{}'; declare it under topology.vertices", *name));
    }
    if (l.a == l.b) item.fail("b", fmt::format("links vertex '{}' to itself", l.a));
    l.gbps = item.need_double("gbps", -1e12, 1e12);
    if (!(l.gbps > 0.0)) item.fail("gbps", fmt::format("{} GB/s: a link's bandwidth must be > 0", l.gbps));
    l.latency_ns = item.need_double("latency_ns", 0.0, 1e9);
    topo.links.push_back(std::move(l));
  });
  t.finish();
  // Nodes 0 .. N-1 each with the same number of GPUs; each GPU with one link to its node's host.
  std::vector<int> gpus;
  for (const auto& v : topo.vertices) {
    if (v.kind != "gpu") continue;
    if (static_cast<int>(gpus.size()) <= v.node) gpus.resize(static_cast<std::size_t>(v.node) + 1, 0);
    ++gpus[static_cast<std::size_t>(v.node)];
  }
  if (gpus.empty()) t.fail("vertices", "has no gpu vertex");
  for (std::size_t n = 0; n < gpus.size(); ++n) {
    if (gpus[n] != gpus[0]) {
      t.fail("vertices",
             fmt::format("node {} has {} GPUs but node 0 has {}; every node needs the same count (GPU "
                         "ids are node * gpus_per_node + the GPU's rank in its node)",
                         n, gpus[n], gpus[0]));
    }
  }
  for (const auto& v : topo.vertices) {
    if (v.kind == "host" && v.node >= static_cast<int>(gpus.size())) {
      throw InputError(fmt::format("{}: host '{}' is on node {}, but the GPUs are on nodes 0 to {}", v.where,
                                   v.name, v.node, gpus.size() - 1));
    }
    if (v.kind != "gpu") continue;
    int host_links = 0;
    for (const auto& l : topo.links) {
      const std::string* other = l.a == v.name ? &l.b : l.b == v.name ? &l.a : nullptr;
      if (other && topo.vertices[index.at(*other)].kind == "host") ++host_links;
    }
    if (host_links != 1) {
      throw InputError(
          fmt::format("{}: GPU '{}' has {} links to a host; it needs exactly one (its PCIe link, "
                      "which host copies use)",
                      v.where, v.name, host_links));
    }
  }
  s.nodes = static_cast<int>(gpus.size());
  s.gpus_per_node = gpus[0];
  s.fabric = FabricKind::Single;
  s.fat_tree = FatTreeSpec{};
  s.topology = std::move(topo);
}

ClusterSpec parse_cluster(Cfg& c, const ClusterSpec& b) {
  ClusterSpec s = b;
  s.name = c.get_string("name", b.name);
  s.nodes = static_cast<int>(c.get_int("nodes", b.nodes, 1, 1 << 20));
  s.gpus_per_node = static_cast<int>(c.get_int("gpus_per_node", b.gpus_per_node, 1, 1024));
  std::string intra = b.intra_node == IntraNode::NVSwitch ? "nvswitch" : b.intra_node == IntraNode::PCIe ? "pcie" : "none";
  intra = c.get_enum("intra_node", intra, {"nvswitch", "pcie", "none"});
  s.intra_node = intra == "nvswitch" ? IntraNode::NVSwitch : intra == "pcie" ? IntraNode::PCIe : IntraNode::None;
  s.pcie_gbps = c.get_double("pcie_gbps", b.pcie_gbps, 1e-3, 1e5);
  s.nccl_pci_gbps = c.get_double("nccl_pci_gbps", b.nccl_pci_gbps, 1e-3, 1e5);
  s.nic_gbit = c.get_double("nic_gbit", b.nic_gbit, 1e-3, 1e6);
  s.nics_per_node = static_cast<int>(c.get_int("nics_per_node", b.nics_per_node, 1, 1024));
  s.nic_efficiency = c.get_double("nic_efficiency", b.nic_efficiency, 1e-3, 1.0);
  s.nic_latency_ns = c.get_double("nic_latency_ns", b.nic_latency_ns, 0, 1e9);
  s.host_memory_bytes = c.get_double("host_memory_bytes", b.host_memory_bytes, 1e6, 1e18);
  s.sources = read_sources(c, b.sources);
  if (c.has("gpu")) s.gpu = load_gpu(c, "gpu", b.gpu);
  else c.touch("gpu");
  if (b.topology) {
    for (const char* key : {"nodes", "gpus_per_node", "fabric"}) {
      if (c.has(key) && !c.has("topology")) c.fail(key, "cannot be set: the preset's topology describes it");
    }
  }
  parse_fabric(c, s, b);
  parse_topology(c, s);
  return s;
}

void check_cluster(const ClusterSpec& s, Cfg& c) {
  if (s.gpu.name.empty()) c.fail("gpu", "is required (a GPU preset name or a mapping with preset:)");
  // Without a preset nothing supplies these: a zero would silently mean an infinitely slow link.
  auto need = [&](const char* key, double v) {
    if (v <= 0.0) c.fail(key, "is required (no preset sets it); it must be > 0");
  };
  need("pcie_gbps", s.pcie_gbps);
  need("host_memory_bytes", s.host_memory_bytes);
  if (s.intra_node == IntraNode::PCIe) need("nccl_pci_gbps", s.nccl_pci_gbps);
  if (s.nodes > 1) {
    need("nic_gbit", s.nic_gbit);
    need("nics_per_node", s.nics_per_node);
    need("nic_efficiency", s.nic_efficiency);
  }
  if (s.intra_node == IntraNode::NVSwitch && s.gpu.nvlink_links == 0 && s.gpus_per_node > 1) {
    c.fail("intra_node", fmt::format("is nvswitch but GPU '{}' has no NVLink links", s.gpu.name));
  }
  if (s.fabric == FabricKind::FatTree && s.nics_per_node > 0 && s.gpus_per_node % s.nics_per_node != 0) {
    c.fail("fabric",
           fmt::format("is a rail-optimised fat tree: nics_per_node ({}) must divide gpus_per_node ({}) so "
                       "that each NIC serves the same GPUs",
                       s.nics_per_node, s.gpus_per_node));
  }
  if (s.intra_node == IntraNode::None && s.gpus_per_node > 1) {
    c.fail("intra_node", fmt::format("is none but gpus_per_node is {}; use nvswitch or pcie", s.gpus_per_node));
  }
}

DType parse_dtype(const std::string& s) {
  return s == "fp16" ? DType::FP16 : s == "fp32" ? DType::FP32 : DType::BF16;
}

MoeModelSpec parse_model(Cfg& c, const MoeModelSpec& b) {
  MoeModelSpec m = b;
  m.name = c.get_string("name", b.name);
  m.layers = static_cast<int>(c.get_int("layers", b.layers, 1, 100000));
  m.hidden = static_cast<int>(c.get_int("hidden", b.hidden, 1, 1 << 20));
  m.heads = static_cast<int>(c.get_int("heads", b.heads, 1, 1 << 16));
  m.kv_heads = static_cast<int>(c.get_int("kv_heads", b.kv_heads ? b.kv_heads : m.heads, 1, 1 << 16));
  m.head_dim = static_cast<int>(c.get_int("head_dim", b.head_dim ? b.head_dim : (m.heads > 0 ? m.hidden / m.heads : 0), 1, 1 << 16));
  m.ffn_hidden = static_cast<int>(c.get_int("ffn_hidden", b.ffn_hidden, 1, 1 << 24));
  m.expert_ffn_hidden = static_cast<int>(c.get_int("expert_ffn_hidden", b.expert_ffn_hidden, 1, 1 << 24));
  m.ffn_matrices = static_cast<int>(c.get_int("ffn_matrices", b.ffn_matrices, 2, 3));
  m.experts = static_cast<int>(c.get_int("experts", b.experts, 1, 1 << 16));
  m.top_k = static_cast<int>(c.get_int("top_k", b.top_k, 1, 1 << 16));
  m.shared_experts = static_cast<int>(c.get_int("shared_experts", b.shared_experts, 0, 1024));
  m.first_dense_layers = static_cast<int>(c.get_int("first_dense_layers", b.first_dense_layers, 0, 100000));
  m.moe_layer_interval = static_cast<int>(c.get_int("moe_layer_interval", b.moe_layer_interval, 1, 100000));
  m.vocab = static_cast<int>(c.get_int("vocab", b.vocab, 1, 1 << 26));
  m.seq_len = static_cast<int>(c.get_int("seq_len", b.seq_len, 1, 1 << 24));
  m.micro_batch_per_gpu = static_cast<int>(c.get_int("micro_batch_per_gpu", b.micro_batch_per_gpu, 1, 1 << 20));
  m.dtype = parse_dtype(c.get_enum("dtype", to_string(b.dtype), {"bf16", "fp16", "fp32"}));
  m.sources = read_sources(c, b.sources);
  return m;
}

}  // namespace

int dtype_bytes(DType d) { return d == DType::FP32 ? 4 : 2; }
const char* to_string(DType d) { return d == DType::FP32 ? "fp32" : d == DType::FP16 ? "fp16" : "bf16"; }

double ClusterSpec::intra_gbps() const {
  switch (intra_node) {
    case IntraNode::NVSwitch: return gpu.nvlink_links * gpu.nccl_nvlink_link_gbps;
    case IntraNode::PCIe: return nccl_pci_gbps;
    case IntraNode::None: return 0.0;
  }
  return 0.0;
}

double ClusterSpec::nic_gbps() const {
  // NICs are shared evenly by the GPUs of a node.
  double per_node = nics_per_node * gbit_to_gbyte(nic_gbit) * nic_efficiency;
  return per_node / gpus_per_node;
}

bool MoeModelSpec::is_moe_layer(int layer) const {
  if (layer < first_dense_layers) return false;
  return (layer - first_dense_layers) % moe_layer_interval == 0;
}

int MoeModelSpec::num_moe_layers() const {
  int n = 0;
  for (int l = 0; l < layers; ++l) n += is_moe_layer(l) ? 1 : 0;
  return n;
}

double MoeModelSpec::expert_params() const {
  return static_cast<double>(hidden) * expert_ffn_hidden * ffn_matrices;
}

double MoeModelSpec::attention_params() const {
  double q = static_cast<double>(hidden) * heads * head_dim;
  double kv = 2.0 * hidden * kv_heads * head_dim;
  double o = static_cast<double>(heads) * head_dim * hidden;
  return q + kv + o + 2.0 * hidden;  // plus two norms
}

double MoeModelSpec::dense_params_total() const {
  double p = static_cast<double>(vocab) * hidden;  // tied embedding / LM head
  for (int l = 0; l < layers; ++l) {
    p += attention_params();
    if (is_moe_layer(l)) {
      p += static_cast<double>(hidden) * experts;  // router
      p += shared_experts * expert_params();
    } else {
      p += static_cast<double>(hidden) * ffn_hidden * ffn_matrices;
    }
  }
  return p;
}

std::vector<std::string> gpu_preset_names() { return names_in("hardware"); }
std::vector<std::string> cluster_preset_names() { return names_in("clusters"); }
std::vector<std::string> model_preset_names() { return names_in("moe"); }

ClusterSpec load_cluster(Cfg c) {
  ClusterSpec base;
  if (c.has("preset")) {
    Cfg p = preset_cfg("clusters", c.get_string("preset", ""), c, "preset");
    base = parse_cluster(p, ClusterSpec{});
    p.finish();
  } else {
    c.touch("preset");
  }
  ClusterSpec s = parse_cluster(c, base);
  check_cluster(s, c);
  c.finish();
  return s;
}

MoeModelSpec load_model(Cfg c) {
  MoeModelSpec base;
  if (c.has("preset")) {
    Cfg p = preset_cfg("moe", c.get_string("preset", ""), c, "preset");
    base = parse_model(p, MoeModelSpec{});
    p.finish();
  } else {
    c.touch("preset");
  }
  MoeModelSpec m = parse_model(c, base);
  // Without a preset nothing supplies these.
  const std::pair<const char*, int> required[] = {
      {"layers", m.layers},       {"hidden", m.hidden},   {"heads", m.heads},
      {"ffn_hidden", m.ffn_hidden}, {"expert_ffn_hidden", m.expert_ffn_hidden},
      {"experts", m.experts},     {"vocab", m.vocab},     {"seq_len", m.seq_len},
      {"micro_batch_per_gpu", m.micro_batch_per_gpu}};
  for (const auto& [key, v] : required)
    if (v <= 0) c.fail(key, "is required (no preset sets it); it must be >= 1");
  if (m.top_k > m.experts) c.fail("top_k", fmt::format("{} exceeds experts ({})", m.top_k, m.experts));
  if (m.num_moe_layers() == 0) c.fail("first_dense_layers", "leaves no MoE layer");
  c.finish();
  return m;
}

}  // namespace moesim
