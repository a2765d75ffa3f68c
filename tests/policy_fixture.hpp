#pragma once
// A small world for policy unit tests: `gpus` single-GPU nodes, one routed expert of 1000
// parameters (2000 bytes of weights and of gradients, 12000 of Adam state), and the policy that
// the YAML mapping `params` names. `tune`, when given, changes the cluster, model or context
// before the policy is built (tests whose hand-worked numbers need other round figures).
#include <yaml-cpp/yaml.h>

#include <functional>
#include <memory>
#include <string>

#include "policies/registry.hpp"

namespace moesim::testing {

struct SingleGpuNodes {
  ClusterSpec cluster;
  MoeModelSpec model;
  TrainingSpec training;
  PolicyContext ctx;
  std::unique_ptr<Policy> policy;

  SingleGpuNodes(int gpus, int slots, int experts, int layers, std::int64_t tokens, const std::string& params,
                 const std::function<void(SingleGpuNodes&)>& tune = {}) {
    cluster.nodes = gpus;
    cluster.gpus_per_node = 1;
    model.experts = experts;
    model.hidden = 100;
    ctx.cluster = &cluster;
    ctx.model = &model;
    ctx.training = &training;
    ctx.gpus = gpus;
    ctx.slots_per_gpu = slots;
    ctx.moe_layers = layers;
    ctx.experts = experts;
    ctx.tokens_per_gpu = tokens;
    ctx.top_k = 1;
    ctx.expert_params = 1000;
    ctx.expert_weight_bytes = 2000;
    ctx.expert_grad_bytes = 2000;
    ctx.expert_optimizer_bytes = 12000;
    if (tune) tune(*this);
    YAML::Node n = YAML::Load(params);
    Cfg c(n, "test.yaml", "policies[0]");
    policy = make_policy(ctx, c);
  }
  // Round hardware for hand-worked times: one 8 Gb/s NIC per node at efficiency 1 (1e9 B/s per
  // GPU) and GPUs of 1 TFLOP/s at GEMM efficiency 1.
  void unit_hardware() {
    cluster.nics_per_node = 1;
    cluster.nic_gbit = 8.0;
    cluster.nic_efficiency = 1.0;
    cluster.gpu.peak_tflops = 1.0;
    cluster.gpu.gemm_efficiency = 1.0;
  }
  SingleGpuNodes(const SingleGpuNodes&) = delete;
  SingleGpuNodes& operator=(const SingleGpuNodes&) = delete;
};

}  // namespace moesim::testing
