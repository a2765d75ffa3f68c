#include "sim/layout.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace moesim {

void ParallelLayout::resolve(int gpus) {
  if (data == 0 && tensor > 0 && pipeline > 0) data = gpus / (tensor * pipeline);
  if (expert == 0 && expert_tensor > 0) expert = std::max(1, data * tensor / expert_tensor);
}

std::string ParallelLayout::check(int gpus, int gpus_per_node, int layers, bool has_moe_layers) const {
  if (static_cast<long long>(tensor) * pipeline * data != gpus)
    return fmt::format("tensor {} x pipeline {} x data {} = {} GPUs, but the cluster has {}: the product must equal "
                       "the number of GPUs",
                       tensor, pipeline, data, static_cast<long long>(tensor) * pipeline * data, gpus);
  if (expert_tensor != 1)
    return fmt::format("expert_tensor {}: only 1 is modelled (every expert lives whole on one GPU)", expert_tensor);
  const int stage_gpus = data * tensor / expert_tensor;
  if (expert < 1 || stage_gpus % expert != 0)
    return fmt::format("expert {} must divide data {} x tensor {} / expert_tensor {} = {} (the GPUs of one pipeline "
                       "stage)",
                       expert, data, tensor, expert_tensor, stage_gpus);
  if (tensor > gpus_per_node || gpus_per_node % tensor != 0)
    return fmt::format("tensor {} must divide the {} GPUs of a node: tensor parallelism stays inside a node, where its "
                       "all-reduces run over NVLink",
                       tensor, gpus_per_node);
  if (expert % gpus_per_node != 0 && gpus_per_node % expert != 0)
    return fmt::format("expert {} must divide or be a multiple of the {} GPUs of a node, so that every expert-parallel "
                       "group covers whole nodes or part of one",
                       expert, gpus_per_node);
  if (static_cast<long long>(pipeline) * virtual_stages > layers)
    return fmt::format("pipeline {} x virtual_stages {} = {} model chunks, but the model has {} layers",
                       pipeline, virtual_stages, pipeline * virtual_stages, layers);
  if (layers % (pipeline * virtual_stages) != 0)
    return fmt::format("pipeline {} x virtual_stages {} = {} must divide the model's {} layers (every chunk holds "
                       "the same number of layers, as Megatron-Core's default split)",
                       pipeline, virtual_stages, pipeline * virtual_stages, layers);
  if (virtual_stages > 1 && pipeline < 2)
    return fmt::format("virtual_stages {} needs pipeline >= 2 (interleaving splits a stage's layers)", virtual_stages);
  if (virtual_stages > 1 && micro_batches % pipeline != 0)
    return fmt::format("micro_batches {} must be a multiple of pipeline {} with virtual_stages > 1 (Megatron-Core's "
                       "interleaved schedule)",
                       micro_batches, pipeline);
  if (tensor > 1 && has_moe_layers && !sequence_parallel)
    return fmt::format("tensor {} with MoE layers needs sequence_parallel: true (Megatron-Core requires sequence "
                       "parallelism when MoE runs with tensor parallelism)",
                       tensor);
  return {};
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

int LayoutGroups::prev_stage_rank(int r) const { return stage(r) == 0 ? -1 : r - gpus_per_stage(); }
int LayoutGroups::next_stage_rank(int r) const {
  return stage(r) == l_.pipeline - 1 ? -1 : r + gpus_per_stage();
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

}  // namespace moesim
