// Pipeline schedules on the engine: the bubble of 1F1B and interleaved 1F1B against the closed
// form, message semantics, and a two-stage iteration of the hand scenario to the nanosecond.
#include <catch2/catch.hpp>

#include "app/outputs.hpp"
#include "app/runner.hpp"
#include "file_fixture.hpp"
#include "hand_fixture.hpp"
#include "sim/layout.hpp"
#include "sim/program.hpp"

using namespace moesim;

namespace {

struct PipeRun {
  TimeNs end_ns = 0;
  TimeNs stage0_bubble_ns = 0;
  TimeNs stage0_compute_ns = 0;
};

// One GPU per stage running Megatron-Core's schedule: each chunk's forward takes f / v and its
// backward b / v; every message between virtual stages takes c.
PipeRun run_pipeline(int p, int v, int m, TimeNs f, TimeNs b, TimeNs c) {
  Programs pr;
  pr.reset(p, 2 * m * p * v);
  auto id = [&](bool fw, int mb, int vs) { return ((fw ? 0 : 1) * m + mb) * p * v + vs; };
  for (int s = 0; s < p; ++s)
    for (const PipelineStep& st : pipeline_schedule(s, p, v, m)) {
      const int vs = st.chunk * p + s;
      if (st.forward) {
        if (vs > 0) pr.add_recv(s, id(true, st.micro_batch, vs));
        pr.add_local(s, Phase::Compute, f / v);
        if (vs < p * v - 1) pr.add_send(s, id(true, st.micro_batch, vs + 1), c);
      } else {
        if (vs < p * v - 1) pr.add_recv(s, id(false, st.micro_batch, vs));
        pr.add_local(s, Phase::Compute, b / v);
        if (vs > 0) pr.add_send(s, id(false, st.micro_batch, vs - 1), c);
      }
    }
  Engine e;
  pr.run(e, 0);
  PipeRun r;
  for (int s = 0; s < p; ++s) {
    r.end_ns = std::max(r.end_ns, pr.end_ns(s));
    TimeNs sum = 0;
    for (TimeNs x : pr.busy(s)) sum += x;
    CHECK(sum == pr.end_ns(s));  // every nanosecond of a stage is compute or bubble
  }
  r.stage0_bubble_ns = pr.busy(0)[static_cast<int>(Phase::Bubble)];
  r.stage0_compute_ns = pr.busy(0)[static_cast<int>(Phase::Compute)];
  return r;
}

}  // namespace

TEST_CASE("pipeline: the 1F1B bubble is (p - 1) / (m + p - 1) of the pipeline", "[pipeline]") {
  // p = 4 stages, m = 8 micro-batches, forward 120 ns, backward 240 ns, free messages:
  // (m + p - 1) (f + b) = 11 * 360 = 3960 ns, of which stage 0 computes 8 * 360 = 2880 and
  // waits (p - 1)(f + b) = 1080: 1080 / 3960 = 3 / 11.
  const PipeRun r = run_pipeline(4, 1, 8, 120, 240, 0);
  CHECK(r.end_ns == 3960);
  CHECK(r.stage0_compute_ns == 2880);
  CHECK(r.stage0_bubble_ns == 1080);
  // One micro-batch: no overlap at all, each stage idles (p - 1) / p of the time.
  const PipeRun one = run_pipeline(2, 1, 1, 120, 240, 0);
  CHECK(one.end_ns == 720);
  CHECK(one.stage0_bubble_ns == 360);
}

TEST_CASE("pipeline: interleaving divides the bubble by the virtual stages", "[pipeline]") {
  // (p - 1) / (v m + p - 1): with p = 4, v = 2, m = 8 the pipeline takes m (f + b) + (p - 1)(f + b) / v
  // = 2880 + 540 = 3420 ns, and stage 0 waits 540: 540 / 3420 = 3 / 19 = (4 - 1) / (2 * 8 + 4 - 1).
  const PipeRun r = run_pipeline(4, 2, 8, 120, 240, 0);
  CHECK(r.end_ns == 3420);
  CHECK(r.stage0_bubble_ns == 540);
  // p = 2, v = 2, m = 4: 4 * 360 + 360 / 2 = 1620 ns, of which 180 wait: 1 / 9 = 1 / (2 * 4 + 1).
  const PipeRun s = run_pipeline(2, 2, 4, 120, 240, 0);
  CHECK(s.end_ns == 1620);
  CHECK(s.stage0_bubble_ns == 180);
  // Three chunks per stage: 2880 + 1080 / 3 = 3240.
  CHECK(run_pipeline(4, 3, 8, 120, 240, 0).end_ns == 3240);
  // Messages that cost time can only lengthen the pipeline.
  CHECK(run_pipeline(4, 2, 8, 120, 240, 10).end_ns > 3420);
}

