// Tests of the stochastic sampler (solver/sde.hpp) on the Gaussian-mixture oracle, whose
// marginal velocity is exact: the SDE must reproduce the oracle's marginals p_t, reduce to the
// deterministic methods at g ≡ 0, draw noise per sample, and never touch the score at σ = 0.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "flowmatch/core/errors.hpp"
#include "flowmatch/guidance/classifier_free.hpp"
#include "flowmatch/likelihood/conditioned_field.hpp"
#include "flowmatch/likelihood/standard_normal.hpp"
#include "flowmatch/oracle/gaussian_mixture_path.hpp"
#include "flowmatch/parallel/parallel_field.hpp"
#include "flowmatch/parallel/thread_pool.hpp"
#include "flowmatch/path/affine_path.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/scheduler/cosine.hpp"
#include "flowmatch/scheduler/polynomial.hpp"
#include "flowmatch/solver/diffusion.hpp"
#include "flowmatch/solver/integrate.hpp"
#include "flowmatch/solver/sde.hpp"
#include "sde_support.hpp"

namespace test_sde {

namespace {

using Catch::Matchers::Contains;
using flowmatch::ConstMatrixRef;
using flowmatch::Diffusion;
using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::MatrixRef;
using flowmatch::SdeMethod;
using flowmatch::SdeOptions;
using flowmatch::Vector;
using CondOT = flowmatch::CondOT<double>;
using Oracle = flowmatch::GaussianMixturePath<CondOT>;

Matrix<double> standard_normal(Index rows, Index cols, std::uint64_t seed) {
  std::mt19937_64 generator(seed);
  return flowmatch::StandardNormal::sample(rows, cols, generator);
}

SdeOptions<double> sde_options(SdeMethod method, Diffusion<double> diffusion, double step) {
  SdeOptions<double> options;
  options.method = method;
  options.diffusion = diffusion;
  options.step_size = step;
  return options;
}

// The oracle evaluated one column at a time: its result for a sample cannot depend on the
// other columns of the batch, so any such dependence in a solve comes from the solver.
struct ColumnwiseField {
  const Oracle* oracle;
  void operator()(double t, const ConstMatrixRef<double>& x, MatrixRef<double> out) const {
    for (Index col = 0; col < x.cols(); ++col) (*oracle)(t, x.col(col), out.col(col));
  }
};

// ---- Moments and a two-sample test ------------------------------------------------------------

struct Moments {
  Vector<double> mean;
  Matrix<double> covariance;
};

// The exact mean and covariance of a mixture: Σ w_k μ_k and Σ w_k (Σ_k + μ_k μ_kᵀ) − μμᵀ.
Moments mixture_moments(const flowmatch::GaussianMixture<double>& mixture) {
  Moments moments{mixture.means() * mixture.weights(),
                  Matrix<double>::Zero(mixture.dim(), mixture.dim())};
  for (Index k = 0; k < mixture.components(); ++k) {
    moments.covariance +=
        mixture.weights()(k) *
        (mixture.covariance(k) + mixture.means().col(k) * mixture.means().col(k).transpose());
  }
  moments.covariance -= moments.mean * moments.mean.transpose();
  return moments;
}

// The two-sample Kolmogorov–Smirnov statistic sup |F_a − F_b|.
double ks_statistic(std::vector<double> a, std::vector<double> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  std::size_t i = 0, j = 0;
  double largest = 0;
  while (i < a.size() && j < b.size()) {
    const double x = std::min(a[i], b[j]);
    while (i < a.size() && a[i] <= x) ++i;
    while (j < b.size() && b[j] <= x) ++j;
    largest = std::max(largest, std::abs(static_cast<double>(i) / static_cast<double>(a.size()) -
                                         static_cast<double>(j) / static_cast<double>(b.size())));
  }
  return largest;
}

std::vector<double> projected(const Matrix<double>& points, const Vector<double>& direction) {
  const Vector<double> values = points.transpose() * direction;
  return {values.data(), values.data() + values.size()};
}

// The ways in which @p samples (d×N) are inconsistent with the mixture @p exact, each as a
// line of text (none for a consistent sample). The checks:
//  - each coordinate of the mean within 4 standard errors sqrt(Var/N) of the exact mean;
//  - each covariance entry within 4 standard errors sqrt((E[(x_i−μ_i)²(x_j−μ_j)²] − C_ij²)/N)
//    (the fourth moments from an exact sample of the same size);
//  - along four directions (both axes and both diagonals), the two-sample KS statistic against
//    an exact sample of the same size N below its 0.1% critical value 1.949·sqrt(2/N)
//    (Smirnov's asymptotic law; c(α) = sqrt(−ln(α/2)/2)).
// A false alarm for a correct sampler has probability about 6e-5 per moment check and 1e-3 per
// KS check; the seeds are fixed, so each run is deterministic.
std::vector<std::string> mixture_mismatches(const Matrix<double>& samples,
                                            const flowmatch::GaussianMixture<double>& exact,
                                            std::uint64_t seed) {
  const Index n = samples.cols();
  const auto count = static_cast<double>(n);
  const Moments truth = mixture_moments(exact);
  std::mt19937_64 generator(seed);
  const Matrix<double> reference = exact.sample(n, generator);
  std::vector<std::string> mismatches;
  const auto within = [&](const std::string& what, double value, double expected, double bound) {
    if (!(std::abs(value - expected) <= bound)) {
      mismatches.push_back(what + ": " + std::to_string(value) + ", expected " +
                           std::to_string(expected) + " within " + std::to_string(bound));
    }
  };

  const Vector<double> mean = samples.rowwise().mean();
  for (Index i = 0; i < samples.rows(); ++i) {
    within("mean " + std::to_string(i), mean(i), truth.mean(i),
           4 * std::sqrt(truth.covariance(i, i) / count));
  }
  const Matrix<double> centred = samples.colwise() - mean;
  const Matrix<double> covariance = centred * centred.transpose() / (count - 1);
  const Matrix<double> reference_centred = reference.colwise() - truth.mean;
  for (Index i = 0; i < samples.rows(); ++i) {
    for (Index j = 0; j <= i; ++j) {
      const double fourth =
          (reference_centred.row(i).array().square() * reference_centred.row(j).array().square())
              .mean();
      within("covariance (" + std::to_string(i) + ", " + std::to_string(j) + ")", covariance(i, j),
             truth.covariance(i, j),
             4 * std::sqrt((fourth - truth.covariance(i, j) * truth.covariance(i, j)) / count));
    }
  }
  const double critical = 1.949 * std::sqrt(2.0 / count);
  const double diagonal = std::sqrt(0.5);
  const std::array<std::array<double, 2>, 4> directions{
      {{1.0, 0.0}, {0.0, 1.0}, {diagonal, diagonal}, {diagonal, -diagonal}}};
  for (const auto& entries : directions) {
    const Vector<double> direction = Eigen::Vector2d(entries[0], entries[1]);
    within("KS statistic along (" + std::to_string(entries[0]) + ", " + std::to_string(entries[1]) +
               ")",
           ks_statistic(projected(samples, direction), projected(reference, direction)), 0.0,
           critical);
  }
  return mismatches;
}

// Checks that @p samples are consistent with @p exact (mixture_mismatches finds nothing).
void check_matches_mixture(const Matrix<double>& samples,
                           const flowmatch::GaussianMixture<double>& exact, std::uint64_t seed) {
  const std::vector<std::string> mismatches = mixture_mismatches(samples, exact, seed);
  for (const std::string& mismatch : mismatches) UNSCOPED_INFO(mismatch);
  CHECK(mismatches.empty());
}

// Runs the SDE of the oracle over {0, 0.3, 0.6, 1} and checks the samples at 0.3, 0.6 and 1
// against the exact marginals. The CHECKs inside record any failure.
void check_marginals(const Oracle& oracle, SdeMethod method, Diffusion<double> diffusion,
                     double step, Index samples, std::uint64_t seed) {
  const std::vector<double> grid{0.0, 0.3, 0.6, 1.0};
  SdeOptions<double> options = sde_options(method, diffusion, step);
  options.return_trajectory = true;
  std::mt19937_64 generator(seed);
  const auto result = flowmatch::integrate_sde(oracle, flowmatch::AffinePath<CondOT>(),
                                               standard_normal(2, samples, seed + 1),
                                               std::span<const double>(grid), options, generator);
  for (std::size_t k = 1; k < grid.size(); ++k) {
    INFO("t = " << grid[k]);
    check_matches_mixture(result.trajectory[k], oracle.marginal(grid[k]), seed + 2 + k);
  }
}

}  // namespace

TEST_CASE("sde: with g = 0 Euler-Maruyama is integrate's euler and Heun is heun2, bit for bit",
          "[sde]") {
  const Oracle oracle(flowmatch_test::sde_data_mixture());
  const Matrix<double> x0 = standard_normal(2, 300, 1);
  const std::vector<double> grid{0.0, 0.3, 0.6, 1.0};
  const std::span<const double> times(grid);
  for (const double step : {0.05, 0.013}) {
    flowmatch::SolverOptions<double> ode;
    ode.step_size = step;
    ode.return_trajectory = true;
    for (const auto& [sde_method, ode_method] :
         {std::pair{SdeMethod::euler_maruyama, flowmatch::Method::euler},
          std::pair{SdeMethod::heun, flowmatch::Method::heun2}}) {
      ode.method = ode_method;
      const auto deterministic = flowmatch::integrate(oracle, x0, times, ode);
      for (const auto& diffusion :
           {Diffusion<double>{}, Diffusion<double>::constant(0.0), Diffusion<double>::sigma(0.0),
            Diffusion<double>::vanishing(0.0)}) {
        INFO(flowmatch::sde_method_name(sde_method)
             << ", step " << step << ", profile "
             << flowmatch::diffusion_profile_name(diffusion.profile));
        SdeOptions<double> options = sde_options(sde_method, diffusion, step);
        options.return_trajectory = true;
        std::mt19937_64 generator(7);
        const auto stochastic = flowmatch::integrate_sde(oracle, flowmatch::AffinePath<CondOT>(),
                                                         x0, times, options, generator);
        CHECK(stochastic.state == deterministic.state);
        for (std::size_t k = 0; k < grid.size(); ++k) {
          CHECK(stochastic.trajectory[k] == deterministic.trajectory[k]);
        }
        CHECK(stochastic.stats.nfe == deterministic.stats.nfe);
        CHECK(stochastic.stats.accepted == deterministic.stats.accepted);
      }
    }
  }
}

TEST_CASE("sde: samples at t = 0.3, 0.6 and 1 follow the exact marginals p_t", "[sde]") {
  const Oracle oracle(flowmatch_test::sde_data_mixture());
  const Index samples = 20000;
  const double step = 1.0 / 200;
  std::uint64_t seed = 100;
  for (const SdeMethod method : {SdeMethod::euler_maruyama, SdeMethod::heun}) {
    for (const auto& diffusion : {Diffusion<double>::sigma(1.5), Diffusion<double>::vanishing(2.0),
                                  Diffusion<double>::constant(0.5)}) {
      INFO(flowmatch::sde_method_name(method)
           << ", profile " << flowmatch::diffusion_profile_name(diffusion.profile)
           << ", G = " << diffusion.scale);
      check_marginals(oracle, method, diffusion, step, samples, seed);
      seed += 10;
    }
  }
}

TEST_CASE("sde: the marginal check rejects samples from a mismatched score", "[sde]") {
  // The CondOT oracle driven with the Cosine path's score conversion: a wrong score term, so
  // the marginals drift away from p_t; the checks of the marginal test must notice.
  const Oracle oracle(flowmatch_test::sde_data_mixture());
  const Matrix<double> x0 = standard_normal(2, 20000, 3);
  std::mt19937_64 generator(4);
  const auto result = flowmatch::sample_sde(
      oracle, flowmatch::Cosine<double>(), x0,
      sde_options(SdeMethod::heun, Diffusion<double>::sigma(1.5), 1.0 / 200), generator);
  const std::vector<std::string> mismatches =
      mixture_mismatches(result.state, oracle.marginal(1.0), 5);
  for (const std::string& mismatch : mismatches) UNSCOPED_INFO(mismatch);
  CHECK(mismatches.size() >= 3);  // several checks, not one borderline
}

TEST_CASE("sde: the noise of a sample depends only on the key and the sample's index", "[sde]") {
  const Oracle oracle(flowmatch_test::sde_data_mixture());
  const ColumnwiseField columnwise{&oracle};
  const Matrix<double> x0 = standard_normal(2, 97, 5);
  const std::vector<double> grid{0.0, 0.5, 1.0};
  const std::span<const double> times(grid);
  const flowmatch::AffinePath<CondOT> path;
  for (const SdeMethod method : {SdeMethod::euler_maruyama, SdeMethod::heun}) {
    INFO(flowmatch::sde_method_name(method));
    SdeOptions<double> options = sde_options(method, Diffusion<double>::constant(0.8), 0.02);
    options.return_trajectory = true;
    std::mt19937_64 generator(11);
    const auto whole = flowmatch::integrate_sde(columnwise, path, x0, times, options, generator);

    SECTION("any number of threads and any chunk size") {
      for (const int threads : {1, 2, 3}) {
        flowmatch::ThreadPool pool(threads);
        for (const Index chunk : {1, 7, 64, 500}) {
          INFO(threads << " threads, chunks of " << chunk);
          const flowmatch::ParallelField<ColumnwiseField> parallel(columnwise, pool, chunk);
          std::mt19937_64 same_seed(11);
          const auto result =
              flowmatch::integrate_sde(parallel, path, x0, times, options, same_seed);
          CHECK(result.state == whole.state);
          CHECK(result.trajectory[1] == whole.trajectory[1]);
        }
      }
    }
    SECTION("any sub-batch, given the index of its first sample") {
      for (const auto& [first, count] : {std::pair<Index, Index>{0, 1}, {20, 15}, {96, 1}}) {
        INFO("columns " << first << " to " << first + count - 1);
        SdeOptions<double> shard = options;
        shard.first_sample_index = static_cast<std::uint64_t>(first);
        std::mt19937_64 same_seed(11);
        const auto result = flowmatch::integrate_sde(columnwise, path, x0.middleCols(first, count),
                                                     times, shard, same_seed);
        CHECK(result.state == whole.state.middleCols(first, count));
      }
    }
    SECTION("another key gives other noise") {
      std::mt19937_64 other_seed(12);
      const auto result =
          flowmatch::integrate_sde(columnwise, path, x0, times, options, other_seed);
      CHECK((result.state - whole.state).cwiseAbs().minCoeff() > 0);
    }
  }
}

TEST_CASE("sde: the oracle itself under a ParallelField gives the same samples for any threads",
          "[sde]") {
  const Oracle oracle(flowmatch_test::sde_data_mixture());
  const Matrix<double> x0 = standard_normal(2, 1000, 6);
  const flowmatch::AffinePath<CondOT> path;
  const SdeOptions<double> options =
      sde_options(SdeMethod::heun, Diffusion<double>::vanishing(1.0), 0.01);
  Matrix<double> single_thread;
  for (const int threads : {1, 2, 4}) {
    flowmatch::ThreadPool pool(threads);
    const flowmatch::ParallelField<Oracle> parallel(oracle, pool, 128);
    std::mt19937_64 generator(21);
    const auto result = flowmatch::sample_sde(parallel, path, x0, options, generator);
    if (threads == 1) {
      single_thread = result.state;
    } else {
      INFO(threads << " threads");
      CHECK(result.state == single_thread);
    }
  }
}

TEST_CASE("sde: Brownian substeps make coarse and fine runs share their Brownian path", "[sde]") {
  // Strong convergence on a shared path: a coarse run with m substeps lies much closer to the
  // fine run than a coarse run driven by an unrelated path does.
  const Oracle oracle(flowmatch_test::sde_data_mixture());
  const Matrix<double> x0 = standard_normal(2, 2000, 8);
  const flowmatch::AffinePath<CondOT> path;
  const Diffusion<double> diffusion = Diffusion<double>::sigma(1.0);
  std::mt19937_64 generator(31);
  const auto fine = flowmatch::sample_sde(
      oracle, path, x0, sde_options(SdeMethod::heun, diffusion, 1.0 / 256), generator);
  SdeOptions<double> coarse = sde_options(SdeMethod::heun, diffusion, 1.0 / 32);
  coarse.brownian_substeps = 8;
  generator.seed(31);
  const auto coupled = flowmatch::sample_sde(oracle, path, x0, coarse, generator);
  generator.seed(32);
  const auto uncoupled = flowmatch::sample_sde(oracle, path, x0, coarse, generator);
  const double coupled_distance = (coupled.state - fine.state).norm();
  const double uncoupled_distance = (uncoupled.state - fine.state).norm();
  INFO("coupled " << coupled_distance << ", uncoupled " << uncoupled_distance);
  CHECK(coupled_distance < 0.1 * uncoupled_distance);
}

TEST_CASE("sde: Euler-Maruyama converges weakly at order 1, Heun much faster", "[sde]") {
  // Weak errors of E[|X_1|²] against a Heun run with 256 steps on the same Brownian path
  // (brownian_substeps), so that the error of the difference of means is the small strong error
  // over sqrt(N). tests/bench/sde_weak_order.cpp measures both orders with more samples.
  const Oracle oracle(flowmatch_test::sde_data_mixture());
  const flowmatch::AffinePath<CondOT> path;
  const Matrix<double> x0 = standard_normal(2, 4000, 15);
  const std::size_t reference_steps = 256;
  const Diffusion<double> diffusion = Diffusion<double>::sigma(1.0);
  const auto squared_norms = [&](SdeMethod method, std::size_t steps) {
    SdeOptions<double> options = sde_options(method, diffusion, 1.0 / static_cast<double>(steps));
    options.brownian_substeps = reference_steps / steps;
    std::mt19937_64 generator(91);
    return Vector<double>(
        flowmatch::sample_sde(oracle, path, x0, options, generator).state.colwise().squaredNorm());
  };
  const Vector<double> reference = squared_norms(SdeMethod::heun, reference_steps);
  // The mean difference from the reference and its standard error.
  const auto weak_error = [&](SdeMethod method, std::size_t steps) {
    const Vector<double> difference = squared_norms(method, steps) - reference;
    const double mean = difference.mean();
    const double standard_error =
        std::sqrt((difference.array() - mean).square().sum() / (difference.size() - 1.0) /
                  static_cast<double>(difference.size()));
    return std::pair{mean, standard_error};
  };
  std::vector<double> sizes, errors;
  for (const std::size_t steps : {4, 8, 16, 32, 64}) {
    const auto [error, standard_error] = weak_error(SdeMethod::euler_maruyama, steps);
    INFO(steps << " Euler-Maruyama steps: error " << error << " (standard error " << standard_error
               << ")");
    // The error measured is the scheme's bias, not noise.
    CHECK(std::abs(error) > 5 * standard_error);
    sizes.push_back(1.0 / static_cast<double>(steps));
    errors.push_back(std::abs(error));
    if (steps == 8 || steps == 16) {
      // A first-order scheme would have an error of Euler-Maruyama's size (ratio near 1).
      const auto [heun_error, heun_standard_error] = weak_error(SdeMethod::heun, steps);
      INFO("Heun: error " << heun_error << " (standard error " << heun_standard_error << ")");
      CHECK(std::abs(heun_error) < 0.05 * std::abs(error));
    }
  }
  const double slope = flowmatch_test::log_log_slope(sizes, errors);
  INFO("slope of log|error| on log h: " << slope);
  CHECK(std::abs(slope - 1.0) < 0.2);
}

TEST_CASE("sde: classifier-free guidance drives the sampler like any field", "[sde][guidance]") {
  // u_t(x | c): class 0 follows the path to the first component, class 1 to the second; the
  // null condition to the whole mixture.
  const flowmatch::GaussianMixture<double> mixture = flowmatch_test::sde_data_mixture();
  const auto component = [&](Index k) {
    return Oracle(flowmatch::GaussianMixture<double>::with_covariances(
        Vector<double>::Ones(1), mixture.means().col(k), {mixture.covariance(k)}));
  };
  const Oracle unconditional(mixture);
  const std::array<Oracle, 2> classes{component(0), component(1)};
  const auto field_of = [&](const ConstMatrixRef<double>& c, Index col) -> const Oracle& {
    return c(0, col) == 1.0 ? classes[0] : c(1, col) == 1.0 ? classes[1] : unconditional;
  };
  // Each run of consecutive columns with the same condition is evaluated as one batch.
  const auto conditional = [&](double t, const ConstMatrixRef<double>& x,
                               const ConstMatrixRef<double>& c, MatrixRef<double> out) {
    for (Index first = 0; first < x.cols();) {
      const Oracle& field = field_of(c, first);
      Index end = first + 1;
      while (end < x.cols() && &field_of(c, end) == &field) ++end;
      field(t, x.middleCols(first, end - first), out.middleCols(first, end - first));
      first = end;
    }
  };
  const Index samples = 20000;
  Matrix<double> labels = Matrix<double>::Zero(2, samples);
  labels.row(1).setOnes();  // every sample in class 1
  const Matrix<double> x0 = standard_normal(2, samples, 9);
  const flowmatch::AffinePath<CondOT> path;
  const SdeOptions<double> options =
      sde_options(SdeMethod::heun, Diffusion<double>::sigma(1.0), 1.0 / 100);

  const auto guided = flowmatch::classifier_free_guidance(conditional, labels, 1.0);
  std::mt19937_64 generator(41);
  const auto guided_result = flowmatch::sample_sde(guided, path, x0, options, generator);
  const flowmatch::ConditionedField<double, decltype(conditional)> bound(conditional, labels);
  generator.seed(41);
  const auto conditional_result = flowmatch::sample_sde(bound, path, x0, options, generator);
  // Weight 1 is the conditional field: the same samples, bit for bit...
  CHECK(guided_result.state == conditional_result.state);
  // ...and they follow class 1's distribution.
  check_matches_mixture(guided_result.state, classes[1].data(), 42);

  // Weight 2 extrapolates, u = 2·u_cond − u_null: finite samples whose mean lies past class 1's
  // mean, on the side away from the mixture's mean, by more than 10 standard errors.
  const auto extrapolated = flowmatch::classifier_free_guidance(conditional, labels, 2.0);
  generator.seed(41);
  const auto extrapolated_result =
      flowmatch::sample_sde(extrapolated, path, x0, options, generator);
  REQUIRE(extrapolated_result.state.allFinite());
  const Vector<double> class_mean = classes[1].data().means().col(0);
  const Vector<double> away = class_mean - mixture_moments(mixture).mean;
  const double shift =
      (extrapolated_result.state.rowwise().mean() - class_mean).dot(away.normalized());
  const double standard_error =
      std::sqrt(away.normalized().dot(mixture.covariance(1) * away.normalized()) / samples);
  INFO("shift " << shift << ", standard error " << standard_error);
  CHECK(shift > 10 * standard_error);
}

TEST_CASE("sde: the step that ends at sigma = 0 is deterministic, and nothing is NaN", "[sde]") {
  const Oracle oracle(flowmatch_test::sde_data_mixture());
  const flowmatch::AffinePath<CondOT> path;
  const Matrix<double> x0 = standard_normal(2, 200, 10);
  const std::vector<double> grid{0.0, 0.5, 1.0};
  for (const SdeMethod method : {SdeMethod::euler_maruyama, SdeMethod::heun}) {
    INFO(flowmatch::sde_method_name(method));
    // One step per interval, G large: a noisy last step would be visible at once.
    SdeOptions<double> options = sde_options(method, Diffusion<double>::constant(3.0), 0.5);
    options.return_trajectory = true;
    std::mt19937_64 generator(51);
    const auto result = flowmatch::integrate_sde(oracle, path, x0, std::span<const double>(grid),
                                                 options, generator);
    REQUIRE(result.state.allFinite());
    // The interval [0, 0.5] is noisy (σ > 0 at both ends)...
    flowmatch::SolverOptions<double> ode;
    ode.method = method == SdeMethod::heun ? flowmatch::Method::heun2 : flowmatch::Method::euler;
    ode.step_size = 0.5;
    const std::vector<double> first_half{0.0, 0.5};
    CHECK(result.trajectory[1] !=
          flowmatch::integrate(oracle, x0, std::span<const double>(first_half), ode).state);
    // ...and the last step is the deterministic step from the state at 0.5.
    const std::vector<double> second_half{0.5, 1.0};
    CHECK(result.state == flowmatch::integrate(oracle, result.trajectory[1],
                                               std::span<const double>(second_half), ode)
                              .state);
  }
}

TEST_CASE("sde: the score is evaluated only where g > 0", "[sde]") {
  // Polynomial(2) has α = α̇ = 0 at t = 0, where the score conversion is undefined: a constant g
  // needs it there and throws; the vanishing profile (g(0) = 0) does not.
  using Polynomial = flowmatch::Polynomial<double>;
  const flowmatch::GaussianMixturePath<Polynomial> oracle(flowmatch_test::sde_data_mixture(),
                                                          Polynomial(2.0));
  const flowmatch::AffinePath<Polynomial> path(Polynomial(2.0));
  const Matrix<double> x0 = standard_normal(2, 100, 12);
  std::mt19937_64 generator(61);
  CHECK_THROWS_AS(
      flowmatch::sample_sde(oracle, path, x0,
                            sde_options(SdeMethod::heun, Diffusion<double>::constant(1.0), 0.01),
                            generator),
      std::domain_error);
  const auto result = flowmatch::sample_sde(
      oracle, path, x0, sde_options(SdeMethod::heun, Diffusion<double>::vanishing(1.0), 0.01),
      generator);
  CHECK(result.state.allFinite());
}

TEST_CASE("sde: a scheduler stands for its path", "[sde]") {
  const Oracle oracle(flowmatch_test::sde_data_mixture());
  const Matrix<double> x0 = standard_normal(2, 50, 16);
  const SdeOptions<double> options =
      sde_options(SdeMethod::heun, Diffusion<double>::vanishing(1.0), 0.05);
  std::mt19937_64 generator(95);
  const auto from_scheduler = flowmatch::sample_sde(oracle, CondOT(), x0, options, generator);
  generator.seed(95);
  const auto from_path =
      flowmatch::sample_sde(oracle, flowmatch::AffinePath<CondOT>(), x0, options, generator);
  CHECK(from_scheduler.state == from_path.state);
}

TEST_CASE("sde: the diffusion profiles", "[sde]") {
  const CondOT condot;
  const flowmatch::Cosine<double> cosine;
  for (const double t : {0.0, 0.25, 0.7, 1.0}) {
    INFO("t = " << t);
    CHECK(Diffusion<double>::constant(0.7)(condot, t) == 0.7);
    CHECK_THAT(Diffusion<double>::sigma(0.7)(cosine, t),
               Catch::Matchers::WithinAbs(0.7 * std::cos(std::numbers::pi * t / 2), 1e-15));
    CHECK_THAT(Diffusion<double>::vanishing(0.7)(condot, t),
               Catch::Matchers::WithinAbs(0.7 * std::sqrt(t * (1 - t)), 1e-15));
  }
  CHECK(Diffusion<double>::vanishing(0.7)(cosine, 0.0) == 0.0);
  CHECK(Diffusion<double>::vanishing(0.7)(cosine, 1.0) == 0.0);
  CHECK(flowmatch::diffusion_profile_from_name("sigma") == flowmatch::DiffusionProfile::sigma);
  CHECK(flowmatch::sde_method_from_name("euler-maruyama") == SdeMethod::euler_maruyama);
  CHECK(flowmatch::sde_method_name(SdeMethod::heun) == "heun");
  CHECK_THROWS_WITH(flowmatch::sde_method_from_name("milstein"),
                    Contains("milstein") && Contains("euler-maruyama, heun"));
  CHECK_THROWS_WITH(flowmatch::diffusion_profile_from_name("linear"),
                    Contains("constant, sigma, vanishing"));
}

TEST_CASE("sde: invalid inputs throw typed exceptions that name the problem", "[sde]") {
  const Oracle oracle(flowmatch_test::sde_data_mixture());
  const flowmatch::AffinePath<CondOT> path;
  const Matrix<double> x0 = standard_normal(2, 10, 13);
  std::mt19937_64 generator(71);
  const auto good = sde_options(SdeMethod::euler_maruyama, Diffusion<double>::sigma(1.0), 0.1);
  const auto run = [&](const SdeOptions<double>& options) {
    return flowmatch::sample_sde(oracle, path, x0, options, generator);
  };

  SdeOptions<double> options = good;
  options.diffusion.scale = -1.0;
  CHECK_THROWS_MATCHES(
      run(options), std::invalid_argument,
      Catch::Matchers::Message("SdeOptions: diffusion.scale (G) is -1, expected finite and >= 0"));
  options.diffusion.scale = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(run(options), std::invalid_argument);
  options = good;
  options.step_size.reset();
  CHECK_THROWS_WITH(run(options),
                    Contains("SdeOptions: step_size is not set, expected a step size > 0"));
  for (const double step : {0.0, -0.1, std::numeric_limits<double>::infinity()}) {
    options.step_size = step;
    CHECK_THROWS_WITH(run(options),
                      Contains("SdeOptions: step_size is") && Contains("expected finite and > 0"));
  }
  options = good;
  options.brownian_substeps = 0;
  CHECK_THROWS_WITH(run(options), Contains("brownian_substeps is 0"));
  options = good;
  options.max_steps = 5;
  CHECK_THROWS_AS(run(options), flowmatch::numerical_error);
  CHECK_THROWS_WITH(run(options), Contains("10 SDE steps") && Contains("max_steps = 5"));
  options = good;
  options.method = static_cast<SdeMethod>(7);
  CHECK_THROWS_WITH(run(options), Contains("SdeMethod"));

  Matrix<double> bad_x0 = x0;
  bad_x0(1, 4) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(flowmatch::sample_sde(oracle, path, bad_x0, good, generator),
                    Contains("initial state") && Contains("column 4"));
  CHECK_THROWS_AS(flowmatch::sample_sde(oracle, path, Matrix<double>(2, 0), good, generator),
                  std::invalid_argument);
  const std::vector<double> backwards{1.0, 0.0};
  CHECK_THROWS_WITH(
      flowmatch::integrate_sde(oracle, path, x0, std::span<const double>(backwards), good,
                               generator),
      Contains("integrate_sde: times run from 1 down to 0, expected increasing times"));
  const std::vector<double> outside{0.0, 1.5};
  CHECK_THROWS_AS(
      flowmatch::integrate_sde(oracle, path, x0, std::span<const double>(outside), good, generator),
      std::domain_error);

  // A field that turns non-finite at sample 3 after t = 0.5: numerical_error with time and sample.
  const auto failing = [&](double t, const ConstMatrixRef<double>& x, MatrixRef<double> out) {
    oracle(t, x, out);
    if (t > 0.5) out(0, 3) = std::numeric_limits<double>::quiet_NaN();
  };
  try {
    flowmatch::sample_sde(failing, path, x0, good, generator);
    FAIL("expected numerical_error");
  } catch (const flowmatch::numerical_error& error) {
    CHECK(error.sample() == 3);
    CHECK(error.time() > 0.5);
    CHECK_THAT(error.what(), Contains("velocity"));
  }
}

namespace {

// The sampler needs the path the field was trained on: there is no overload without one, so a
// call that omits it does not compile.
template <class Field>
concept SamplesWithoutPath = requires(const Field& field, const Matrix<double>& x0,
                                      const SdeOptions<double>& options,
                                      std::mt19937_64& generator) {
  flowmatch::sample_sde(field, x0, options, generator);
};
static_assert(!SamplesWithoutPath<Oracle>);

}  // namespace

TEST_CASE("sde: float", "[sde]") {
  using CondOTf = flowmatch::CondOT<float>;
  const flowmatch::AffinePath<CondOTf> path;
  // The marginal velocity of the path to the point mass x₁ = 1: u = (1 − x)/(1 − t).
  const auto field = [](float t, const auto& x) {
    return ((1.0f - x.array()) / std::max(1.0f - t, 1e-3f)).matrix().eval();
  };
  SdeOptions<float> options;
  options.method = SdeMethod::heun;
  options.diffusion = Diffusion<float>::sigma(1.0f);
  options.step_size = 0.01f;
  std::mt19937_64 generator(81);
  const Matrix<float> x0 = standard_normal(3, 50, 14).cast<float>();
  const auto result = flowmatch::sample_sde(field, path, x0, options, generator);
  CHECK(result.state.allFinite());
  CHECK(result.stats.nfe == 200);
  CHECK(result.stats.accepted == 100);
}

}  // namespace test_sde
