// torchscript_bench: the cost of a TorchScript model run as a flowmatch field, for
// tests/bench/torchscript_vs_python.py (which times the same loop in Python over the same
// module and prints the ratio). Not a test.
//
//   torchscript_bench MODEL [--n N] [--steps K] [--method midpoint|euler] [--threads T]
//                     [--repeats R] [--divergence-n M] [--max-pass-rows P] [--skip-divergence]
//                     [--retain-memory]
//
// MODEL is a class-conditional module forward(x [N, 1, 8, 8], t [N], c int64 [N]) such as the
// digits model of examples/digits/train_digits.py. Its labels are bound to n mod 10 for sample
// n (a ConditionedField), so the field is a plain velocity field on R^64.
//
//   - sampling: flowmatch::sample from fixed standard-normal noise with the fixed-step method
//     and K steps (2K network evaluations for midpoint, K for Euler), the shortest wall time of
//     R runs after one warm-up run;
//   - divergence: at M samples and t = 0.5, the time of one exact divergence (the field's
//     divergence member) over the time of one vector-Jacobian product, one forward and one
//     backward pass over the same M samples (the mean over a run of d calls, the fastest run of
//     R): the divergence's cost in "backward-pass equivalents", at most d + 1 = 65 by design
//     (d forward and backward passes over the batch).
//
// --retain-memory calls flowmatch::retain_freed_memory() first (the allocator keeps freed
// memory rather than returning it to the system after every pass). Prints one JSON object on
// standard output.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>

#include "flowmatch/interop/torch.hpp"
#include "flowmatch/likelihood/conditioned_field.hpp"
#include "flowmatch/likelihood/standard_normal.hpp"
#include "flowmatch/solver/integrate.hpp"

namespace {

using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::Vector;
using Clock = std::chrono::steady_clock;

struct Settings {
  std::string model;
  Index n = 256;
  Index steps = 50;
  std::string method = "midpoint";
  int threads = 1;
  int repeats = 5;
  Index divergence_n = 64;
  Index max_pass_rows = flowmatch::TorchScriptOptions{}.max_pass_rows;
  bool divergence = true;
  bool retain_memory = false;
};

Settings parse(int argc, char** argv) {
  if (argc < 2) throw std::invalid_argument("usage: torchscript_bench MODEL [options]");
  Settings settings;
  settings.model = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--skip-divergence") {
      settings.divergence = false;
      continue;
    }
    if (flag == "--retain-memory") {
      settings.retain_memory = true;
      continue;
    }
    if (i + 1 >= argc) throw std::invalid_argument(flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--n") {
      settings.n = std::stol(value);
    } else if (flag == "--steps") {
      settings.steps = std::stol(value);
    } else if (flag == "--method") {
      settings.method = value;
    } else if (flag == "--threads") {
      settings.threads = std::stoi(value);
    } else if (flag == "--repeats") {
      settings.repeats = std::stoi(value);
    } else if (flag == "--divergence-n") {
      settings.divergence_n = std::stol(value);
    } else if (flag == "--max-pass-rows") {
      settings.max_pass_rows = std::stol(value);
    } else {
      throw std::invalid_argument("unknown option " + flag);
    }
  }
  if (settings.method != "midpoint" && settings.method != "euler") {
    throw std::invalid_argument("--method must be midpoint or euler");
  }
  if (settings.n < 1 || settings.steps < 1 || settings.repeats < 1 || settings.divergence_n < 1) {
    throw std::invalid_argument("--n, --steps, --repeats and --divergence-n must be >= 1");
  }
  return settings;
}

// The shortest wall time of @p repeats calls of @p work, after one warm-up call: on a shared
// machine, the run least disturbed by other work.
double fastest_seconds(int repeats, const std::function<void()>& work) {
  work();
  double fastest = std::numeric_limits<double>::infinity();
  for (int r = 0; r < repeats; ++r) {
    const auto start = Clock::now();
    work();
    fastest = std::min(fastest, std::chrono::duration<double>(Clock::now() - start).count());
  }
  return fastest;
}

