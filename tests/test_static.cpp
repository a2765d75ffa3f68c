// Static expert parallelism: capacity, drops and the all-to-all-v matrix on cases small enough
// to work out by hand.
#include <catch2/catch.hpp>

#include "policies/capacity.hpp"
#include "policies/registry.hpp"
#include "sim/iteration.hpp"

using namespace moesim;

namespace {

struct StaticFixture {
  ClusterSpec cluster;
  MoeModelSpec model;
  PolicyContext ctx;
  std::unique_ptr<Policy> policy;
  Placement placement;

  StaticFixture(int gpus, int slots, int experts, std::int64_t tokens, const std::string& params) {
    cluster.nodes = gpus;
    cluster.gpus_per_node = 1;
    model.experts = experts;
    model.top_k = 1;
    model.hidden = 1000;
    ctx.cluster = &cluster;
    ctx.model = &model;
    ctx.gpus = gpus;
    ctx.slots_per_gpu = slots;
    ctx.moe_layers = 1;
    ctx.experts = experts;
    ctx.tokens_per_gpu = tokens;
    ctx.top_k = 1;
    YAML::Node n = YAML::Load(params);
    Cfg c(n, "test.yaml", "policies[0]");
    policy = make_policy(ctx, c);
    placement = policy->initial_placement();
  }
};

}  // namespace

TEST_CASE("DeepSpeed capacity formula", "[static]") {
  // ceil(k * tokens / experts * cf), floored at min_capacity.
  CHECK(deepspeed_capacity(10, 1, 2, 1.0, 0) == 5);
  CHECK(deepspeed_capacity(10, 1, 2, 1.5, 0) == 8);     // ceil(7.5)
  CHECK(deepspeed_capacity(10, 1, 2, 1.0, 6) == 6);     // min_capacity wins
  CHECK(deepspeed_capacity(2048, 1, 16, 1.0, 4) == 128);
  CHECK(deepspeed_capacity(2048, 2, 16, 1.25, 4) == 320);  // top-2 doubles it: 2*2048/16*1.25
}

TEST_CASE("static: capacity and drops on a 2-GPU, 2-expert case", "[static]") {
  // Each GPU routes 10 tokens; capacity ceil(10 / 2 * 1.0) = 5 per (source, expert).
  StaticFixture f(2, 1, 2, 10, "{name: static, capacity_factor: 1.0, min_capacity: 0}");
  REQUIRE(f.placement.expert_of_slot[0] == std::vector<int>{0, 1});
  // counts [src][expert]: GPU0 sends 7 to e0 and 3 to e1, GPU1 sends 2 to e0 and 8 to e1.
  const std::int64_t counts[] = {7, 3, 2, 8};
  LayerDispatch d;
  f.policy->dispatch(0, counts, f.placement, d);
  // accepted [src][slot]: min(count, 5).
  CHECK(d.accepted == std::vector<std::int64_t>{5, 3, 2, 5});
  // Buffers are padded to capacity whatever the load.
  CHECK(d.buffered == std::vector<std::int64_t>{5, 5, 5, 5});
  CHECK(d.routed == 20);
  CHECK(d.dropped == 5);  // 2 from GPU0 -> e0, 3 from GPU1 -> e1

  SECTION("the all-to-all-v matrix, by hand") {
    // 5 buffered tokens of 1000 bf16 values = 10000 bytes per (src, dst) pair; the diagonal
    // stays on the GPU.
    auto m = dispatch_byte_matrix(d, 1, 1000 * 2);
    CHECK(m == std::vector<double>{10000, 10000, 10000, 10000});
  }
}

TEST_CASE("static dropless: capacity is the largest count in the group, padded", "[static]") {
  StaticFixture f(2, 1, 2, 10, "{name: static, drop_tokens: false}");
  const std::int64_t counts[] = {7, 3, 2, 8};
  LayerDispatch d;
  f.policy->dispatch(0, counts, f.placement, d);
  CHECK(d.dropped == 0);
  CHECK(d.accepted == std::vector<std::int64_t>{7, 3, 2, 8});
  CHECK(d.buffered == std::vector<std::int64_t>{8, 8, 8, 8});
  auto m = dispatch_byte_matrix(d, 1, 2.0);
  CHECK(m == std::vector<double>{16, 16, 16, 16});
}

TEST_CASE("static with replicas: each source sends only within its expert-parallel group", "[static]") {
  // 4 GPUs x 1 slot for 2 experts: 2 replicas; groups {0,1} and {2,3}.
  StaticFixture f(4, 1, 2, 10, "{name: static, capacity_factor: 1.0, min_capacity: 0}");
  REQUIRE(f.placement.expert_of_slot[0] == std::vector<int>{0, 1, 0, 1});
  REQUIRE(f.policy->parameters()["replicas_per_expert"] == 2);
  const std::int64_t counts[] = {7, 3, 2, 8, 10, 0, 0, 10};
  LayerDispatch d;
  f.policy->dispatch(0, counts, f.placement, d);
  // GPU2 sends its 10 e0 tokens to slot 2 (GPU2), capped at 5; nothing crosses groups.
  CHECK(d.accepted[2 * 4 + 2] == 5);
  CHECK(d.accepted[2 * 4 + 0] == 0);
  CHECK(d.dropped == 2 + 3 + 5 + 5);
  auto m = dispatch_byte_matrix(d, 1, 1.0);
  // Row 0: GPU0 -> GPU0 (5) and GPU1 (5); nothing to GPU2 or GPU3.
  CHECK(m[0 * 4 + 2] == 0);
  CHECK(m[0 * 4 + 3] == 0);
  CHECK(m[0 * 4 + 1] == 5);
  CHECK(m[2 * 4 + 3] == 5);
}

TEST_CASE("static rejects slot counts that cannot hold every expert evenly", "[static]") {
  REQUIRE_THROWS_WITH(StaticFixture(3, 1, 2, 10, "{name: static}"),
                      Catch::Matchers::Contains("multiple of the 2 experts"));
  REQUIRE_THROWS_WITH(StaticFixture(2, 1, 2, 10, "{name: static, capacity_factr: 2}"),
                      Catch::Matchers::Contains("unknown key 'policies[0].capacity_factr'"));
}
