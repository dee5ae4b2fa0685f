// The accuracy of the density tasks against their tolerance, on the Gaussian-mixture oracle
// (three components in the plane with full covariances) under CondOT: for rtol = atol from
// 1e-5 to 1e-9, dopri5, the largest error of log_likelihood against the exact log p_1 and of
// exact_score against the exact score at samples of p_1, with the evaluations each took.
// It grounds the density defaults, SolverOptions::for_density().
//
// Usage: density_tolerance [samples (default 500)] [seed (default 3)]
#include <cstdio>
#include <cstdlib>
#include <random>

#include "../sde_support.hpp"
#include "flowmatch/likelihood/log_likelihood.hpp"
#include "flowmatch/oracle/gaussian_mixture_path.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/score/exact_score.hpp"

int main(int argc, char** argv) {
  const long samples = argc > 1 ? std::atol(argv[1]) : 500;
  const unsigned long seed = argc > 2 ? std::strtoul(argv[2], nullptr, 10) : 3;
  const flowmatch::GaussianMixture<double> data = flowmatch_test::sde_data_mixture();
  const flowmatch::GaussianMixturePath<flowmatch::CondOT<double>> oracle(data);
  std::mt19937_64 generator(seed);
  const flowmatch::Matrix<double> x = data.sample(samples, generator);
  const flowmatch::Vector<double> log_density = data.log_prob(x);
  const flowmatch::Matrix<double> score = data.score(x);
  std::printf("%8s  %14s  %6s  %14s  %6s\n", "tol", "max |log p err|", "nfe", "max |score err|",
              "nfe");
  for (const double tolerance : {1e-5, 1e-6, 1e-7, 1e-8, 1e-9}) {
    flowmatch::SolverOptions<double> options;
    options.rtol = options.atol = tolerance;
    const auto likelihood = flowmatch::log_likelihood(oracle, x, options);
    const auto exact = flowmatch::exact_score(oracle, 1.0, x, options);
    std::printf("%8.0e  %14.2e  %6zu  %14.2e  %6zu\n", tolerance,
                (likelihood.log_prob - log_density).cwiseAbs().maxCoeff(), likelihood.stats.nfe,
                (exact.score - score).cwiseAbs().maxCoeff(),
                exact.stats.nfe + exact.encode_stats.nfe);
  }
}
