// Static expert parallelism: capacity, drops and the all-to-all-v matrix on cases small enough
// to work out by hand.
#include <catch2/catch.hpp>

#include <algorithm>

#include "app/outputs.hpp"
#include "app/runner.hpp"
#include "policies/capacity.hpp"
#include "policies/registry.hpp"
#include "sim/iteration.hpp"

using namespace moesim;

namespace {

struct StaticFixture {
  ClusterSpec cluster;
  MoeModelSpec model;
  TrainingSpec training;
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
    ctx.training = &training;
    ctx.expert_params = 1000.0;
    ctx.expert_weight_bytes = 2000.0;
    ctx.expert_grad_bytes = 2000.0;
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

TEST_CASE("static with spare slots: round-robin extra replicas, sources split in blocks", "[static][budget]") {
  // 3 GPUs x 1 slot for 2 experts: slot i holds expert i mod 2, so expert 0 has replicas in slots
  // 0 and 2, expert 1 only slot 1. Source src sends expert e to replica floor(src r_e / 3):
  // expert 0: sources 0, 1 -> slot 0 and source 2 -> slot 2; expert 1: every source -> slot 1.
  StaticFixture f(3, 1, 2, 10, "{name: static, capacity_factor: 1.0, min_capacity: 0}");
  REQUIRE(f.placement.expert_of_slot[0] == std::vector<int>{0, 1, 0});
  CHECK(f.policy->parameters()["replicas_per_expert"] == 1);
  CHECK(f.policy->parameters()["experts_with_extra_replica"] == 1);
  CHECK(f.policy->parameters()["expert_parallel_group_gpus"] == 3);
  // counts [src][expert]; capacity ceil(10 / 2 x 1.0) = 5 per (source, expert), as without spares.
  const std::int64_t counts[] = {7, 3, 2, 8, 6, 4};
  LayerDispatch d;
  f.policy->dispatch(0, counts, f.placement, d);
  // accepted [src][slot]: src0 5 of 7 to slot 0, 3 to slot 1; src1 2 to slot 0, 5 of 8 to slot 1;
  // src2 4 to slot 1, 5 of 6 to slot 2.
  CHECK(d.accepted == std::vector<std::int64_t>{5, 3, 0, 2, 5, 0, 0, 4, 5});
  CHECK(d.buffered == std::vector<std::int64_t>{5, 5, 0, 5, 5, 0, 0, 5, 5});
  CHECK(d.routed == 30);
  CHECK(d.dropped == 2 + 3 + 1);
  // Padded rows of 5 per (source, replica): GPU 0 computes 10, GPU 1 15, GPU 2 5.
  auto m = dispatch_byte_matrix(d, 1, 1.0);
  CHECK(m == std::vector<double>{5, 5, 0, 5, 5, 0, 0, 5, 5});

  SECTION("the spare replica is charged: sharded optimizer and gradient sync over both copies") {
    // Expert 0 (1000 parameters) on GPUs {0, 2}: its gradients reduce-scattered and weights
    // all-gathered over them, half its Adam step on each; expert 1 whole on GPU 1.
    const SyncPlan sp = f.policy->sync_plan(0, f.placement, f.placement);
    CHECK_FALSE(sp.replica_allreduce);
    REQUIRE(sp.grad_collectives.size() == 1);
    CHECK(sp.grad_collectives[0].gpus == std::vector<int>{0, 2});
    CHECK(sp.grad_collectives[0].bytes == 2000.0);
    REQUIRE(sp.post_collectives.size() == 1);
    CHECK(sp.post_collectives[0].gpus == std::vector<int>{0, 2});
    CHECK(sp.gpu_optimizer_params == std::vector<double>{500.0, 1000.0, 500.0});
  }
  SECTION("dropless: one expert-parallel group of all GPUs, capacity the largest count of all") {
    StaticFixture g(3, 1, 2, 10, "{name: static, drop_tokens: false}");
    LayerDispatch dl;
    g.policy->dispatch(0, counts, g.placement, dl);
    CHECK(dl.dropped == 0);
    CHECK(dl.buffered == std::vector<std::int64_t>{8, 8, 0, 8, 8, 0, 0, 8, 8});
  }
}

TEST_CASE("static with spare slots: 2 GPUs x 3 slots for 4 experts", "[static][budget]") {
  // Slots 0..5 hold experts 0 1 2 | 3 0 1: experts 0 and 1 have a replica on each GPU.
  StaticFixture f(2, 3, 4, 8, "{name: static, capacity_factor: 1.0, min_capacity: 0, shard_optimizer: false}");
  REQUIRE(f.placement.expert_of_slot[0] == std::vector<int>{0, 1, 2, 3, 0, 1});
  CHECK(f.policy->parameters()["experts_with_extra_replica"] == 2);
  // Each source routes 2 to every expert (capacity ceil(8 / 4) = 2): replicated experts are
  // served on the source's own GPU (replica floor(src x 2 / 2) = src), the others where they are.
  const std::int64_t counts[] = {2, 2, 2, 2, 2, 2, 2, 2};
  LayerDispatch d;
  f.policy->dispatch(0, counts, f.placement, d);
  CHECK(d.accepted == std::vector<std::int64_t>{2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2});
  CHECK(d.dropped == 0);
  // Without sharding both replicas of experts 0 and 1 run their whole Adam step: 3 experts a GPU.
  const SyncPlan sp = f.policy->sync_plan(0, f.placement, f.placement);
  CHECK(sp.replica_allreduce);
  CHECK(sp.gpu_optimizer_params == std::vector<double>{3000.0, 3000.0});
}

TEST_CASE("one compare: every policy gets the same slot and memory budget; static fills its spare slots",
          "[static][budget][compare]") {
  // 16 experts on 16 GPUs with 3 slots each: 48 slots, 16 not a multiple of 3, which static used
  // to refuse. Now each expert has 3 replicas.
  const std::string path = std::string(MOESIM_SOURCE_DIR) + "/scenarios/swiftmoe-gpt-small.yaml";
  Scenario s3 = load_scenario(path, {"run.max_iterations=4", "run.stop_at_convergence=false", "placement.slots_per_gpu=3"},
                              std::nullopt);
  s3.policies = parse_policy_specs("static:min_capacity=2,fastermoe,flexmoe:interval=2,symi");
  const auto r3 = run_scenario(s3, RunOptions{false, {}});
  REQUIRE(r3.size() == 4);
  for (const auto& r : r3) {
    INFO(r.label);
    REQUIRE_FALSE(r.oom);
    CHECK(r.slot_budget == 48);
    CHECK(r.max_filled_slots <= 48);
  }
  CHECK(r3[0].max_filled_slots == 48);
  CHECK(r3[0].parameters["replicas_per_expert"] == 3);
  const std::string table = summary_table(s3, r3);
  CHECK_THAT(table, Catch::Matchers::Contains("budget: every policy 3 slots per GPU (48 per expert-parallel group)"));
  CHECK_THAT(table, Catch::Matchers::Contains("static:min_capacity=2 48"));
  // The spare replicas are charged: one more expert per MoE layer on every GPU than at 2 slots.
  Scenario s2 = load_scenario(path, {"run.max_iterations=4", "run.stop_at_convergence=false", "placement.slots_per_gpu=2"},
                              std::nullopt);
  s2.policies = parse_policy_specs("static:min_capacity=2");
  const auto r2 = run_scenario(s2, RunOptions{false, {}});
  const double one_expert_all_layers =
      static_cast<double>(s3.model.num_moe_layers()) * s3.model.expert_params() * dtype_bytes(s3.model.dtype);
  CHECK(r3[0].peak_memory.weights_bytes - r2[0].peak_memory.weights_bytes ==
        Approx(one_expert_all_layers).epsilon(1e-12));
}

TEST_CASE("static rejects slot counts that cannot hold every expert", "[static]") {
  REQUIRE_THROWS_WITH(StaticFixture(3, 1, 4, 10, "{name: static}"),
                      Catch::Matchers::Contains("at least one slot per expert: 3 slots (3 GPUs x 1 slots) for 4 experts") &&
                          Catch::Matchers::Contains("slots_per_gpu >= 2"));
  REQUIRE_THROWS_WITH(StaticFixture(2, 3, 2, 10, "{name: static}"),
                      Catch::Matchers::Contains("would hold an expert twice on one GPU"));
  REQUIRE_THROWS_WITH(StaticFixture(2, 1, 2, 10, "{name: static, capacity_factr: 2}"),
                      Catch::Matchers::Contains("unknown key 'policies[0].capacity_factr'"));
}