// Labels n mod 10, as a 1×N condition matrix.
Matrix<float> cycling_labels(Index count) {
  Matrix<float> labels(1, count);
  for (Index n = 0; n < count; ++n) labels(0, n) = float(n % 10);
  return labels;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Settings settings = parse(argc, argv);
    flowmatch::set_torch_threads(settings.threads);
    if (settings.retain_memory && !flowmatch::retain_freed_memory()) {
      throw std::runtime_error("--retain-memory: not available with this C library");
    }
    flowmatch::TorchScriptOptions options;
    options.max_pass_rows = settings.max_pass_rows;
    using Field = flowmatch::ConditionalTorchScriptField<float>;
    const Field field(settings.model, {1, 8, 8}, flowmatch::TorchCondition::labels(), options);
    const Index dim = field.dim();
    std::mt19937_64 generator(5);

    const flowmatch::ConditionedField<float, std::reference_wrapper<const Field>> sampler_field(
        std::cref(field), cycling_labels(settings.n));
    const Matrix<float> noise =
        flowmatch::StandardNormal::sample<float>(dim, settings.n, generator);
    flowmatch::SolverOptions<float> solver;
    solver.method =
        settings.method == "euler" ? flowmatch::Method::euler : flowmatch::Method::midpoint;
    solver.step_size = 1.0f / float(settings.steps);
    Matrix<float> samples;
    const double sampling = fastest_seconds(
        settings.repeats, [&] { samples = flowmatch::sample(sampler_field, noise, solver).state; });
    std::cout << "{\"n\": " << settings.n << ", \"steps\": " << settings.steps << ", \"method\": \""
              << settings.method << "\", \"threads\": " << settings.threads
              << ", \"retain_memory\": " << (settings.retain_memory ? "true" : "false")
              << ", \"sampling_seconds\": " << sampling << ", \"sample_mean\": " << samples.mean();

    if (settings.divergence) {
      const Index m = settings.divergence_n;
      const flowmatch::ConditionedField<float, std::reference_wrapper<const Field>> conditioned(
          std::cref(field), cycling_labels(m));
      const Matrix<float> x = flowmatch::StandardNormal::sample<float>(dim, m, generator);
      const Matrix<float> cotangent = flowmatch::StandardNormal::sample<float>(dim, m, generator);
      Vector<float> divergence(m);
      Matrix<float> vjp(dim, m), velocity(dim, m);
      // The single passes are timed as runs of d calls, the divergence's own length, so that
      // both sides of the ratio see the machine over the same span of time.
      const auto per_call = [&](const std::function<void()>& call) {
        return fastest_seconds(settings.repeats,
                               [&] {
                                 for (Index k = 0; k < dim; ++k) call();
                               }) /
               double(dim);
      };
      const double divergence_time =
          fastest_seconds(settings.repeats, [&] { conditioned.divergence(0.5f, x, divergence); });
      const double vjp_time = per_call([&] { conditioned.vjp(0.5f, x, cotangent, vjp); });
      const double forward_time = per_call([&] { conditioned(0.5f, x, velocity); });
      std::cout << ", \"dim\": " << dim << ", \"divergence_n\": " << m
                << ", \"max_pass_rows\": " << settings.max_pass_rows
                << ", \"divergence_seconds\": " << divergence_time
                << ", \"vjp_seconds\": " << vjp_time << ", \"forward_seconds\": " << forward_time
                << ", \"backward_pass_equivalents\": " << divergence_time / vjp_time;
    }
    std::cout << "}\n";
    return EXIT_SUCCESS;
  } catch (const std::exception& error) {
    std::cerr << "torchscript_bench: " << error.what() << "\n";
    return EXIT_FAILURE;
  }
}
