// Peak resident memory of sampling without a trajectory: the 2-D workload of the benchmarks
// (MLP [x, t] → 4×128 SiLU → 2, float, midpoint with 50 steps) at N samples, with the network
// called directly or through a ParallelField. Prints the peak RSS next to the sizes of one d×N
// and one h×N float matrix (h = 128), in MiB.
//
//   sampling_memory [N] [plain|parallel] [threads]     (defaults: 262144 plain 1)
#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>

#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/parallel/parallel_field.hpp"
#include "flowmatch/solver/integrate.hpp"

namespace {

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

}  // namespace

int main(int argc, char** argv) {
  const flowmatch::Index samples = argc > 1 ? std::atol(argv[1]) : 262144;
  const std::string mode = argc > 2 ? argv[2] : "plain";
  const int threads = argc > 3 ? std::atoi(argv[3]) : 1;
  if (samples < 1 || (mode != "plain" && mode != "parallel") || threads < 1) {
    std::fprintf(stderr, "usage: sampling_memory [N >= 1] [plain|parallel] [threads >= 1]\n");
    return 2;
  }
  const double baseline = peak_rss_mib();
  flowmatch::MlpConfig config;
  config.dim = 2;
  config.hidden = {128, 128, 128, 128};
  std::mt19937_64 generator(1);
  const flowmatch::Mlp<float> net(config, generator);
  std::normal_distribution<float> normal;
  flowmatch::Matrix<float> x0(2, samples);
  for (float& v : x0.reshaped()) v = normal(generator);
  flowmatch::SolverOptions<float> options;
  options.method = flowmatch::Method::midpoint;
  options.step_size = 1.0f / 50.0f;
  flowmatch::SolveResult<float> result;
  if (mode == "plain") {
    result = flowmatch::sample(net, x0, options);
  } else {
    flowmatch::ThreadPool pool(threads);
    result = flowmatch::sample(flowmatch::parallel_field(std::cref(net), pool), x0, options);
  }
  const double mib = 1.0 / (1024.0 * 1024.0);
  const double state_mib = static_cast<double>(2 * samples) * sizeof(float) * mib;
  const double hidden_mib = static_cast<double>(128 * samples) * sizeof(float) * mib;
  std::printf(
      "N = %ld, %s (threads %d): peak RSS %.1f MiB (%.1f MiB before the run); "
      "N*d = %.1f MiB, N*h = %.1f MiB; nfe %zu, mean x %.4f\n",
      static_cast<long>(samples), mode.c_str(), threads, peak_rss_mib(), baseline, state_mib,
      hidden_mib, result.stats.nfe, static_cast<double>(result.state.mean()));
  return 0;
}
