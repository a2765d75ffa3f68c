#include "sim/layout.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <utility>

namespace moesim {

void ParallelLayout::resolve(int gpus) {
  if (data == 0 && tensor > 0 && pipeline > 0) data = gpus / (tensor * pipeline);
  if (expert == 0 && expert_tensor > 0) expert = std::max(1, data * tensor / expert_tensor);
}

std::string ParallelLayout::check(int gpus, int gpus_per_node, int layers, bool has_moe_layers) const {
  return check_layout(*this, gpus, gpus_per_node, layers, has_moe_layers).message;
}

LayoutViolation check_layout(const ParallelLayout& l, int gpus, int gpus_per_node, int layers, bool has_moe_layers) {
  const auto fail = [](std::string key, std::string message) {
    return LayoutViolation{std::move(key), std::move(message)};
  };
  // Below 1 the products and divisions that follow mean nothing (data 0 is an unresolved layout).
  for (const auto& [key, v] : {std::pair<const char*, int>{"tensor", l.tensor}, {"pipeline", l.pipeline},
                               {"data", l.data}, {"expert", l.expert}, {"expert_tensor", l.expert_tensor},
                               {"virtual_stages", l.virtual_stages}, {"micro_batches", l.micro_batches}}) {
    if (v < 1) return fail(key, fmt::format("{} {}: must be >= 1", key, v));
  }
  if (l.zero_stage < 0 || l.zero_stage > 3)
    return fail("zero_stage", fmt::format("zero_stage {}: allowed 0, 1, 2 or 3", l.zero_stage));
  const long long product = static_cast<long long>(l.tensor) * l.pipeline * l.data;
  if (product != gpus)
    return fail("data", fmt::format("tensor {} x pipeline {} x data {} = {} GPUs, but the cluster has {}: the product "
                                    "must equal the number of GPUs",
                                    l.tensor, l.pipeline, l.data, product, gpus));
  if (l.expert_tensor > gpus_per_node || gpus_per_node % l.expert_tensor != 0)
    return fail("expert_tensor", fmt::format("expert_tensor {} must divide the {} GPUs of a node: an expert's shards "
                                             "exchange their tokens inside a node, as tensor parallelism does",
                                             l.expert_tensor, gpus_per_node));
  if ((l.data * l.tensor) % l.expert_tensor != 0)
    return fail("expert_tensor", fmt::format("expert_tensor {} must divide data {} x tensor {} = {} (the GPUs of one "
                                             "pipeline stage)",
                                             l.expert_tensor, l.data, l.tensor, l.data * l.tensor));
  const int stage_gpus = l.data * l.tensor / l.expert_tensor;
  if (stage_gpus % l.expert != 0)
    return fail("expert", fmt::format("expert {} must divide data {} x tensor {} / expert_tensor {} = {} (the GPUs of "
                                      "one pipeline stage)",
                                      l.expert, l.data, l.tensor, l.expert_tensor, stage_gpus));
  if (l.tensor > gpus_per_node || gpus_per_node % l.tensor != 0)
    return fail("tensor", fmt::format("tensor {} must divide the {} GPUs of a node: tensor parallelism stays inside a "
                                      "node, where its all-reduces run over NVLink",
                                      l.tensor, gpus_per_node));
  const int span = l.expert * l.expert_tensor;  // consecutive ranks an expert-parallel group spreads over
  if (span % gpus_per_node != 0 && gpus_per_node % span != 0) {
    if (l.expert_tensor == 1)
      return fail("expert", fmt::format("expert {} must divide or be a multiple of the {} GPUs of a node, so that "
                                        "every expert-parallel group covers whole nodes or part of one",
                                        l.expert, gpus_per_node));
    return fail("expert", fmt::format("expert {} x expert_tensor {} = {} must divide or be a multiple of the {} GPUs "
                                      "of a node, so that every expert-parallel group covers whole nodes or part of "
                                      "one",
                                      l.expert, l.expert_tensor, span, gpus_per_node));
  }
  // The layer rules blame virtual_stages only when pipeline alone would split the layers.
  const long long chunks = static_cast<long long>(l.pipeline) * l.virtual_stages;
  const char* layer_key = l.pipeline <= layers ? "virtual_stages" : "pipeline";
  if (chunks > layers)
    return fail(layer_key, fmt::format("pipeline {} x virtual_stages {} = {} model chunks, but the model has {} layers",
                                       l.pipeline, l.virtual_stages, chunks, layers));
  if (l.virtual_stages > 1 && l.pipeline < 2)
    return fail("virtual_stages", fmt::format("virtual_stages {} needs pipeline >= 2 (interleaving splits a stage's "
                                              "layers)",
                                              l.virtual_stages));
  if (l.virtual_stages > 1 && l.micro_batches % l.pipeline != 0)
    return fail("micro_batches", fmt::format("micro_batches {} must be a multiple of pipeline {} with virtual_stages > "
                                             "1 (Megatron-Core's interleaved schedule)",
                                             l.micro_batches, l.pipeline));
  if (l.tensor > 1 && has_moe_layers && !l.sequence_parallel)
    return fail("sequence_parallel", fmt::format("tensor {} with MoE layers needs sequence_parallel: true "
                                                 "(Megatron-Core requires sequence parallelism when MoE runs with "
                                                 "tensor parallelism)",
                                                 l.tensor));
  return {};
}

double dispatch_token_bytes(int hidden, int model_dtype_bytes, bool fp8) {
  if (!fp8) return static_cast<double>(hidden) * model_dtype_bytes;
  const int scales = (hidden + 127) / 128;  // one fp32 scale per started block of 128 elements
  return static_cast<double>(hidden) + 4.0 * scales;
}

LayoutGroups::LayoutGroups(const ParallelLayout& layout, int gpus, int layers)
    : l_(layout), gpus_(gpus), layers_(layers) {
  l_.resolve(gpus);
}

std::vector<int> LayoutGroups::stage_gpus(int s) const {
  std::vector<int> out(static_cast<std::size_t>(gpus_per_stage()));
  for (int i = 0; i < gpus_per_stage(); ++i) out[static_cast<std::size_t>(i)] = s * gpus_per_stage() + i;
  return out;
}

std::vector<int> LayoutGroups::tp_group(int r) const {
  std::vector<int> out;
  const int base = r - tp_rank(r);
  for (int i = 0; i < l_.tensor; ++i) out.push_back(base + i);
  return out;
}

std::vector<int> LayoutGroups::dp_group(int r) const {
  std::vector<int> out;
  const int base = stage(r) * gpus_per_stage() + tp_rank(r);
  for (int d = 0; d < l_.data; ++d) out.push_back(base + d * l_.tensor);
  return out;
}

std::vector<int> LayoutGroups::ep_group(int s, int k) const {
  std::vector<int> out(static_cast<std::size_t>(l_.expert));
  for (int j = 0; j < l_.expert; ++j) out[static_cast<std::size_t>(j)] = ep_group_rank(s, k, j);
  return out;
}

std::vector<int> LayoutGroups::etp_group(int r) const {
  std::vector<int> out;
  const int base = r - etp_rank(r);
  for (int i = 0; i < l_.expert_tensor; ++i) out.push_back(base + i);
  return out;
}

int LayoutGroups::prev_stage_rank(int r) const { return stage(r) == 0 ? -1 : r - gpus_per_stage(); }
int LayoutGroups::next_stage_rank(int r) const {
  return stage(r) == l_.pipeline - 1 ? -1 : r + gpus_per_stage();
}

double layer_dense_params(const MoeModelSpec& m, int layer) {
  double p = m.attention_params();
  p += m.is_moe_layer(layer) ? static_cast<double>(m.hidden) * m.experts + m.shared_experts * m.expert_params()
                             : static_cast<double>(m.hidden) * m.ffn_hidden * m.ffn_matrices;
  return p;
}

std::vector<double> stage_dense_params(const MoeModelSpec& m, const LayoutGroups& groups) {
  const int stages = groups.stages();
  if (stages == 1 && groups.layout().tensor == 1) return {m.dense_params_total()};
  std::vector<double> out(static_cast<std::size_t>(stages), 0.0);
  for (int l = 0; l < m.layers; ++l) out[static_cast<std::size_t>(groups.stage_of_layer(l))] += layer_dense_params(m, l);
  const double embedding = static_cast<double>(m.vocab) * m.hidden;
  out.front() += embedding;
  if (stages > 1) out.back() += embedding;
  for (double& p : out) p /= groups.layout().tensor;
  return out;
}

int in_flight_chunks(const LayoutGroups& groups, int stage) {
  const ParallelLayout& l = groups.layout();
  int live = 0, most = 0;
  for (const PipelineStep& s : pipeline_schedule(stage, l.pipeline, l.virtual_stages, l.micro_batches)) {
    live += s.forward ? 1 : -1;
    most = std::max(most, live);
  }
  return most;
}

std::vector<double> hierarchical_exchange(const std::vector<double>& assignments, const std::vector<int>& gpus,
                                          int gpus_per_node, int top_k, double token_bytes, int max_nodes_per_token) {
  const std::size_t n = gpus.size();
  std::vector<double> bytes(n * n, 0.0);
  auto index_of = [&](int gpu) {
    return static_cast<std::size_t>(std::lower_bound(gpus.begin(), gpus.end(), gpu) - gpus.begin());
  };
  std::vector<int> nodes;  // the group's nodes, ascending
  for (int g : gpus)
    if (nodes.empty() || nodes.back() != g / gpus_per_node) nodes.push_back(g / gpus_per_node);
  auto node_index = [&](int gpu) {
    return static_cast<std::size_t>(std::lower_bound(nodes.begin(), nodes.end(), gpu / gpus_per_node) - nodes.begin());
  };
  std::vector<double> to_node(nodes.size()), distinct(nodes.size());
  for (std::size_t i = 0; i < n; ++i) {
    const int src_node = gpus[i] / gpus_per_node, local = gpus[i] % gpus_per_node;
    std::fill(to_node.begin(), to_node.end(), 0.0);
    double copies = 0.0;
    for (std::size_t j = 0; j < n; ++j) {
      copies += assignments[i * n + j];
      to_node[node_index(gpus[j])] += assignments[i * n + j];
    }
    if (copies <= 0.0) continue;
    const double tokens = copies / top_k;
    double reached = 0.0;  // expected nodes one token reaches
    for (std::size_t k = 0; k < nodes.size(); ++k) {
      distinct[k] = tokens * (1.0 - std::pow(1.0 - to_node[k] / copies, top_k));
      reached += distinct[k] / tokens;
    }
    const double limit =
        max_nodes_per_token > 0 && reached > max_nodes_per_token ? max_nodes_per_token / reached : 1.0;
    for (std::size_t k = 0; k < nodes.size(); ++k) {
      if (nodes[k] == src_node || distinct[k] <= 0.0) continue;
      bytes[i * n + index_of(nodes[k] * gpus_per_node + local)] += distinct[k] * limit * token_bytes;
    }
    for (std::size_t j = 0; j < n; ++j) {
      const double a = assignments[i * n + j];
      if (a <= 0.0 || j == i) continue;
      // Each destination GPU receives a token once, however many of its experts chose it.
      const double to_gpu = tokens * (1.0 - std::pow(1.0 - a / copies, top_k)) * token_bytes;
      if (gpus[j] / gpus_per_node == src_node) {
        bytes[i * n + j] += to_gpu;  // same node: straight over NVLink
      } else {
        const std::size_t peer = index_of((gpus[j] / gpus_per_node) * gpus_per_node + local);
        if (peer != j) bytes[peer * n + j] += to_gpu;  // forwarded by the rail peer
      }
    }
  }
  return bytes;
}

std::vector<PipelineStep> pipeline_schedule(int stage, int stages, int chunks, int micro_batches) {
  std::vector<PipelineStep> out;
  const int total = micro_batches * chunks;
  // Which (micro-batch, chunk) the k-th forward or backward of this stage is.
  auto step = [&](int k, bool forward) {
    if (chunks == 1) return PipelineStep{forward, k, 0};
    const int group = stages * chunks;
    const int in_group = k % group;
    int chunk = in_group / stages;
    if (!forward) chunk = chunks - 1 - chunk;
    return PipelineStep{forward, (k / group) * stages + in_group % stages, chunk};
  };
  int warmup = 0;
  if (chunks == 1) {
    warmup = std::min(stages - stage - 1, micro_batches);
  } else if (micro_batches == stages) {
    warmup = total;  // Megatron-Core: every forward first when one group of micro-batches fills the pipe
  } else {
    warmup = std::min((stages - stage - 1) * 2 + (chunks - 1) * stages, total);
  }
  for (int k = 0; k < warmup; ++k) out.push_back(step(k, true));
  for (int k = 0; k < total - warmup; ++k) {
    out.push_back(step(warmup + k, true));
    out.push_back(step(k, false));
  }
  for (int k = total - warmup; k < total; ++k) out.push_back(step(k, false));
  return out;
}

TimeNs on_fewer_sms(TimeNs ns, int sms, int taken) {
  if (taken <= 0 || ns <= 0) return ns;
  const TimeNs left = sms - taken;
  return (ns * sms + left - 1) / left;
}

}  // namespace moesim