TEST_CASE("pipeline: a receive waits for its send; a send costs its sender nothing", "[pipeline]") {
  Programs pr;
  pr.reset(2, 1);
  pr.add_local(0, Phase::Compute, 100);
  pr.add_send(0, 0, 30);
  pr.add_local(0, Phase::Compute, 50);
  pr.add_recv(1, 0);  // GPU 1 reaches the receive at 0 and waits until 130
  pr.add_local(1, Phase::Compute, 10);
  Engine e;
  pr.run(e, 1000);
  CHECK(pr.end_ns(0) == 1150);
  CHECK(pr.end_ns(1) == 1140);
  CHECK(pr.busy(1)[static_cast<int>(Phase::Bubble)] == 130);
  CHECK(pr.busy(0)[static_cast<int>(Phase::Bubble)] == 0);
  // A receive reached after the message arrived does not wait.
  Programs late;
  late.reset(2, 1);
  late.add_send(0, 0, 5);
  late.add_local(1, Phase::Compute, 20);
  late.add_recv(1, 0);
  Engine e2;
  late.run(e2, 0);
  CHECK(late.end_ns(1) == 20);
  CHECK(late.busy(1)[static_cast<int>(Phase::Bubble)] == 0);
}

TEST_CASE("pipeline: two stages, two micro-batches of the hand scenario, to the nanosecond", "[pipeline][iteration]") {
  testing::TempDir dir;
  // Each stage's GPU routes 2 x 1024 tokens per MoE layer, 1024 to each expert (both on it).
  const std::string trace = dir.write("pp.csv",
                                      "iteration,layer,src_gpu,expert,tokens\n0,0,0,0,1024\n0,0,0,1,1024\n"
                                      "0,1,0,0,1024\n0,1,0,1,1024\n");
  // The hand scenario (hand_fixture.hpp) on two stages: 2 MoE layers, one per stage, 2
  // micro-batches of 1024 tokens; one GPU per expert-parallel group holds both experts.
  Scenario s = load_scenario_text(testing::hand_scenario(trace), "hand-pp.yaml",
                                  {"model.layers=2", "parallelism.pipeline=2", "parallelism.micro_batches=2",
                                   "placement.slots_per_gpu=2", "run.max_iterations=1"},
                                  std::nullopt);
  REQUIRE(s.slots_per_gpu == 2);  // one GPU per expert-parallel group holds both experts
  RunOptions ro;
  ro.timeline_iterations = {0};
  const PolicyResult pr = run_scenario(s, ro).at(0);
  const IterationResult& it = pr.rows.at(0).result;
  // One micro-batch through one layer (the hand scenario's figures): attention 128850, gate 2106,
  // both experts on 512 tokens each 2 x 85900: f0 = 302756 ns on stage 0; the last stage adds the
  // LM head (21475): f1 = 324231. Backward twice each: b0 = 605512, b1 = 648462. The all-to-alls
  // stay on the GPU (one GPU per group): zero time.
  // An activation message: 1024 tokens x 1024 x 2 B = 2097152 B at 10 GB/s = 209716 ns plus the
  // message latency 22400 ns: c = 232116 ns.
  // Stage 0 runs F0, F1, then waits for B0's gradients, which arrive at f0 + c + f1 + b1 + c;
  // after B0 it waits for B1's, which stage 1 sends after F1 and B1: stage 0 ends its pipeline at
  // f0 + 2 (f1 + b1) + 2 c + b0 = 302756 + 1945386 + 464232 + 605512 = 3317886 ns, having
  // computed 2 (f0 + b0) = 1816536 and waited 1501350.
  CHECK(it.critical_gpu == 0);
  CHECK(it.phase_ns[static_cast<int>(Phase::Compute)] == 1816536);
  CHECK(it.phase_ns[static_cast<int>(Phase::Bubble)] == 1501350);
  CHECK(it.phase_ns[static_cast<int>(Phase::AllToAll)] == 0);
  // Then Adam on stage 0's 5246976 dense (layer 0 and the embedding) and 2 x 8388608 expert
  // parameters: 22024192 x 28 B / 1000 GB/s = 616678 ns. No data parallelism: no gradient sync.
  CHECK(it.phase_ns[static_cast<int>(Phase::Optimizer)] == 616678);
  CHECK(it.phase_ns[static_cast<int>(Phase::GradSync)] == 0);
  CHECK(it.iteration_ns == 3317886 + 616678);
  CHECK(it.tokens_routed == 4096);
  CHECK(it.tokens_dropped == 0);
  // The timeline names each lane's stage and shows the pipeline's waits.
  const auto doc = nlohmann::json::parse(timeline_json(s, {pr}));
  bool stage1 = false, wait = false;
  for (const auto& e : doc["traceEvents"]) {
    if (e["ph"] == "M" && e["name"] == "thread_name" && e["args"]["name"] == "GPU 1 stage 1 compute") stage1 = true;
    if (e["ph"] == "X" && e["name"] == "pipeline: wait for gradients (micro-batch 0)" && e["tid"] == 1) wait = true;
  }
  CHECK(stage1);
  CHECK(wait);
}
