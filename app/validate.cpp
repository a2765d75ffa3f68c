#include "app/validate.hpp"

#include <fmt/format.h>

#include <cmath>
#include <iostream>
#include <numeric>
#include <optional>

#include "app/scenario.hpp"
#include "sim/error.hpp"
#include "sim/network.hpp"

namespace moesim {
namespace {

// Published bus bandwidths (shared/reference/hardware-and-calibration.md), all-reduce, large sizes.
struct Published {
  std::string cluster;  // preset
  int nodes;
  int nics_per_node;
  double min_bytes;     // the figure holds from this size up
  double max_bytes;
  double bus_gbps;
  std::string source;
};
const std::vector<Published> kPublished{
    // The narrower figure first: at 128 MB the nccl-tests measurement is the one for that size.
    {"dgx-a100", 2, 4, 128e6, 129e6, 93.0, "nccl-tests issue 152 (2 x 8 A100, 4 x HDR, 128 MB)"},
    {"dgx-a100", 1, 8, 64e6, 1.1e9, 232.5, "NCCL issue 1048 (8 x A100, one node)"},
    {"dgx-a100", 2, 4, 64e6, 1.1e9, 86.0, "NCCL issue 1048 (2 x 8 A100, 4 x 200 Gb/s per node)"},
};

std::string value_of(const std::vector<std::string>& args, std::size_t& i, const std::string& flag) {
  if (i + 1 >= args.size()) throw InputError(fmt::format("moesim validate: {} needs a value", flag));
  return args[++i];
}

}  // namespace

int cmd_validate(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << "moesim validate collectives [--cluster PRESET] [--nodes N] [--nics-per-node N]\n"
                 "  Prints, for all-reduce, all-gather, reduce-scatter and broadcast over every GPU of the cluster\n"
                 "  and sizes from 1 MB to 1 GB, the bus bandwidth NCCL's cost model predicts (nccl-tests\n"
                 "  definition), the published measurement where one exists and the error.\n"
                 "  Defaults: --cluster dgx-a100 --nodes 1 (the preset's NICs).\n";
    return args.empty() ? 2 : 0;
  }
  if (args[0] != "collectives") {
    throw InputError(fmt::format("moesim validate: unknown subject '{}'; allowed: collectives", args[0]));
  }
  std::string preset = "dgx-a100";
  int nodes = 1;
  std::optional<int> nics;
  for (std::size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    try {
      if (a == "--cluster") preset = value_of(args, i, a);
      else if (a == "--nodes") nodes = std::stoi(value_of(args, i, a));
      else if (a == "--nics-per-node") nics = std::stoi(value_of(args, i, a));
      else throw InputError(fmt::format("moesim validate: unknown option '{}'; allowed: --cluster, --nodes, --nics-per-node", a));
    } catch (const std::invalid_argument&) {
      throw InputError(fmt::format("moesim validate: {} expects an integer", a));
    }
  }
  std::string text = fmt::format("cluster: {{preset: {}, nodes: {}{}}}\nmodel: {{preset: gpt-small-moe}}\n"
                                 "placement: {{slots_per_gpu: 16}}\npolicies: [static]\n",
                                 preset, nodes, nics ? fmt::format(", nics_per_node: {}", *nics) : "");
  Scenario s = load_scenario_text(text, "--cluster", {}, std::nullopt);
  Cluster cluster(s.cluster);
  AnalyticalNetwork net(cluster);
  std::vector<int> gpus(cluster.num_gpus());
  std::iota(gpus.begin(), gpus.end(), 0);
  const int n = cluster.num_gpus();
  std::cout << fmt::format("{} x {} ({} GPUs, {} NICs of {} Gb/s per node)\n", nodes, preset, n, s.cluster.nics_per_node,
                           s.cluster.nic_gbit);
  std::cout << fmt::format("{:<15} {:>10} {:>10} {:>8} {:>10} {:>10} {:>8}  {}\n", "collective", "size_MB", "time_us",
                           "algo", "busbw_gbps", "published", "error_%", "source");
  for (Collective c : {Collective::AllReduce, Collective::AllGather, Collective::ReduceScatter, Collective::Broadcast}) {
    for (double mb = 1; mb <= 1024; mb *= 2) {
      const double bytes = mb * 1e6;
      const CollectiveEstimate e = net.collective(c, bytes, gpus);
      const double bus = nccl_tests_bus_gbps(c, bytes, e.time_ns, n);
      std::string pub = "-", err = "-", src;
      if (c == Collective::AllReduce) {
        for (const auto& p : kPublished) {
          if (p.cluster == preset && p.nodes == nodes && p.nics_per_node == s.cluster.nics_per_node &&
              bytes >= p.min_bytes && bytes <= p.max_bytes) {
            pub = fmt::format("{:.1f}", p.bus_gbps);
            err = fmt::format("{:+.1f}", 100.0 * (bus - p.bus_gbps) / p.bus_gbps);
            src = p.source;
            break;
          }
        }
      }
      std::cout << fmt::format("{:<15} {:>10.0f} {:>10.1f} {:>8} {:>10.1f} {:>10} {:>8}  {}\n", to_string(c), mb,
                               static_cast<double>(e.time_ns) / 1e3,
                               fmt::format("{}/{}", to_string(e.algo), to_string(e.proto)), bus, pub, err, src);
    }
  }
  return 0;
}

}  // namespace moesim
