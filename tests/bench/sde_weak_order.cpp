// Weak order of the SDE schemes (solver/sde.hpp) on the Gaussian-mixture oracle under CondOT.
//
// For each diffusion and scheme, the weak error of E[f(X_1)] at K steps is measured against a
// reference run of stochastic Heun with K_ref steps driven by the same Brownian path (each
// coarse step sums K_ref/K fine increments, SdeOptions::brownian_substeps): the difference of
// the two sample means then has the small variance of the strong error, not that of f. Two test
// functions: f = x₀ (first coordinate) and f = |x|². The order is the least-squares slope of
// log|error| against log h. The reference's own bias (O(h_ref²)) and the exact value of E[f]
// under p_1 are printed as well, and the local orders between successive step sizes.
//
// Usage: sde_weak_order [samples (default 20000)] [reference steps (default 2048)] [seed]
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "../sde_support.hpp"
#include "flowmatch/likelihood/standard_normal.hpp"
#include "flowmatch/oracle/gaussian_mixture_path.hpp"
#include "flowmatch/path/affine_path.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/solver/diffusion.hpp"
#include "flowmatch/solver/sde.hpp"

namespace {

using flowmatch::Diffusion;
using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::SdeMethod;
using flowmatch::Vector;
using CondOT = flowmatch::CondOT<double>;

// f(X) per sample: the first coordinate and the squared norm.
Vector<double> first_coordinate(const Matrix<double>& x) {
  return x.row(0).transpose();
}
Vector<double> squared_norm(const Matrix<double>& x) {
  return x.colwise().squaredNorm().transpose();
}

}  // namespace

int main(int argc, char** argv) {
  const Index samples = argc > 1 ? std::stol(argv[1]) : 20000;
  const std::size_t reference_steps = argc > 2 ? std::stoul(argv[2]) : 2048;
  const std::uint64_t seed = argc > 3 ? std::stoull(argv[3]) : 1;
  const std::vector<std::size_t> step_counts{4, 8, 16, 32, 64};

  const flowmatch::GaussianMixturePath<CondOT> oracle(flowmatch_test::sde_data_mixture());
  const flowmatch::AffinePath<CondOT> path;
  std::mt19937_64 noise_generator(seed);
  const Matrix<double> x0 = flowmatch::StandardNormal::sample(2, samples, noise_generator);

  // Exact E[f] under p_1 = the data mixture.
  const flowmatch::GaussianMixture<double>& data = oracle.data();
  double exact_first = 0, exact_square = 0;
  for (Index k = 0; k < data.components(); ++k) {
    exact_first += data.weights()(k) * data.means()(0, k);
    exact_square +=
        data.weights()(k) * (data.covariance(k).trace() + data.means().col(k).squaredNorm());
  }
  std::printf("samples %ld, reference: heun with %zu steps, seed %llu\n",
              static_cast<long>(samples), reference_steps, static_cast<unsigned long long>(seed));
  std::printf("exact E[x0] = %.6f, E[|x|^2] = %.6f under p_1\n", exact_first, exact_square);

  const auto run = [&](SdeMethod method, const Diffusion<double>& diffusion, std::size_t steps) {
    flowmatch::SdeOptions<double> options;
    options.method = method;
    options.diffusion = diffusion;
    options.step_size = 1.0 / static_cast<double>(steps);
    options.brownian_substeps = reference_steps / steps;
    std::mt19937_64 generator(seed + 1);  // the same key, hence the same Brownian path
    return flowmatch::sample_sde(oracle, path, x0, options, generator).state;
  };

  for (const auto& diffusion : {Diffusion<double>::sigma(1.0), Diffusion<double>::vanishing(1.0),
                                Diffusion<double>::constant(0.5)}) {
    const Matrix<double> reference = run(SdeMethod::heun, diffusion, reference_steps);
    const Vector<double> reference_first = first_coordinate(reference);
    const Vector<double> reference_square = squared_norm(reference);
    std::printf(
        "\n%s:%.2f  reference - exact: E[x0] %+.2e, E[|x|^2] %+.2e (Monte Carlo SE "
        "%.1e, %.1e)\n",
        std::string(flowmatch::diffusion_profile_name(diffusion.profile)).c_str(), diffusion.scale,
        reference_first.mean() - exact_first, reference_square.mean() - exact_square,
        std::sqrt((reference_first.array() - reference_first.mean()).square().mean() /
                  static_cast<double>(samples)),
        std::sqrt((reference_square.array() - reference_square.mean()).square().mean() /
                  static_cast<double>(samples)));
    for (const SdeMethod method : {SdeMethod::euler_maruyama, SdeMethod::heun}) {
      std::printf("  %-15s %6s %12s %10s %12s %10s\n",
                  std::string(flowmatch::sde_method_name(method)).c_str(), "h", "err E[x0]", "(SE)",
                  "err E[|x|^2]", "(SE)");
      std::vector<double> sizes, first_errors, square_errors;
      for (const std::size_t steps : step_counts) {
        const Matrix<double> state = run(method, diffusion, steps);
        const Vector<double> first = first_coordinate(state) - reference_first;
        const Vector<double> square = squared_norm(state) - reference_square;
        const auto standard_error = [&](const Vector<double>& difference) {
          return std::sqrt((difference.array() - difference.mean()).square().mean() /
                           static_cast<double>(samples));
        };
        const double h = 1.0 / static_cast<double>(steps);
        std::printf("  %-15s %6.4f %+12.3e %10.1e %+12.3e %10.1e\n", "", h, first.mean(),
                    standard_error(first), square.mean(), standard_error(square));
        sizes.push_back(h);
        first_errors.push_back(std::abs(first.mean()));
        square_errors.push_back(std::abs(square.mean()));
      }
      std::printf("  %-15s slope of log|err| on log h: E[x0] %.2f, E[|x|^2] %.2f\n", "",
                  flowmatch_test::log_log_slope(sizes, first_errors),
                  flowmatch_test::log_log_slope(sizes, square_errors));
      std::printf("  %-15s local orders log2(err(2h)/err(h)):", "");
      for (std::size_t i = 1; i < sizes.size(); ++i) {
        std::printf(" %.2f/%.2f", std::log2(first_errors[i - 1] / first_errors[i]),
                    std::log2(square_errors[i - 1] / square_errors[i]));
      }
      std::printf("  (E[x0]/E[|x|^2])\n");
    }
  }
  return EXIT_SUCCESS;
}
