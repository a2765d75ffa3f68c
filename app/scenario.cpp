#include "app/scenario.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>

#include "app/scenario_include.hpp"
#include "models/profile.hpp"
#include "sim/cluster.hpp"
#include "core/error.hpp"
#include "traces/aux_loss.hpp"

namespace moesim {
namespace {

// A profile given by path (with a slash or ending in .yaml) is relative to the scenario file;
// anything else names a shipped profile.
std::string resolve_profile(const std::string& name_or_path, const std::string& origin) {
  if (name_or_path.empty() || (name_or_path.find('/') == std::string::npos && !name_or_path.ends_with(".yaml")))
    return name_or_path;
  std::filesystem::path fp(name_or_path);
  if (fp.is_relative() && !origin.empty() && origin.front() != '<') fp = std::filesystem::path(origin).parent_path() / fp;
  return fp.lexically_normal().string();
}

// A profile that does not load is the scenario's error, at the key that names it.
void check_profile(const Cfg& c, const std::string& key, const std::string& resolved) {
  if (resolved.empty()) return;
  try {
    (void)load_profile(resolved);
  } catch (const InputError& e) {
    c.fail(key, e.what());
  }
}

TrainingSpec load_training(Cfg c) {
  TrainingSpec t;
  t.optimizer_offload = c.get_bool("optimizer_offload", t.optimizer_offload);
  t.grad_bytes_per_param = c.get_double("grad_bytes_per_param", t.grad_bytes_per_param, 1, 8);
  t.optimizer_bytes_per_param = c.get_double("optimizer_bytes_per_param", t.optimizer_bytes_per_param, 0, 64);
  t.adam_hbm_bytes_per_param = c.get_double("adam_hbm_bytes_per_param", t.adam_hbm_bytes_per_param, 0, 256);
  t.host_adam_params_per_s = c.get_double("host_adam_params_per_s", t.host_adam_params_per_s, 1e3, 1e15);
  t.layer_overhead_ns = c.get_double("layer_overhead_ns", t.layer_overhead_ns, 0, 1e10);
  c.finish();
  return t;
}

TraceConfig load_trace(Cfg c, std::uint64_t seed) {
  TraceConfig t;
  // Relative to the file that gave the path (the scenario, or a file it includes).
  const std::string& scenario_file = c.origin_of(c.path() + ".path");
  t.kind = c.get_enum("kind", t.kind, {"synthetic", "csv", "binary", "import"});
  t.on_end = c.get_enum("on_end", t.on_end, {"loop", "stop"});
  if (t.kind != "synthetic") {
    std::string p = c.need_string("path");
    std::filesystem::path fp(p);
    if (fp.is_relative() && !scenario_file.empty() && scenario_file.front() != '<') {
      fp = std::filesystem::path(scenario_file).parent_path() / fp;
    }
    t.path = fp.lexically_normal().string();
    std::error_code ec;  // a name the OS refuses is a named error too
    if (!std::filesystem::exists(t.path, ec))
      c.fail("path", fmt::format("trace file '{}' does not exist{}", t.path, ec ? " (" + ec.message() + ")" : ""));
    if (t.kind == "import") {
      // Selector columns of a long CSV (e.g. model, kind, domain of the OLMoE set).
      Cfg sel = c.child("select");
      if (sel.node().IsMap()) {
        for (auto it = sel.node().begin(); it != sel.node().end(); ++it) {
          const std::string key = it->first.Scalar();
          t.select[key] = sel.get_string(key, "");
        }
      }
      sel.finish();
    } else if (c.has("select")) {
      c.fail("select", "is only allowed with kind: import");
    }
  } else {
    if (c.has("path")) c.fail("path", "is only allowed with kind: csv, binary or import");
    auto& s = t.synthetic;
    // The auxiliary-loss coefficient sets skew, drift_sigma and sampling_dispersion itself
    // (traces/aux_loss.hpp); a key or preset that sets them too would contradict it.
    const bool aux = c.has("aux_loss_coefficient");
    if (aux) {
      for (const char* k : {"preset", "skew", "drift_sigma", "sampling_dispersion"}) {
        if (c.has(k))
          c.fail(k, "cannot be combined with trace.aux_loss_coefficient, which sets skew, drift_sigma and "
                    "sampling_dispersion from the coefficient (docs/trace-format.md); give one or the other");
      }
    }
    // A preset (calibrated to published statistics) supplies the defaults; keys override it.
    t.preset = c.get_string("preset", "");
    if (!t.preset.empty()) {
      auto p = synthetic_preset(t.preset);
      if (!p) {
        std::string names;
        for (const auto& n : synthetic_preset_names()) names += (names.empty() ? "" : ", ") + n;
        c.fail("preset", fmt::format("unknown trace preset '{}'; available: {}", t.preset, names));
      }
      s = *p;
    }
    s.skew = c.get_double("skew", s.skew, 0.0, 10.0);
    s.drift_sigma = c.get_double("drift_sigma", s.drift_sigma, 0.0, 5.0);
    s.drift_reversion = c.get_double("drift_reversion", s.drift_reversion, 0.0, 1.0);
    s.sampling_dispersion = c.get_double("sampling_dispersion", s.sampling_dispersion, 0.0, 1.0);
    if (aux) {
      // Between the published anchors only (docs/trace-format.md, "Auxiliary loss coefficient").
      t.aux_loss_coefficient = c.get_double("aux_loss_coefficient", 0.0, aux_loss_weak_anchor().coefficient,
                                            aux_loss_strong_anchor().coefficient);
      try {
        apply_aux_loss_coefficient(t.aux_loss_coefficient, s);
      } catch (const std::invalid_argument& e) {
        c.fail("aux_loss_coefficient", e.what());
      }
    }
    s.burst_prob = c.get_double("burst_prob", s.burst_prob, 0.0, 1.0);
    s.burst_factor = c.get_double("burst_factor", s.burst_factor, 1.0, 1e6);
    s.burst_rise = static_cast<int>(c.get_int("burst_rise", s.burst_rise, 1, 3));
    s.burst_len = static_cast<int>(c.get_int("burst_len", s.burst_len, s.burst_rise, 10000));
    s.skew_decay_iterations = c.get_double("skew_decay_iterations", s.skew_decay_iterations, 0.0, 1e12);
    s.skew_floor = c.get_double("skew_floor", s.skew_floor, 0.0, 1.0);
    s.seed = seed;
  }
  if (c.has("cross_layer")) {
    Cfg x = c.child("cross_layer");
    CrossLayerConfig& xl = t.cross_layer;
    xl.present = true;
    if (x.has("path") == x.has("affinity"))
      x.fail(x.has("path") ? "path" : "affinity",
             "give one of path (a CSV of layer,next_layer,expert,next_expert,count) or affinity (synthetic traces)");
    if (x.has("affinity")) {
      if (t.kind != "synthetic") x.fail("affinity", "is only allowed with trace kind: synthetic; give a path instead");
      xl.affinity = x.get_double("affinity", 0.0, 0.0, 1.0);
    } else {
      std::filesystem::path fp(x.need_string("path"));
      const std::string& from = x.origin_of(x.path() + ".path");
      if (fp.is_relative() && !from.empty() && from.front() != '<') fp = std::filesystem::path(from).parent_path() / fp;
      xl.path = fp.lexically_normal().string();
      std::error_code ec;
      if (!std::filesystem::exists(xl.path, ec)) x.fail("path", fmt::format("cross-layer file '{}' does not exist", xl.path));
      Cfg sel = x.child("select");
      if (sel.node().IsMap())
        for (auto it = sel.node().begin(); it != sel.node().end(); ++it) {
          const std::string key = it->first.Scalar();
          xl.select[key] = sel.get_string(key, "");
        }
      sel.finish();
    }
    x.finish();
  }
  c.finish();
  return t;
}

// Each item of a list of mappings, strictly.
template <typename F>
void for_each_item(Cfg& parent, const std::string& key, F&& f) {
  parent.touch(key);
  YAML::Node n = parent.node()[key];
  if (!n || n.IsNull()) return;
  if (!n.IsSequence()) parent.fail(key, "expected a list of mappings");
  for (std::size_t i = 0; i < n.size(); ++i) {
    if (!n[i].IsMap()) parent.fail(key, fmt::format("item {} must be a mapping", i));
    Cfg item(n[i], parent.origin(), fmt::format("{}.{}[{}]", parent.path(), key, i));
    item.set_overrides(parent.overrides());
    item.set_origins(parent.origins());
    f(item);
    item.finish();
  }
}

HeterogeneitySpec load_heterogeneity(Cfg c, int gpus) {
  HeterogeneitySpec h;
  for_each_item(c, "gpu_speed", [&](Cfg& item) {
    const int g = static_cast<int>(item.need_int("gpu", 0, gpus - 1));
    h.gpu_speed.emplace_back(g, item.need_double("factor", 1e-3, 1e3));
  });
  for_each_item(c, "stragglers", [&](Cfg& item) {
    StragglerSpec st;
    st.gpu = static_cast<int>(item.need_int("gpu", 0, gpus - 1));
    st.slowdown_percent = item.need_double("slowdown_percent", 0.0, 1e6);
    st.from_iteration = item.get_int("from_iteration", 0, 0, 1LL << 40);
    st.to_iteration = item.get_int("to_iteration", 1LL << 40, st.from_iteration, 1LL << 40);
    h.stragglers.push_back(st);
  });
  c.finish();
  return h;
}

RunSpec load_run(Cfg c) {
  RunSpec r;
  r.max_iterations = c.get_int("max_iterations", r.max_iterations, 1, 100000000);
  r.stop_at_convergence = c.get_bool("stop_at_convergence", r.stop_at_convergence);
  r.max_memory_bytes = c.get_double("max_memory_bytes", 0.0, 1e6, 1e18);
  c.finish();
  return r;
}

std::vector<PolicyEntry> load_policies(const Cfg& root, const YAML::Node& n) {
  std::vector<PolicyEntry> out;
  if (!n || n.IsNull()) root.fail("policies", "is required: a list of policy names or {name: ..., <parameters>}");
  if (!n.IsSequence() || n.size() == 0) root.fail("policies", "expected a non-empty list of policies");
  std::set<std::string> labels;
  for (std::size_t i = 0; i < n.size(); ++i) {
    PolicyEntry e;
    e.origin = root.origin_of("policies");
    const YAML::Node& item = n[i];
    const std::string key = fmt::format("policies[{}]", i);
    if (item.IsScalar()) {
      e.name = item.Scalar();
      e.params = YAML::Node(YAML::NodeType::Map);
      e.params["name"] = item;  // the same node, so errors about the name keep its position
      e.label = e.name;
    } else if (item.IsMap()) {
      Cfg c(item, e.origin, key);
      e.name = c.need_string("name");
      e.label = c.get_string("label", e.name);
      e.params = item;
    } else {
      root.fail("policies", fmt::format("item {} must be a policy name or a mapping with name:", i));
    }
    if (!labels.insert(e.label).second) {
      root.fail("policies", fmt::format("item {}: label '{}' is used twice; give each entry a distinct label:",
                                        i, e.label));
    }
    out.push_back(std::move(e));
  }
  return out;
}

// The `parallelism` section, resolved for the cluster and checked against it and the model.
ParallelLayout load_parallelism(Cfg c, const ClusterSpec& cluster, const MoeModelSpec& model) {
  ParallelLayout l;
  const int gpus = cluster.num_gpus();
  const auto read = [&](const char* key, int def, int min, int max) {
    return static_cast<int>(c.get_int(key, def, min, max));
  };
  l.tensor = read("tensor", l.tensor, 1, gpus);
  l.pipeline = read("pipeline", l.pipeline, 1, gpus);
  l.expert = read("expert", l.expert, 1, gpus);  // absent: 0, derived by resolve
  l.expert_tensor = read("expert_tensor", l.expert_tensor, 1, gpus);
  l.data = read("data", l.data, 1, gpus);  // absent: 0, derived by resolve
  l.virtual_stages = read("virtual_stages", l.virtual_stages, 1, std::max(1, model.layers));
  l.micro_batches = read("micro_batches", l.micro_batches, 1, 1 << 20);
  l.zero_stage = read("zero_stage", l.zero_stage, 0, 3);
  l.sequence_parallel = c.get_bool("sequence_parallel", l.sequence_parallel);
  c.finish();
  const std::int64_t tp_pp = std::int64_t{l.tensor} * l.pipeline;
  if (l.data == 0 && gpus % tp_pp != 0) {
    c.fail(c.has("pipeline") && !c.has("tensor") ? "pipeline" : "tensor",
           fmt::format("tensor {} x pipeline {} = {} must divide the {} GPUs (data is not given, so it is GPUs / "
                       "(tensor x pipeline))",
                       l.tensor, l.pipeline, tp_pp, gpus));
  }
  const bool data_given = l.data != 0, expert_given = l.expert != 0;
  l.resolve(gpus);
  const LayoutViolation v =
      check_layout(l, gpus, cluster.gpus_per_node, model.layers, model.num_moe_layers() > 0);
  if (!v.ok()) {
    std::string msg = v.message;
    if (v.key == "expert" && !expert_given)
      msg += "; expert is not given, so it is data x tensor / expert_tensor: set it explicitly";
    if (v.key == "data" && !data_given) msg += "; data is not given, so it is GPUs / (tensor x pipeline)";
    c.fail(v.key, msg);
  }
  return l;
}

Scenario parse(YAML::Node root, const std::string& origin, const std::vector<std::string>& overrides,
               std::optional<std::uint64_t> seed) {
  if (!root || root.IsNull()) throw InputError(fmt::format("{}: the scenario is empty", origin));
  if (!root.IsMap()) throw InputError(fmt::format("{}: a scenario must be a YAML mapping", origin));
  ResolvedDocument doc = resolve_includes(root, origin);
  root = doc.root;
  auto table = std::make_shared<Cfg::Overrides>();
  for (const auto& o : overrides) (*table)[apply_override(root, o)] = o;
  Cfg c(root, origin, "");
  c.set_overrides(table);
  if (doc.origins) {
    // A key `--set` replaced is no longer the included file's (its paths resolve from the scenario).
    auto origins = std::make_shared<Cfg::Origins>(*doc.origins);
    for (const auto& [path, assignment] : *table) {
      std::erase_if(*origins, [&p = path](const auto& kv) {
        const std::string& k = kv.first;
        return k.starts_with(p) && k.size() > p.size() && (k[p.size()] == '.' || k[p.size()] == '[');
      });
      (*origins)[path] = origin;
    }
    c.set_origins(origins);
  }
  Scenario s;
  s.file = origin;
  s.name = c.get_string("name", std::filesystem::path(origin).stem().string());
  s.description = c.get_string("description", "");
  s.seed = static_cast<std::uint64_t>(c.get_int("seed", 1, 0, (1LL << 62)));
  if (seed) s.seed = *seed;
  s.cluster = load_cluster(c.child("cluster"));
  s.model = load_model(c.child("model"));
  s.layout = load_parallelism(c.child("parallelism"), s.cluster, s.model);
  {
    // Each expert-parallel group holds every expert, so the slots of one group must hold them all.
    Cfg p = c.child("placement");
    const int g = s.layout.expert;
    const bool whole = g == s.cluster.num_gpus();  // the default layout: today's messages
    const std::string over = whole ? fmt::format("{} GPUs", g)
                                   : fmt::format("the {} GPUs of an expert-parallel group (parallelism.expert)", g);
    const int def = s.model.experts % g == 0 ? s.model.experts / g : 0;
    s.slots_per_gpu = static_cast<int>(p.get_int("slots_per_gpu", def, 1, 4096));
    if (s.slots_per_gpu == 0) {
      p.fail("slots_per_gpu",
             fmt::format("is required: {} experts do not divide evenly over {}", s.model.experts, over));
    }
    if (static_cast<std::int64_t>(s.slots_per_gpu) * g < s.model.experts) {
      p.fail("slots_per_gpu",
             fmt::format("{} slots x {} = {} slots cannot hold the {} experts", s.slots_per_gpu,
                         whole ? fmt::format("{} GPUs", g)
                               : fmt::format("{} GPUs per expert-parallel group (parallelism.expert)", g),
                         static_cast<std::int64_t>(s.slots_per_gpu) * g, s.model.experts));
    }
    p.finish();
  }
  {
    Cfg d = c.child("dispatch");
    s.dispatch.fp8 = d.get_enum("dtype", "model", {"model", "fp8"}) == "fp8";
    s.dispatch.hierarchical = d.get_enum("algorithm", "direct", {"direct", "hierarchical"}) == "hierarchical";
    d.finish();
    Cfg r = c.child("routing");
    s.dispatch.max_nodes_per_token = static_cast<int>(r.get_int("max_nodes_per_token", 0, 0, s.cluster.nodes));
    if (s.dispatch.max_nodes_per_token > 0 && !s.dispatch.hierarchical)
      r.fail("max_nodes_per_token", "bounds the nodes each token crosses to, which only dispatch.algorithm: "
                                    "hierarchical counts (the direct exchange sends every copy on its own)");
    r.finish();
    Cfg o = c.child("overlap");
    s.overlap.a2a_chunks = static_cast<int>(o.get_int("a2a_chunks", 1, 1, 64));
    s.overlap.grad_sync = o.get_bool("grad_sync", false);
    s.overlap.dispatch_sms = static_cast<int>(o.get_int("dispatch_sms", 0, 0, 4096));
    if (s.overlap.dispatch_sms > 0) {
      const int sms = s.cluster.gpu.sms;
      if (s.overlap.a2a_chunks < 2)
        o.fail("dispatch_sms", fmt::format("{} SMs for the all-to-all kernels take nothing from compute unless they run "
                                           "beside it: set overlap.a2a_chunks to 2 or more",
                                           s.overlap.dispatch_sms));
      if (sms == 0)
        o.fail("dispatch_sms", fmt::format("GPU {} does not say how many SMs it has: set cluster.gpu.sms",
                                           s.cluster.gpu.name));
      if (s.overlap.dispatch_sms >= sms)
        o.fail("dispatch_sms", fmt::format("{} must leave SMs for compute: allowed 0 to {} (GPU {} has {} SMs)",
                                           s.overlap.dispatch_sms, sms - 1, s.cluster.gpu.name, sms));
    }
    o.finish();
  }
  {
    Cfg n = c.child("network");
    s.network_model = n.get_enum("model", s.network_model, {"analytical", "flow"});
    s.collective_profile =
        resolve_profile(n.get_string("collective_profile", ""), c.origin_of("network.collective_profile"));
    check_profile(n, "collective_profile", s.collective_profile);
    for_each_item(n, "link_factors", [&](Cfg& item) {
      LinkFactorSpec f;
      const bool by_gpu = item.has("gpu") || item.has("port");
      const bool by_ends = item.has("a") || item.has("b");
      if (by_gpu == by_ends) {
        item.fail("",
                  "give either gpu: and port: (a GPU's links of one class) or a: and b: (the link between two "
                  "named vertices), and factor:");
      }
      if (by_gpu) {
        f.gpu = static_cast<int>(item.need_int("gpu", 0, s.cluster.num_gpus() - 1));
        if (!item.has("port")) item.fail("port", "is required: intra, nic or host");
        f.port = item.get_enum("port", "", {"intra", "nic", "host"});
        f.where = item.where("gpu");
      } else {
        f.a = item.need_string("a");
        f.b = item.need_string("b");
        f.where = item.where("a");
      }
      f.factor = item.need_double("factor", -1e12, 1e12);
      if (!(f.factor > 0.0 && f.factor <= 1e3)) {
        item.fail("factor", fmt::format("{}: a bandwidth factor must be in (0, 1000]", f.factor));
      }
      s.cluster.link_factors.push_back(std::move(f));
    });
    n.finish();
    // Builds the graph once now, so that an unreachable GPU or a link factor naming no link is
    // an input error before anything runs.
    const Cluster probe(s.cluster);
  }
  {
    Cfg comp = c.child("compute");
    s.compute_profile = resolve_profile(comp.get_string("profile", ""), c.origin_of("compute.profile"));
    check_profile(comp, "profile", s.compute_profile);
    s.compute_fallback_roofline = comp.get_enum("fallback", "error", {"roofline", "error"}) == "roofline";
    comp.finish();
  }
  s.training = load_training(c.child("training"));
  s.heterogeneity = load_heterogeneity(c.child("heterogeneity"), s.cluster.num_gpus());
  s.trace = load_trace(c.child("trace"), s.seed);
  s.convergence = load_convergence(c.child("convergence"), s.model.name);
  s.run = load_run(c.child("run"));
  c.touch("policies");
  s.policies = load_policies(c, root["policies"]);
  c.finish();
  return s;
}

}  // namespace

std::vector<PolicyEntry> parse_policy_specs(const std::string& specs) {
  std::vector<PolicyEntry> out;
  std::set<std::string> labels;
  std::stringstream all(specs);
  for (std::string spec; std::getline(all, spec, ',');) {
    if (spec.empty()) throw InputError(fmt::format("--policies '{}': empty policy entry", specs));
    PolicyEntry e;
    e.origin = "--policies";
    e.label = spec;
    e.params = YAML::Node(YAML::NodeType::Map);
    std::stringstream parts(spec);
    std::string part;
    std::getline(parts, part, ':');
    e.name = part;
    e.params["name"] = part;
    while (std::getline(parts, part, ':')) {
      const auto eq = part.find('=');
      if (eq == std::string::npos || eq == 0) {
        throw InputError(fmt::format("--policies '{}': parameter '{}' must be key=value", spec, part));
      }
      const std::string key = part.substr(0, eq);
      if (key == "name" || key == "label") {
        throw InputError(fmt::format("--policies '{}': '{}' cannot be set here", spec, key));
      }
      try {
        e.params[key] = YAML::Load(part.substr(eq + 1));
      } catch (const YAML::Exception& ex) {
        throw InputError(fmt::format("--policies '{}': value of '{}' is not valid YAML: {}", spec, key, ex.msg));
      }
    }
    if (!labels.insert(e.label).second) throw InputError(fmt::format("--policies: '{}' is listed twice", spec));
    out.push_back(std::move(e));
  }
  if (out.empty()) throw InputError("--policies: no policy given");
  return out;
}

Scenario load_scenario(const std::string& file, const std::vector<std::string>& overrides,
                       std::optional<std::uint64_t> seed) {
  return parse(load_yaml_file(file), file, overrides, seed);
}

Scenario load_scenario_text(const std::string& text, const std::string& origin,
                            const std::vector<std::string>& overrides, std::optional<std::uint64_t> seed) {
  return parse(load_yaml_string(text, origin), origin, overrides, seed);
}

std::vector<double> HeterogeneitySpec::slowdown_at(std::int64_t iteration, int gpus) const {
  if (gpu_speed.empty() && stragglers.empty()) return {};
  std::vector<double> f(gpus, 1.0);
  for (const auto& [g, speed] : gpu_speed) f[g] /= speed;
  for (const auto& st : stragglers)
    if (iteration >= st.from_iteration && iteration <= st.to_iteration) f[st.gpu] *= 1.0 + st.slowdown_percent / 100.0;
  return f;
}

nlohmann::json Scenario::to_json() const {
  using nlohmann::json;
  const auto& cs = cluster;
  const auto& g = cs.gpu;
  json gpu{{"name", g.name},
           {"arch", g.arch},
           {"peak_tflops", g.peak_tflops},
           {"hbm_bytes", g.hbm_bytes},
           {"hbm_gbps", g.hbm_gbps},
           {"nvlink_links", g.nvlink_links},
           {"nvlink_gbps", g.nvlink_gbps},
           {"nccl_nvlink_link_gbps", g.nccl_nvlink_link_gbps},
           {"gemm_efficiency", g.gemm_efficiency},
           {"sms", g.sms},
           {"sources", g.sources}};
  const char* intra = cs.intra_node == IntraNode::NVSwitch ? "nvswitch" : cs.intra_node == IntraNode::PCIe ? "pcie" : "none";
  json cluster_j{{"name", cs.name},
                 {"nodes", cs.nodes},
                 {"gpus_per_node", cs.gpus_per_node},
                 {"gpus", cs.num_gpus()},
                 {"gpu", gpu},
                 {"intra_node", intra},
                 {"pcie_gbps", cs.pcie_gbps},
                 {"nccl_pci_gbps", cs.nccl_pci_gbps},
                 {"nic_gbit", cs.nic_gbit},
                 {"nics_per_node", cs.nics_per_node},
                 {"nic_efficiency", cs.nic_efficiency},
                 {"nic_latency_ns", cs.nic_latency_ns},
                 {"host_memory_bytes", cs.host_memory_bytes},
                 {"derived_intra_gbps_per_gpu", cs.intra_gbps()},
                 {"derived_nic_gbps_per_gpu", cs.nic_gbps()},
                 {"sources", cs.sources}};
  if (cs.topology) {
    json vs = json::array(), ls = json::array();
    for (const auto& v : cs.topology->vertices) {
      json j{{"name", v.name}, {"kind", v.kind}};
      if (v.node >= 0) j["node"] = v.node;
      vs.push_back(j);
    }
    for (const auto& l : cs.topology->links) {
      ls.push_back({{"a", l.a}, {"b", l.b}, {"gbps", l.gbps}, {"latency_ns", l.latency_ns}});
    }
    cluster_j["topology"] = {{"vertices", vs}, {"links", ls}};
  } else if (cs.fabric == FabricKind::FatTree) {
    const auto& ft = cs.fat_tree;
    cluster_j["fabric"] = {{"kind", "fat_tree"},
                           {"nodes_per_leaf", ft.nodes_per_leaf},
                           {"spines", ft.spines},
                           {"oversubscription", ft.oversubscription},
                           {"leaf_latency_ns", ft.leaf_latency_ns},
                           {"spine_latency_ns", ft.spine_latency_ns}};
  } else {
    cluster_j["fabric"] = {{"kind", "single"}};
  }
  json link_factors_j = json::array();
  for (const auto& f : cs.link_factors) {
    if (f.gpu >= 0) {
      link_factors_j.push_back({{"gpu", f.gpu}, {"port", f.port}, {"factor", f.factor}});
    } else {
      link_factors_j.push_back({{"a", f.a}, {"b", f.b}, {"factor", f.factor}});
    }
  }
  const auto& m = model;
  json model_j{{"name", m.name},
               {"layers", m.layers},
               {"hidden", m.hidden},
               {"heads", m.heads},
               {"kv_heads", m.kv_heads},
               {"head_dim", m.head_dim},
               {"ffn_hidden", m.ffn_hidden},
               {"expert_ffn_hidden", m.expert_ffn_hidden},
               {"ffn_matrices", m.ffn_matrices},
               {"experts", m.experts},
               {"top_k", m.top_k},
               {"shared_experts", m.shared_experts},
               {"first_dense_layers", m.first_dense_layers},
               {"moe_layer_interval", m.moe_layer_interval},
               {"vocab", m.vocab},
               {"seq_len", m.seq_len},
               {"micro_batch_per_gpu", m.micro_batch_per_gpu},
               {"dtype", to_string(m.dtype)},
               {"derived_moe_layers", m.num_moe_layers()},
               {"derived_tokens_per_gpu", m.tokens_per_gpu()},
               {"derived_expert_params", m.expert_params()},
               {"derived_dense_params", m.dense_params_total()},
               {"sources", m.sources}};
  json trace_j{{"kind", trace.kind}, {"on_end", trace.on_end}};
  if (trace.kind != "synthetic") {
    trace_j["path"] = trace.path;
    if (trace.kind == "import") trace_j["select"] = trace.select;
  } else {
    if (!trace.preset.empty()) trace_j["preset"] = trace.preset;
    // Only when set or mapped, so that the resolved scenario of older runs is unchanged.
    if (trace.aux_loss_coefficient > 0.0) trace_j["aux_loss_coefficient"] = trace.aux_loss_coefficient;
    if (trace.synthetic.sampling_dispersion != 1.0) trace_j["sampling_dispersion"] = trace.synthetic.sampling_dispersion;
    trace_j["skew"] = trace.synthetic.skew;
    trace_j["burst_prob"] = trace.synthetic.burst_prob;
    trace_j["burst_factor"] = trace.synthetic.burst_factor;
    trace_j["burst_rise"] = trace.synthetic.burst_rise;
    trace_j["burst_len"] = trace.synthetic.burst_len;
    trace_j["skew_decay_iterations"] = trace.synthetic.skew_decay_iterations;
    trace_j["skew_floor"] = trace.synthetic.skew_floor;
    trace_j["drift_sigma"] = trace.synthetic.drift_sigma;
    trace_j["drift_reversion"] = trace.synthetic.drift_reversion;
  }
  if (trace.cross_layer.present) {
    json x;
    if (trace.cross_layer.path.empty()) x["affinity"] = trace.cross_layer.affinity;
    else x = {{"path", trace.cross_layer.path}, {"select", trace.cross_layer.select}};
    trace_j["cross_layer"] = x;
  }
  json training_j{{"optimizer_offload", training.optimizer_offload},
                  {"grad_bytes_per_param", training.grad_bytes_per_param},
                  {"optimizer_bytes_per_param", training.optimizer_bytes_per_param},
                  {"adam_hbm_bytes_per_param", training.adam_hbm_bytes_per_param},
                  {"host_adam_params_per_s", training.host_adam_params_per_s},
                  {"layer_overhead_ns", training.layer_overhead_ns}};
  json heterogeneity_j{{"gpu_speed", json::array()}, {"stragglers", json::array()}};
  for (const auto& [gpu_id, factor] : heterogeneity.gpu_speed)
    heterogeneity_j["gpu_speed"].push_back({{"gpu", gpu_id}, {"factor", factor}});
  for (const auto& st : heterogeneity.stragglers) {
    heterogeneity_j["stragglers"].push_back({{"gpu", st.gpu},
                                             {"slowdown_percent", st.slowdown_percent},
                                             {"from_iteration", st.from_iteration},
                                             {"to_iteration", st.to_iteration}});
  }
  return json{{"name", name},
              {"description", description},
              {"file", file},
              {"seed", seed},
              {"cluster", cluster_j},
              {"model", model_j},
              {"parallelism",
               {{"tensor", layout.tensor},
                {"pipeline", layout.pipeline},
                {"expert", layout.expert},
                {"expert_tensor", layout.expert_tensor},
                {"data", layout.data},
                {"virtual_stages", layout.virtual_stages},
                {"micro_batches", layout.micro_batches},
                {"zero_stage", layout.zero_stage},
                {"sequence_parallel", layout.sequence_parallel}}},
              {"dispatch", {{"dtype", dispatch.fp8 ? "fp8" : "model"},
                            {"algorithm", dispatch.hierarchical ? "hierarchical" : "direct"}}},
              {"routing", {{"max_nodes_per_token", dispatch.max_nodes_per_token}}},
              {"overlap", {{"a2a_chunks", overlap.a2a_chunks}, {"grad_sync", overlap.grad_sync}, {"dispatch_sms", overlap.dispatch_sms}}},
              {"placement", {{"slots_per_gpu", slots_per_gpu}}},
              {"network",
               {{"model", network_model},
                {"link_factors", link_factors_j},
                {"collective_profile", collective_profile.empty() ? json("nccl_model") : json(collective_profile)}}},
              {"compute", {{"profile", compute_profile.empty() ? json("roofline") : json(compute_profile)},
                           {"fallback", compute_fallback_roofline ? "roofline" : "error"}}},
              {"training", training_j},
              {"heterogeneity", heterogeneity_j},
              {"trace", trace_j},
              {"convergence", convergence.to_json()},
              {"run", {{"max_iterations", run.max_iterations}, {"stop_at_convergence", run.stop_at_convergence}}}};
}

}  // namespace moesim
