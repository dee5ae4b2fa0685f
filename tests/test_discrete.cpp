// Tests of discrete flow matching against mathematics independent of the implementation: the
// exact posterior of an enumerable joint distribution (27 sequences), chi-square tests of the
// sampler's output against that joint, binomial checks of the mixture path, a naive O(K) jump
// draw, the rate-matching KL written out over all rates, and the true −log p under the ELBO.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numbers>
#include <random>
#include <span>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "discrete_support.hpp"
#include "flowmatch/core/errors.hpp"
#include "flowmatch/discrete/conditional_denoiser.hpp"
#include "flowmatch/discrete/denoiser.hpp"
#include "flowmatch/discrete/elbo.hpp"
#include "flowmatch/discrete/guidance.hpp"
#include "flowmatch/discrete/loss.hpp"
#include "flowmatch/discrete/mixture_path.hpp"
#include "flowmatch/discrete/rates.hpp"
#include "flowmatch/discrete/sampler.hpp"
#include "flowmatch/discrete/source.hpp"
#include "flowmatch/discrete/tokens.hpp"
#include "flowmatch/oracle/discrete_joint.hpp"
#include "flowmatch/oracle/labelled_discrete_joint.hpp"
#include "flowmatch/parallel/thread_pool.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/scheduler/convex_cosine.hpp"
#include "flowmatch/scheduler/polynomial.hpp"

namespace test_discrete {

namespace {

using Catch::Matchers::Contains;
using Catch::Matchers::WithinAbs;
using Catch::Matchers::WithinRel;
using flowmatch::CondOT;
using flowmatch::ConvexCosine;
using flowmatch::DiscreteJoint;
using flowmatch::DiscreteJointPosterior;
using flowmatch::DiscreteSamplerOptions;
using flowmatch::DiscreteSource;
using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::MixturePath;
using flowmatch::Polynomial;
using flowmatch::Reduction;
using flowmatch::Token;
using flowmatch::TokenMatrix;
using flowmatch::Vector;
using flowmatch_test::random_tokens;
using flowmatch_test::state_counts;
using flowmatch_test::total_variation;

constexpr Index vocabulary = 3;
constexpr Index length = 3;

// ---------------------------------------------------------------------------------------------
// Fixtures and statistics.

// A correlated joint over {0, 1, 2}^3: weight 1 + 3·[x₀ = x₁] + 2·[x₁ = x₂] + [x₀ = 2],
// normalised, so neighbouring positions agree far more often than under independence.
DiscreteJoint correlated_joint() {
  Vector<double> weights(27);
  for (Index index = 0; index < 27; ++index) {
    const Index first = index % 3;
    const Index second = (index / 3) % 3;
    const Index third = index / 9;
    weights(index) = 1.0 + 3.0 * (first == second) + 2.0 * (second == third) + (first == 2);
  }
  return DiscreteJoint(weights / weights.sum(), vocabulary, length);
}

// Pearson's statistic Σ (O − E)²/E of @p counts against the probabilities @p expected.
double chi_square(const Vector<double>& counts, const Vector<double>& expected) {
  const double total = counts.sum();
  double statistic = 0;
  for (Index category = 0; category < counts.size(); ++category) {
    const double mean = total * expected(category);
    statistic += (counts(category) - mean) * (counts(category) - mean) / mean;
  }
  return statistic;
}

// The 0.999 quantile of χ² with @p dof degrees of freedom (Wilson–Hilferty).
double chi_square_critical(double dof) {
  const double spread = 2.0 / (9.0 * dof);
  return dof * std::pow(1.0 - spread + 3.090232 * std::sqrt(spread), 3.0);
}

// All 27 sequences, one per column, in index order.
TokenMatrix every_sequence(const DiscreteJoint& joint) {
  TokenMatrix tokens(length, joint.sequences());
  for (Index index = 0; index < joint.sequences(); ++index) {
    for (Index position = 0; position < length; ++position) {
      tokens(position, index) = joint.token_of(index, position);
    }
  }
  return tokens;
}

// Random per-position distributions (K·L)×N, with entries from a uniform draw, normalised.
template <class Scalar>
Matrix<Scalar> random_posterior(Index states, Index positions, Index sequences,
                                std::mt19937_64& generator) {
  std::uniform_real_distribution<double> uniform(0.01, 1.0);
  Matrix<Scalar> posterior(states * positions, sequences);
  for (Index sequence = 0; sequence < sequences; ++sequence) {
    for (Index position = 0; position < positions; ++position) {
      Vector<double> block(states);
      for (Index token = 0; token < states; ++token) block(token) = uniform(generator);
      posterior.col(sequence).segment(position * states, states) =
          (block / block.sum()).template cast<Scalar>();
    }
  }
  return posterior;
}

template <class Scalar>
DiscreteSamplerOptions<Scalar> with_step(Scalar step) {
  DiscreteSamplerOptions<Scalar> options;
  options.step_size = step;
  return options;
}

// ---------------------------------------------------------------------------------------------
// The convex cosine scheduler.

TEMPLATE_TEST_CASE("ConvexCosine is a convex scheduler with consistent derivatives and inverses",
                   "[discrete][scheduler]", double, float) {
  using Scalar = TestType;
  const ConvexCosine<Scalar> scheduler;
  const double tolerance = std::is_same_v<Scalar, float> ? 2e-5 : 1e-12;
  CHECK(scheduler.alpha(Scalar(0)) == Scalar(0));
  CHECK(scheduler.alpha(Scalar(1)) == Scalar(1));
  CHECK(scheduler.sigma(Scalar(1)) == Scalar(0));
  for (const double time : {0.1, 0.35, 0.5, 0.8, 0.95}) {
    const Scalar t = static_cast<Scalar>(time);
    CHECK_THAT(scheduler.alpha(t) + scheduler.sigma(t), WithinAbs(1.0, tolerance));
    const double step = 1e-6;
    const ConvexCosine<double> reference;
    const double difference =
        (reference.alpha(time + step) - reference.alpha(time - step)) / (2 * step);
    CHECK_THAT(scheduler.d_alpha(t), WithinAbs(difference, 1e3 * tolerance));
    CHECK_THAT(scheduler.d_sigma(t), WithinAbs(-difference, 1e3 * tolerance));
    CHECK_THAT(scheduler.kappa_inverse(scheduler.alpha(t)), WithinAbs(time, 10 * tolerance));
    CHECK_THAT(scheduler.snr_inverse(scheduler.alpha(t) / scheduler.sigma(t)),
               WithinAbs(time, 10 * tolerance));
  }
  CHECK(scheduler.snr_inverse(std::numeric_limits<Scalar>::infinity()) == Scalar(1));
  CHECK_THROWS_AS(scheduler.alpha(Scalar(1.5)), std::domain_error);
  CHECK_THROWS_AS(scheduler.kappa_inverse(Scalar(-0.1)), std::domain_error);
}

// ---------------------------------------------------------------------------------------------
// Layouts, sources and the path.

TEST_CASE("position_distribution reads blocks of K in the [N, L, K] C-order layout", "[discrete]") {
  Matrix<double> posterior(6, 2);  // K = 2, L = 3, N = 2
  for (Index entry = 0; entry < posterior.size(); ++entry) posterior(entry) = double(entry);
  // C-order [N, L, K]: entry (n, l, k) at n·L·K + l·K + k.
  for (Index sequence = 0; sequence < 2; ++sequence) {
    for (Index position = 0; position < 3; ++position) {
      for (Index token = 0; token < 2; ++token) {
        CHECK(flowmatch::position_distribution(posterior, 2, position, sequence)(token) ==
              double(sequence * 6 + position * 2 + token));
      }
    }
  }
}

TEST_CASE("Sources: probabilities, states and draws", "[discrete]") {
  std::mt19937_64 generator(11);
  const auto uniform = DiscreteSource<double>::uniform(4);
  const auto masked = DiscreteSource<double>::masked(4);
  Matrix<double> probabilities(3, 2);
  probabilities << 0.2, 0.0, 0.5, 0.7, 0.3, 0.3;
  const auto given = DiscreteSource<double>::given(probabilities);
  CHECK(uniform.states() == 4);
  CHECK(masked.states() == 5);
  CHECK(masked.mask_token() == 4);
  CHECK(given.length() == Index(2));
  CHECK_FALSE(uniform.length().has_value());
  CHECK(masked.probabilities(2).col(1) == (Vector<double>(5) << 0, 0, 0, 0, 1).finished());
  CHECK_THAT(given.probability(1, 1), WithinAbs(0.7, 1e-15));
  CHECK_THROWS_AS(uniform.mask_token(), std::invalid_argument);

  // Frequencies of a given source's draws, and of its draws excluding a token.
  const Index draws = 200000;
  const TokenMatrix sample = given.sample(2, draws, generator);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (Index position = 0; position < 2; ++position) {
    Vector<double> counts = Vector<double>::Zero(3);
    Vector<double> excluding = Vector<double>::Zero(3);
    for (Index draw = 0; draw < draws; ++draw) {
      counts(sample(position, draw)) += 1;
      excluding(given.draw_excluding(position, 1, unit(generator))) += 1;
    }
    const Vector<double> expected = probabilities.col(position);
    Vector<double> expected_excluding = expected;
    expected_excluding(1) = 0;
    expected_excluding /= expected_excluding.sum();
    for (Index token = 0; token < 3; ++token) {
      CHECK_THAT(counts(token) / draws, WithinAbs(expected(token), 0.004));
      CHECK_THAT(excluding(token) / draws, WithinAbs(expected_excluding(token), 0.004));
    }
  }
  // Uniform draws excluding a token never return it and cover the others evenly.
  Vector<double> counts = Vector<double>::Zero(4);
  for (Index draw = 0; draw < draws; ++draw)
    counts(uniform.draw_excluding(0, 2, unit(generator))) += 1;
  CHECK(counts(2) == 0);
  for (const Index token : {0, 1, 3}) CHECK_THAT(counts(token) / draws, WithinAbs(1.0 / 3, 0.004));
}

TEMPLATE_TEST_CASE("Mixture-path samples keep x0 with probability 1 - kappa (binomial check)",
                   "[discrete]", double, float) {
  using Scalar = TestType;
  std::mt19937_64 generator(2024);
  const Index positions = 50;
  const Index sequences = 400;
  const TokenMatrix x0 = TokenMatrix::Zero(positions, sequences);
  const TokenMatrix x1 = TokenMatrix::Ones(positions, sequences);
  Vector<Scalar> t(sequences);
  for (Index sequence = 0; sequence < sequences; ++sequence) {
    t(sequence) = sequence < sequences / 2 ? Scalar(0.3) : Scalar(0.8);
  }
  const auto check = [&](const auto& path) {
    const TokenMatrix x_t = path.sample(x0, x1, t, generator);
    for (const Index half : {0, 1}) {
      const auto block = x_t.middleCols(half * sequences / 2, sequences / 2);
      const double trials = static_cast<double>(block.size());
      const double kappa = static_cast<double>(path.kappa(t(half * sequences / 2)));
      const double replaced = static_cast<double>(block.sum());
      const double deviation = std::abs(replaced - trials * kappa);
      CHECK(deviation < 4.0 * std::sqrt(trials * kappa * (1 - kappa)));
    }
  };
  check(MixturePath<CondOT<Scalar>>());
  check(MixturePath<Polynomial<Scalar>>(Polynomial<Scalar>(Scalar(2))));
  check(MixturePath<ConvexCosine<Scalar>>());
}

// ---------------------------------------------------------------------------------------------
// Rates.

TEMPLATE_TEST_CASE("Rates at every position sum to zero and are >= 0 off the diagonal",
                   "[discrete]", double, float) {
  using Scalar = TestType;
  std::mt19937_64 generator(7);
  const double tolerance = std::is_same_v<Scalar, float> ? 1e-5 : 1e-13;
  const MixturePath<Polynomial<Scalar>> path(Polynomial<Scalar>(Scalar(2)));
  for (const bool masked : {false, true}) {
    const auto source =
        masked ? DiscreteSource<Scalar>::masked(5) : DiscreteSource<Scalar>::uniform(5);
    const Index states = source.states();
    const Index positions = 4;
    const Index sequences = 6;
    const TokenMatrix x_t = random_tokens(positions, sequences, states, generator);
    const Matrix<Scalar> posterior = random_posterior<Scalar>(5, positions, sequences, generator);
    Vector<Scalar> t(sequences);
    for (Index sequence = 0; sequence < sequences; ++sequence)
      t(sequence) = Scalar(0.15 * sequence);
    const Matrix<Scalar> rates = flowmatch::mixture_rates(path, source, t, x_t, posterior);
    REQUIRE(rates.rows() == states * positions);
    for (Index sequence = 0; sequence < sequences; ++sequence) {
      const double scale = static_cast<double>(path.jump_rate(t(sequence)));
      for (Index position = 0; position < positions; ++position) {
        const auto rate = flowmatch::position_distribution(rates, states, position, sequence);
        CHECK_THAT(static_cast<double>(rate.sum()), WithinAbs(0.0, tolerance * (1 + scale)));
        for (Index token = 0; token < states; ++token) {
          if (token != x_t(position, sequence)) CHECK(rate(token) >= Scalar(0));
        }
        CHECK(rate(x_t(position, sequence)) <= Scalar(0));
      }
    }
  }
  // The exact posterior's rates too, at every one of the 27 states.
  const auto joint = correlated_joint();
  const MixturePath<CondOT<Scalar>> condot;
  const auto source = DiscreteSource<Scalar>::uniform(vocabulary);
  const DiscreteJointPosterior<CondOT<Scalar>> oracle(joint, condot, source);
  const TokenMatrix states = every_sequence(joint);
  const Vector<Scalar> t = Vector<Scalar>::Constant(states.cols(), Scalar(0.4));
  Matrix<Scalar> posterior(vocabulary * length, states.cols());
  oracle(t, states, posterior);
  const Matrix<Scalar> rates = flowmatch::mixture_rates(condot, source, t, states, posterior);
  CHECK((rates.reshaped(vocabulary, rates.size() / vocabulary).colwise().sum().cwiseAbs().array() <
         Scalar(10 * tolerance + 1e-6))
            .all());
}

// ---------------------------------------------------------------------------------------------
// The oracle.

TEST_CASE("The oracle's posterior: data marginals at t = 0, a point mass on unmasked tokens",
          "[discrete][oracle]") {
  const auto joint = correlated_joint();
  const TokenMatrix states = every_sequence(joint);
  const MixturePath<CondOT<double>> path;
  const auto masked = DiscreteSource<double>::masked(vocabulary);
  const DiscreteJointPosterior<CondOT<double>> oracle(joint, path, masked);
  // All masked at any t: the posterior is the data's marginal at each position.
  const TokenMatrix all_masked = TokenMatrix::Constant(length, 1, vocabulary);
  Matrix<double> posterior(vocabulary * length, 1);
  oracle(Vector<double>::Constant(1, 0.6), all_masked, posterior);
  for (Index position = 0; position < length; ++position) {
    for (Index token = 0; token < vocabulary; ++token) {
      double marginal = 0;
      for (Index index = 0; index < 27; ++index) {
        if (joint.token_of(index, position) == token) marginal += joint.probabilities()(index);
      }
      CHECK_THAT(posterior(position * vocabulary + token), WithinAbs(marginal, 1e-14));
    }
  }
  // Unmasked tokens are x₁'s: the posterior there is a point mass; position 2 masked gets the
  // conditional p(x₁,2 | x₁,0 = 1, x₁,1 = 1).
  TokenMatrix partial(length, 1);
  partial << 1, 1, vocabulary;
  oracle(Vector<double>::Constant(1, 0.5), partial, posterior);
  CHECK(posterior(0 * vocabulary + 1) == 1.0);
  CHECK(posterior(1 * vocabulary + 1) == 1.0);
  Vector<double> conditional(vocabulary);
  for (Index token = 0; token < vocabulary; ++token) {
    conditional(token) = joint.probabilities()(1 + 3 * 1 + 9 * token);
  }
  conditional /= conditional.sum();
  for (Index token = 0; token < vocabulary; ++token) {
    CHECK_THAT(posterior(2 * vocabulary + token), WithinAbs(conditional(token), 1e-14));
  }
}

// ---------------------------------------------------------------------------------------------
// The jump draw.

// The O(1) jump against the naive O(K) draw: all K rates formed, the current one zeroed, a jump
// with probability 1 − exp(−hΛ) to a token drawn in proportion to them.
TEST_CASE("The O(1) jump draw has the distribution of the naive O(K) draw (chi-square)",
          "[discrete]") {
  std::mt19937_64 generator(99);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  Matrix<double> probabilities(6, 1);
  probabilities << 0.05, 0.3, 0.15, 0.1, 0.25, 0.15;
  const std::array<DiscreteSource<double>, 3> sources{DiscreteSource<double>::uniform(6),
                                                      DiscreteSource<double>::given(probabilities),
                                                      DiscreteSource<double>::masked(6)};
  flowmatch::JumpCoefficients coefficients;
  coefficients.kappa = 0.4;
  coefficients.jump_rate = 1.7;
  coefficients.corrector = 0.9;
  coefficients.step = 0.3;
  const Index draws = 400000;
  for (const auto& source : sources) {
    for (const auto [current, target] : {std::array<Token, 2>{2, 4}, std::array<Token, 2>{3, 3}}) {
      const Index states = source.states();
      // Naive: λ_j = a·δ(j = x₁) + b·[(1 − κ)p₀(j) + κ·δ(j = x₁)] for j ≠ c.
      Vector<double> rates(states);
      for (Index token = 0; token < states; ++token) {
        rates(token) =
            coefficients.jump_rate * (token == target) +
            coefficients.corrector * ((1 - coefficients.kappa) * source.probability(token, 0) +
                                      coefficients.kappa * (token == target));
      }
      rates(current) = 0;
      const double total = rates.sum();
      const double jump = 1 - std::exp(-coefficients.step * total);
      Vector<double> expected = jump * rates / total;
      expected(current) = 1 - jump;
      Vector<double> fast = Vector<double>::Zero(states);
      Vector<double> naive = Vector<double>::Zero(states);
      for (Index draw = 0; draw < draws; ++draw) {
        fast(flowmatch::jump_token(source, 0, current, target, coefficients,
                                   {unit(generator), unit(generator), unit(generator)})) += 1;
        // The naive draw: stay with probability e^{−hΛ}, else a categorical over the rates.
        Index chosen = current;
        if (unit(generator) < jump) {
          double cumulative = 0;
          const double point = unit(generator) * total;
          for (chosen = 0; chosen < states; ++chosen) {
            cumulative += rates(chosen);
            if (rates(chosen) > 0 && cumulative > point) break;
          }
        }
        naive(chosen) += 1;
      }
      // Categories of probability 0 must be empty; the rest enter the statistic.
      Vector<double> observed(states), reference(states), probability(states);
      Index used = 0;
      for (Index token = 0; token < states; ++token) {
        if (expected(token) == 0) {
          CHECK(fast(token) == 0);
          continue;
        }
        observed(used) = fast(token);
        reference(used) = naive(token);
        probability(used) = expected(token);
        ++used;
      }
      const double fast_statistic = chi_square(observed.head(used), probability.head(used));
      const double naive_statistic = chi_square(reference.head(used), probability.head(used));
      INFO("source kind " << int(source.kind()) << ", current " << current << ", x1 " << target
                          << ": chi-square " << fast_statistic << " (naive " << naive_statistic
                          << "), " << used - 1 << " dof");
      CHECK(fast_statistic < chi_square_critical(double(used - 1)));
      CHECK(naive_statistic < chi_square_critical(double(used - 1)));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Sampling the oracle.

template <class Scalar, class S>
Vector<double> sampled_counts(const DiscreteJoint& joint, const MixturePath<S>& path,
                              const DiscreteSource<Scalar>& source,
                              const DiscreteSamplerOptions<Scalar>& options, Index sequences,
                              std::uint64_t seed,
                              flowmatch::DiscreteSamplerStats* stats = nullptr) {
  std::mt19937_64 generator(seed);
  const DiscreteJointPosterior<S> oracle(joint, path, source);
  const TokenMatrix x0 = source.sample(length, sequences, generator);
  const auto result = flowmatch::sample_discrete(oracle, path, source, x0, options, generator);
  if (stats != nullptr) *stats = result.stats;
  return state_counts(joint, result.tokens);
}

TEST_CASE("Exact draws of the joint pass the chi-square test (its calibration)",
          "[discrete][oracle]") {
  const auto joint = correlated_joint();
  std::mt19937_64 generator(314159);
  const Vector<double> counts = state_counts(joint, joint.sample(20000, generator));
  const double statistic = chi_square(counts, joint.probabilities());
  INFO("exact draws: chi-square " << statistic << ", TV "
                                  << total_variation(counts, joint.probabilities()));
  CHECK(statistic < chi_square_critical(26));
  CHECK(total_variation(counts, joint.probabilities()) < 0.03);
}

TEMPLATE_TEST_CASE("Sampling the oracle reproduces the joint (chi-square over 27 states)",
                   "[discrete][sampler]", double, float) {
  using Scalar = TestType;
  const auto joint = correlated_joint();
  const Index sequences = 20000;
  const double critical = chi_square_critical(26);
  const auto run = [&](const char* name, const auto& path, const DiscreteSource<Scalar>& source,
                       const DiscreteSamplerOptions<Scalar>& options) {
    flowmatch::DiscreteSamplerStats stats;
    const Vector<double> counts =
        sampled_counts(joint, path, source, options, sequences, 314159, &stats);
    const double statistic = chi_square(counts, joint.probabilities());
    INFO(name << ": chi-square " << statistic << " (critical " << critical << "), TV "
              << total_variation(counts, joint.probabilities()) << ", steps " << stats.steps
              << ", jumps " << stats.jumps);
    CHECK(statistic < critical);
    const auto steps = static_cast<std::size_t>(std::lround(1 / *options.step_size));
    CHECK(stats.steps == steps);
    CHECK(stats.evaluations == steps);
    CHECK(stats.jumps > 0);
  };
  const auto options = with_step(Scalar(1.0 / 256));
  run("masked, CondOT", MixturePath<CondOT<Scalar>>(), DiscreteSource<Scalar>::masked(vocabulary),
      options);
  run("uniform, CondOT", MixturePath<CondOT<Scalar>>(), DiscreteSource<Scalar>::uniform(vocabulary),
      options);
  // The other κ in double only (float shares every line of the sampler with double).
  if constexpr (std::is_same_v<Scalar, double>) {
    run("masked, cosine", MixturePath<ConvexCosine<Scalar>>(),
        DiscreteSource<Scalar>::masked(vocabulary), options);
    run("uniform, polynomial 2", MixturePath<Polynomial<Scalar>>(Polynomial<Scalar>(Scalar(2))),
        DiscreteSource<Scalar>::uniform(vocabulary), options);
  }
  // The divergence-free corrector η(t) = t(1 − t) keeps the marginals.
  auto corrected = options;
  corrected.eta = [](Scalar t) { return t * (Scalar(1) - t); };
  run("uniform, CondOT, corrector", MixturePath<CondOT<Scalar>>(),
      DiscreteSource<Scalar>::uniform(vocabulary), corrected);
  run("masked, CondOT, corrector", MixturePath<CondOT<Scalar>>(),
      DiscreteSource<Scalar>::masked(vocabulary), corrected);
}

// The state at an intermediate grid time has the path's marginal
// p_t(x) = Σ_{x₁} p(x₁)·Π_l [(1 − κ_t)·p₀(x_l) + κ_t·δ(x_l = x₁,l)] over the 4³ masked states.
TEST_CASE("Sampling the oracle to t = 0.5 reproduces the path's marginal (chi-square over 64)",
          "[discrete][sampler]") {
  const auto joint = correlated_joint();
  const MixturePath<CondOT<double>> path;
  const auto source = DiscreteSource<double>::masked(vocabulary);
  const DiscreteJointPosterior<CondOT<double>> oracle(joint, path, source);
  const Index states = source.states();
  const Index patterns = states * states * states;
  const double kappa = 0.5;
  Vector<double> marginal = Vector<double>::Zero(patterns);
  for (Index pattern = 0; pattern < patterns; ++pattern) {
    for (Index index = 0; index < joint.sequences(); ++index) {
      double weight = joint.probabilities()(index);
      Index rest = pattern;
      for (Index position = 0; position < length; ++position, rest /= states) {
        const Token token = rest % states;
        weight *= (1 - kappa) * (token == vocabulary) +
                  kappa * (token == joint.token_of(index, position));
      }
      marginal(pattern) += weight;
    }
  }
  REQUIRE_THAT(marginal.sum(), WithinAbs(1.0, 1e-12));
  std::mt19937_64 generator(1618);
  const Index sequences = 20000;
  const TokenMatrix x0 = source.sample(length, sequences, generator);
  const std::vector<double> times{0.0, 0.5};
  const auto result = flowmatch::sample_discrete(
      oracle, path, source, x0, std::span<const double>(times), with_step(1.0 / 256), generator);
  Vector<double> counts = Vector<double>::Zero(patterns);
  for (Index sequence = 0; sequence < sequences; ++sequence) {
    Index pattern = 0;
    for (Index position = length - 1; position >= 0; --position) {
      pattern = pattern * states + result.tokens(position, sequence);
    }
    counts(pattern) += 1;
  }
  const double statistic = chi_square(counts, marginal);
  INFO("t = 0.5: chi-square " << statistic << " (critical " << chi_square_critical(63) << "), TV "
                              << total_variation(counts, marginal));
  CHECK(statistic < chi_square_critical(63));
  CHECK(result.stats.steps == 128);
}

TEST_CASE("The total-variation error of sampling the oracle falls as the steps grow",
          "[discrete][sampler]") {
  const auto joint = correlated_joint();
  const Index sequences = 20000;
  for (const bool masked : {true, false}) {
    const auto source = masked ? DiscreteSource<double>::masked(vocabulary)
                               : DiscreteSource<double>::uniform(vocabulary);
    std::vector<double> errors;
    for (const int steps : {1, 4, 16, 64}) {
      const Vector<double> counts = sampled_counts(joint, MixturePath<CondOT<double>>(), source,
                                                   with_step(1.0 / steps), sequences, 2718);
      errors.push_back(total_variation(counts, joint.probabilities()));
      INFO((masked ? "masked" : "uniform") << ", " << steps << " steps: TV " << errors.back());
      CHECK(true);
    }
    INFO((masked ? "masked" : "uniform") << " TV at 1, 4, 16, 64 steps: " << errors[0] << ", "
                                         << errors[1] << ", " << errors[2] << ", " << errors[3]);
    CHECK(errors[0] > errors[1]);
    CHECK(errors[1] > errors[2]);
    CHECK(errors[2] < 0.5 * errors[0]);
    CHECK(errors[3] < 0.03);
  }
}

TEST_CASE(
    "Sampling is reproducible for any batch split or thread count, and returns the grid times' "
    "states",
    "[discrete][sampler]") {
  const auto joint = correlated_joint();
  const MixturePath<CondOT<double>> path;
  const auto source = DiscreteSource<double>::uniform(vocabulary);
  const DiscreteJointPosterior<CondOT<double>> oracle(joint, path, source);
  std::mt19937_64 data_generator(5);
  const TokenMatrix x0 = source.sample(length, 40, data_generator);
  auto options = with_step(0.05);
  options.eta = [](double t) { return 0.5 * t; };
  options.return_trajectory = true;
  const std::vector<double> times{0.0, 0.3, 0.7, 1.0};
  std::mt19937_64 whole_generator(77);
  const auto whole = flowmatch::sample_discrete(
      oracle, path, source, x0, std::span<const double>(times), options, whole_generator);
  REQUIRE(whole.trajectory.size() == 4);
  CHECK(whole.trajectory[0] == x0);
  CHECK(whole.trajectory[3] == whole.tokens);
  CHECK(whole.times == times);
  CHECK(whole.stats.steps == 6 + 8 + 6);
  // Three shards with their sequence offsets, each from a generator with the same seed.
  TokenMatrix sharded(length, 40);
  Index begin = 0;
  for (const Index size : {7, 20, 13}) {
    std::mt19937_64 shard_generator(77);
    auto shard_options = options;
    shard_options.first_sequence_index = static_cast<std::uint64_t>(begin);
    const TokenMatrix shard_x0 = x0.middleCols(begin, size);
    const auto shard =
        flowmatch::sample_discrete(oracle, path, source, shard_x0, std::span<const double>(times),
                                   shard_options, shard_generator);
    sharded.middleCols(begin, size) = shard.tokens;
    CHECK(shard.trajectory[1] == whole.trajectory[1].middleCols(begin, size));
    begin += size;
  }
  CHECK(sharded == whole.tokens);
  // A denoiser evaluated in column chunks of 3 on 3 threads gives the same tokens.
  flowmatch::ThreadPool pool(3);
  const auto chunked = [&](const flowmatch::ConstVectorRef<double>& t,
                           const flowmatch::ConstTokenRef& x_t,
                           flowmatch::MatrixRef<double> posterior) {
    const Index chunk = 3;
    pool.parallel_for((x_t.cols() + chunk - 1) / chunk, [&](Index task) {
      const Index first = task * chunk;
      const Index size = std::min(chunk, x_t.cols() - first);
      oracle(t.segment(first, size), x_t.middleCols(first, size),
             posterior.middleCols(first, size));
    });
  };
  struct ChunkedDenoiser {
    const decltype(chunked)& evaluate;
    Index vocabulary() const { return 3; }
    void operator()(const flowmatch::ConstVectorRef<double>& t, const flowmatch::ConstTokenRef& x_t,
                    flowmatch::MatrixRef<double> posterior) const {
      evaluate(t, x_t, posterior);
    }
  };
  std::mt19937_64 threaded_generator(77);
  CHECK(flowmatch::sample_discrete(ChunkedDenoiser{chunked}, path, source, x0,
                                   std::span<const double>(times), options, threaded_generator)
            .tokens == whole.tokens);
  // The same seed repeats exactly.
  std::mt19937_64 again(77);
  CHECK(flowmatch::sample_discrete(oracle, path, source, x0, std::span<const double>(times),
                                   options, again)
            .tokens == whole.tokens);
  // Source samples: the first columns of a larger sample are the smaller sample.
  std::mt19937_64 small_generator(8);
  std::mt19937_64 large_generator(8);
  CHECK(source.sample(length, 10, small_generator) ==
        source.sample(length, 30, large_generator).leftCols(10));
}

// ---------------------------------------------------------------------------------------------
// Losses and the ELBO.

TEMPLATE_TEST_CASE("The generalized KL loss is the rate-matching KL over all rates, >= 0",
                   "[discrete][loss]", double, float) {
  using Scalar = TestType;
  std::mt19937_64 generator(123);
  const double tolerance = std::is_same_v<Scalar, float> ? 2e-5 : 1e-12;
  const MixturePath<Polynomial<Scalar>> path(Polynomial<Scalar>(Scalar(1.5)));
  for (const bool masked : {false, true}) {
    const auto source =
        masked ? DiscreteSource<Scalar>::masked(4) : DiscreteSource<Scalar>::uniform(4);
    const Index positions = 5;
    const Index sequences = 8;
    const TokenMatrix x1 = random_tokens(positions, sequences, 4, generator);
    TokenMatrix x_t = random_tokens(positions, sequences, source.states(), generator);
    x_t.row(0) = x1.row(0);  // some tokens already at x₁
    const Matrix<Scalar> posterior = random_posterior<Scalar>(4, positions, sequences, generator);
    Vector<Scalar> t(sequences);
    for (Index sequence = 0; sequence < sequences; ++sequence) t(sequence) = Scalar(0.1 * sequence);
    const Matrix<Scalar> loss =
        flowmatch::generalized_kl_loss(path, source, t, x_t, x1, posterior, Reduction::none);
    REQUIRE(loss.rows() == positions);
    for (Index sequence = 0; sequence < sequences; ++sequence) {
      const double a = static_cast<double>(path.jump_rate(t(sequence)));
      for (Index position = 0; position < positions; ++position) {
        // Σ_{y ≠ x_t} [u_θ(y) − u(y) + u(y)·log(u(y)/u_θ(y))], u = a·δ(y = x₁), u_θ = a·p(y).
        double reference = 0;
        for (Index token = 0; token < source.states(); ++token) {
          if (token == x_t(position, sequence)) continue;
          const double model =
              token < 4 ? a * static_cast<double>(posterior(position * 4 + token, sequence)) : 0.0;
          const double conditional = token == x1(position, sequence) ? a : 0.0;
          reference += model - conditional;
          if (conditional > 0) reference += conditional * std::log(conditional / model);
        }
        CHECK_THAT(static_cast<double>(loss(position, sequence)),
                   WithinAbs(reference, tolerance * (1 + std::abs(reference))));
        CHECK(loss(position, sequence) >= Scalar(0));
      }
    }
    const auto mean =
        flowmatch::generalized_kl_loss(path, source, t, x_t, x1, posterior, Reduction::mean);
    const auto sum =
        flowmatch::generalized_kl_loss(path, source, t, x_t, x1, posterior, Reduction::sum);
    CHECK_THAT(static_cast<double>(mean(0, 0)),
               WithinRel(static_cast<double>(loss.mean()), 10 * tolerance));
    CHECK_THAT(static_cast<double>(sum(0, 0)),
               WithinRel(static_cast<double>(loss.sum()), 10 * tolerance));
  }
  // Cross-entropy is −log p(x₁).
  const TokenMatrix x1 = random_tokens(3, 4, 5, generator);
  const Matrix<Scalar> posterior = random_posterior<Scalar>(5, 3, 4, generator);
  const Matrix<Scalar> cross =
      flowmatch::cross_entropy_loss<Scalar>(x1, posterior, 5, Reduction::none);
  for (Index sequence = 0; sequence < 4; ++sequence) {
    for (Index position = 0; position < 3; ++position) {
      CHECK(cross(position, sequence) ==
            -std::log(posterior(position * 5 + x1(position, sequence), sequence)));
    }
  }
  CHECK_THAT(static_cast<double>(
                 flowmatch::cross_entropy_loss<Scalar>(x1, posterior, 5, Reduction::sum)(0, 0)),
             WithinRel(static_cast<double>(cross.sum()), 10 * tolerance));
}

// With the exact posterior the bound holds for every sequence. For the masked source it is
// tight: the model's chain unmasks one position at a time with the exact conditional, so along
// any unmasking order the path KL adds up −log p(x₁) by the chain rule; the uniform source
// leaves a gap (tokens may jump more than once).
TEMPLATE_TEST_CASE("The ELBO of the exact posterior bounds the true -log p from above",
                   "[discrete][elbo]", double, float) {
  using Scalar = TestType;
  const auto joint = correlated_joint();
  const TokenMatrix states = every_sequence(joint);
  const Vector<double> truth = -joint.log_probability(states);
  const auto check = [&](const char* name, const auto& path, const DiscreteSource<Scalar>& source,
                         bool tight) {
    using S = typename std::decay_t<decltype(path)>::scheduler_type;
    const DiscreteJointPosterior<S> oracle(joint, path, source);
    std::mt19937_64 generator(4242);
    const auto elbo = flowmatch::discrete_elbo(oracle, path, source, states, 2000, generator);
    double mean_gap = 0;
    double mean_gap_variance = 0;
    for (Index index = 0; index < states.cols(); ++index) {
      INFO(name << ", sequence " << index << ": bound " << elbo.bound(index) << " +- "
                << elbo.standard_error(index) << ", -log p " << truth(index));
      CHECK(std::isfinite(elbo.bound(index)));
      CHECK(elbo.standard_error(index) > 0);
      // 4 standard errors: the integrand is skewed (rare large values near t = 1).
      CHECK(elbo.bound(index) >= truth(index) - 4 * elbo.standard_error(index));
      const double weight = joint.probabilities()(index);
      mean_gap += weight * (elbo.bound(index) - truth(index));
      mean_gap_variance +=
          weight * weight * elbo.standard_error(index) * elbo.standard_error(index);
    }
    const double mean_gap_error = std::sqrt(mean_gap_variance);
    INFO(name << ": E[bound + log p] = " << mean_gap << " +- " << mean_gap_error << " (entropy "
              << joint.probabilities().dot(truth) << ")");
    if (tight) {
      CHECK(std::abs(mean_gap) < 4 * mean_gap_error);
    } else {
      CHECK(mean_gap > 4 * mean_gap_error);
    }
    // A sequence's bound does not depend on the batch it is computed in.
    std::mt19937_64 same_seed(4242);
    const auto first =
        flowmatch::discrete_elbo(oracle, path, source, states.leftCols(5), 2000, same_seed);
    CHECK(first.bound == elbo.bound.head(5));
  };
  check("masked, CondOT", MixturePath<CondOT<Scalar>>(), DiscreteSource<Scalar>::masked(vocabulary),
        true);
  check("masked, cosine", MixturePath<ConvexCosine<Scalar>>(),
        DiscreteSource<Scalar>::masked(vocabulary), true);
  check("uniform, CondOT", MixturePath<CondOT<Scalar>>(),
        DiscreteSource<Scalar>::uniform(vocabulary), false);
  check("uniform, cosine", MixturePath<ConvexCosine<Scalar>>(),
        DiscreteSource<Scalar>::uniform(vocabulary), false);
}

// ---------------------------------------------------------------------------------------------
// Bad input.

// A convex scheduler given by two functions, to build bad κ.
struct FunctionScheduler {
  using scalar_type = double;
  std::function<double(double)> kappa;
  std::function<double(double)> d_kappa;
  double alpha(double t) const { return kappa(t); }
  double sigma(double t) const { return 1 - kappa(t); }
  double d_alpha(double t) const { return d_kappa(t); }
  double d_sigma(double t) const { return -d_kappa(t); }
  double snr_inverse(double rho) const { return rho / (1 + rho); }
  double kappa_inverse(double kappa_value) const { return kappa_value; }
};

// A denoiser that writes 0.5 everywhere (not a distribution over K = 3).
struct HalfDenoiser {
  Index vocabulary() const { return 3; }
  void operator()(const flowmatch::ConstVectorRef<double>&, const flowmatch::ConstTokenRef&,
                  flowmatch::MatrixRef<double> posterior) const {
    posterior.setConstant(0.5);
  }
};

TEST_CASE("Bad input throws typed exceptions naming the argument", "[discrete][errors]") {
  const auto joint = correlated_joint();
  const MixturePath<CondOT<double>> path;
  const auto uniform = DiscreteSource<double>::uniform(vocabulary);
  const auto masked = DiscreteSource<double>::masked(vocabulary);
  const DiscreteJointPosterior<CondOT<double>> oracle(joint, path, uniform);
  const auto options = with_step(0.1);
  std::mt19937_64 generator(1);
  TokenMatrix x0 = TokenMatrix::Zero(length, 2);

  // Tokens outside the vocabulary, and the mask token with a source that has none.
  x0(1, 1) = 7;
  CHECK_THROWS_WITH(flowmatch::sample_discrete(oracle, path, uniform, x0, options, generator),
                    Contains("sample_discrete: x0 has token 7 in column 1 (row 1)"));
  x0(1, 1) = -1;
  CHECK_THROWS_AS(flowmatch::sample_discrete(oracle, path, uniform, x0, options, generator),
                  std::invalid_argument);
  x0(1, 1) = vocabulary;
  CHECK_THROWS_WITH(flowmatch::sample_discrete(oracle, path, uniform, x0, options, generator),
                    Contains("has the mask token 3") && Contains("masked source"));
  x0(1, 1) = 0;

  // κ not from 0 to 1, or not monotone.
  using Bad = MixturePath<FunctionScheduler>;
  CHECK_THROWS_WITH(
      Bad(FunctionScheduler{[](double t) { return 1 - t; }, [](double) { return -1.0; }}),
      Contains("MixturePath: scheduler kappa(0) is 1"));
  CHECK_THROWS_WITH(
      Bad(FunctionScheduler{[](double t) { return 0.5 * t; }, [](double) { return 0.5; }}),
      Contains("kappa(1) is 0.5"));
  CHECK_THROWS_AS(
      Bad(FunctionScheduler{[](double t) { return t + 0.3 * std::sin(2 * std::numbers::pi * t); },
                            [](double) { return 1.0; }}),
      std::invalid_argument);

  // σ ≠ 1 − κ.
  struct NotConvex : FunctionScheduler {
    double sigma(double t) const { return 1 - t * t; }
  };
  CHECK_THROWS_WITH(
      MixturePath<NotConvex>(NotConvex{{[](double t) { return t; }, [](double) { return 1.0; }}}),
      Contains("MixturePath: scheduler sigma(0.0625) is 0.99609375 with kappa 0.0625"));

  // η(0) ≠ 0; a missing or bad step size; a vocabulary mismatch.
  auto corrected = options;
  corrected.eta = [](double) { return 0.2; };
  CHECK_THROWS_WITH(flowmatch::sample_discrete(oracle, path, uniform, x0, corrected, generator),
                    Contains("DiscreteSamplerOptions: eta(0) is 0.2"));
  CHECK_THROWS_AS(flowmatch::sample_discrete(oracle, path, uniform, x0,
                                             DiscreteSamplerOptions<double>(), generator),
                  std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::sample_discrete(oracle, path, DiscreteSource<double>::uniform(4), x0,
                                             options, generator),
                  std::invalid_argument);
  CHECK_THROWS_AS(
      DiscreteJointPosterior<CondOT<double>>(joint, path, DiscreteSource<double>::uniform(4)),
      std::invalid_argument);

  // A denoiser output that is not a distribution.
  CHECK_THROWS_WITH(
      flowmatch::sample_discrete(HalfDenoiser(), path, uniform, x0, options, generator),
      Contains("sample_discrete: denoiser output has a distribution summing to 1.5"));

  // Non-finite and out-of-range times; shapes.
  const std::vector<double> nan_grid{0.0, std::numeric_limits<double>::quiet_NaN(), 1.0};
  CHECK_THROWS_AS(flowmatch::sample_discrete(oracle, path, uniform, x0,
                                             std::span<const double>(nan_grid), options, generator),
                  std::domain_error);
  const TokenMatrix x1 = TokenMatrix::Zero(length, 2);
  Matrix<double> posterior = Matrix<double>::Constant(vocabulary * length, 2, 1.0 / vocabulary);
  Vector<double> t = Vector<double>::Constant(2, 0.5);
  Vector<double> bad_t = t;
  bad_t(1) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(flowmatch::generalized_kl_loss(path, uniform, bad_t, x0, x1, posterior),
                    Contains("generalized_kl_loss: t[1] is nan"));
  CHECK_THROWS_AS(flowmatch::generalized_kl_loss(path, uniform, bad_t, x0, x1, posterior),
                  std::domain_error);
  CHECK_THROWS_AS(flowmatch::generalized_kl_loss(path, uniform, Vector<double>::Constant(2, 1.0),
                                                 x0, x1, posterior),
                  std::domain_error);  // κ = 1: the jump rate is infinite
  CHECK_THROWS_AS(flowmatch::generalized_kl_loss(path, uniform, Vector<double>::Constant(3, 0.5),
                                                 x0, x1, posterior),
                  std::invalid_argument);
  CHECK_THROWS_AS(
      flowmatch::generalized_kl_loss(path, uniform, t, x0, TokenMatrix::Zero(2, 2), posterior),
      std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::cross_entropy_loss<double>(x1, posterior.topRows(6), vocabulary),
                  std::invalid_argument);
  posterior(0, 0) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_AS(flowmatch::cross_entropy_loss<double>(x1, posterior, vocabulary),
                  std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::mixture_rates(path, masked, t, x0, posterior), std::invalid_argument);

  // Sources and the ELBO.
  Matrix<double> bad_probabilities(2, 1);
  bad_probabilities << 0.5, 0.6;
  CHECK_THROWS_AS(DiscreteSource<double>::given(bad_probabilities), std::invalid_argument);
  CHECK_THROWS_AS(DiscreteSource<double>::uniform(1), std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::discrete_elbo(oracle, path, uniform, x1, 1, generator),
                  std::invalid_argument);
  TokenMatrix masked_data = x1;
  masked_data(0, 0) = vocabulary;
  CHECK_THROWS_WITH(flowmatch::discrete_elbo(oracle, path, masked, masked_data, 4, generator),
                    Contains("discrete_elbo: x1 has the mask token 3"));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Guidance: predictor-free guided rates and the guided sampler, against the exact conditional
// and unconditional posteriors of a labelled joint.

namespace {

// Two classes over {0, 1, 2}^3: class 0 with weight 1 + 4·[x₀ = x₁] + [x₂ = 0], class 1 with
// 1 + 4·[x₁ = x₂] + 2·[x₀ = 2]; π = (0.4, 0.6).
flowmatch::LabelledDiscreteJoint labelled_joint() {
  Vector<double> first(27);
  Vector<double> second(27);
  for (Index index = 0; index < 27; ++index) {
    const Index a = index % 3;
    const Index b = (index / 3) % 3;
    const Index c = index / 9;
    first(index) = 1.0 + 4.0 * (a == b) + (c == 0);
    second(index) = 1.0 + 4.0 * (b == c) + 2.0 * (a == 2);
  }
  Vector<double> labels(2);
  labels << 0.4, 0.6;
  return flowmatch::LabelledDiscreteJoint(
      {DiscreteJoint(first / first.sum(), vocabulary, length),
       DiscreteJoint(second / second.sum(), vocabulary, length)},
      labels);
}

// The counts over the 27 states of a guided run of N sequences, all with @p label and @p weight.
template <class S>
Vector<double> guided_counts(const flowmatch::LabelledDiscreteJoint& joint,
                             const DiscreteSource<double>& source, Token label, double weight,
                             Index sequences, std::uint64_t seed) {
  const MixturePath<S> path;
  const flowmatch::LabelledDiscreteJointPosterior<S> oracle(joint, path, source);
  std::mt19937_64 generator(seed);
  const TokenMatrix x0 = source.sample(length, sequences, generator);
  const flowmatch::LabelVector labels = flowmatch::LabelVector::Constant(sequences, label);
  const Vector<double> weights = Vector<double>::Constant(sequences, weight);
  const auto result = flowmatch::sample_discrete_guided(oracle, path, source, x0, labels, weights,
                                                        with_step(1.0 / 128), generator);
  CHECK(result.stats.evaluations == 128);  // one stacked call per step
  return state_counts(joint.marginal(), result.tokens);
}

}  // namespace

static_assert(flowmatch::ConditionalDenoiser<
              flowmatch::LabelledDiscreteJointPosterior<CondOT<double>>, double>);
static_assert(!flowmatch::ConditionalDenoiser<DiscreteJointPosterior<CondOT<double>>, double>);

TEST_CASE("guided_rate: powers with r^0 = 1 and 0^e = 0 for e != 0", "[discrete][guidance]") {
  using flowmatch::guided_rate;
  CHECK(guided_rate(0.3, 0.7, 1.0) == 0.3);  // w = 1: R_cond exactly
  CHECK(guided_rate(0.3, 0.7, 0.0) == 0.7);  // w = 0: R_null exactly
  CHECK(guided_rate(0.0, 0.7, 0.0) == 0.7);  // 0^0 = 1
  CHECK(guided_rate(0.3, 0.0, 1.0) == 0.3);
  CHECK(guided_rate(0.0, 0.7, 0.5) == 0.0);
  CHECK(guided_rate(0.3, 0.0, 2.0) == 0.0);  // 0^(−1) is not +inf: excluded stays excluded
  CHECK(guided_rate(0.0, 0.0, 3.0) == 0.0);
  CHECK_THAT(guided_rate(0.3, 0.2, 2.0), WithinRel(0.09 / 0.2, 1e-15));
  CHECK_THAT(guided_rate(0.36, 0.04, 0.5), WithinRel(std::sqrt(0.36 * 0.04), 1e-15));
}

TEST_CASE("Guided rates match a hand computation; rows sum to zero, >= 0 off the diagonal",
          "[discrete][guidance]") {
  const MixturePath<CondOT<double>> path;  // κ = t: a = 1/(1 − t) = 2 at t = 0.5
  const auto uniform = DiscreteSource<double>::uniform(3);
  Vector<double> t = Vector<double>::Constant(3, 0.5);
  TokenMatrix x_t(1, 3);
  x_t << 0, 2, 1;
  Matrix<double> conditional(3, 3);
  Matrix<double> null(3, 3);
  conditional.col(0) << 0.5, 0.3, 0.2;
  null.col(0) << 0.2, 0.2, 0.6;
  conditional.col(1) << 0.1, 0.0, 0.9;  // a zero rate
  null.col(1) << 0.5, 0.25, 0.25;
  conditional.col(2) << 0.6, 0.1, 0.3;
  null.col(2) << 0.0, 0.4, 0.6;  // a zero null rate under w > 1
  Vector<double> weights(3);
  weights << 2.0, 0.5, 3.0;
  const Matrix<double> rates =
      flowmatch::guided_rates(path, uniform, t, x_t, conditional, null, weights);
  REQUIRE(rates.rows() == 3);
  // Column 0, current 0, w = 2: R(j) = 2·p_c(j)²/p_n(j).
  CHECK_THAT(rates(1, 0), WithinRel(2 * 0.09 / 0.2, 1e-14));
  CHECK_THAT(rates(2, 0), WithinRel(2 * 0.04 / 0.6, 1e-14));
  CHECK_THAT(rates(0, 0), WithinRel(-(0.9 + 2 * 0.04 / 0.6), 1e-14));
  // Column 1, current 2, w = 1/2: R(j) = 2·√(p_c(j)·p_n(j)); token 1 has p_c = 0.
  CHECK_THAT(rates(0, 1), WithinRel(2 * std::sqrt(0.1 * 0.5), 1e-14));
  CHECK(rates(1, 1) == 0.0);
  CHECK_THAT(rates(2, 1), WithinRel(-2 * std::sqrt(0.05), 1e-14));
  // Column 2, current 1, w = 3: token 0 has p_n = 0, so its rate is 0 (not +inf).
  CHECK(rates(0, 2) == 0.0);
  CHECK_THAT(rates(2, 2), WithinRel(2 * std::pow(0.3, 3) / (0.6 * 0.6), 1e-14));

  // Random posteriors, tokens and weights: off-diagonal >= 0, every block sums to zero, and
  // w = 1 and w = 0 give the plain rates of the conditional and the null posterior.
  std::mt19937_64 generator(5);
  for (const auto& source :
       {DiscreteSource<double>::uniform(4), DiscreteSource<double>::masked(4)}) {
    const Index positions = 3;
    const Index sequences = 40;
    const TokenMatrix tokens = random_tokens(positions, sequences, source.states(), generator);
    const Matrix<double> p_conditional =
        random_posterior<double>(4, positions, sequences, generator);
    const Matrix<double> p_null = random_posterior<double>(4, positions, sequences, generator);
    std::uniform_real_distribution<double> uniform(0.0, 4.0);
    Vector<double> times(sequences);
    Vector<double> w(sequences);
    for (Index sequence = 0; sequence < sequences; ++sequence) {
      times(sequence) = uniform(generator) / 4.5;
      w(sequence) = uniform(generator);
    }
    const Matrix<double> guided =
        flowmatch::guided_rates(path, source, times, tokens, p_conditional, p_null, w);
    const Index states = source.states();
    for (Index sequence = 0; sequence < sequences; ++sequence) {
      for (Index position = 0; position < positions; ++position) {
        const auto block = flowmatch::position_distribution(guided, states, position, sequence);
        const Token current = tokens(position, sequence);
        CHECK_THAT(block.sum(), WithinAbs(0.0, 1e-12 * (1 + block.cwiseAbs().maxCoeff())));
        for (Index token = 0; token < states; ++token) {
          if (token != current) CHECK(block(token) >= 0);
        }
      }
    }
    const Matrix<double> ones = flowmatch::guided_rates(path, source, times, tokens, p_conditional,
                                                        p_null, Vector<double>::Ones(sequences));
    const Matrix<double> zeros = flowmatch::guided_rates(path, source, times, tokens, p_conditional,
                                                         p_null, Vector<double>::Zero(sequences));
    CHECK_THAT((ones - flowmatch::mixture_rates(path, source, times, tokens, p_conditional))
                   .cwiseAbs()
                   .maxCoeff(),
               WithinAbs(0.0, 1e-12));
    CHECK_THAT((zeros - flowmatch::mixture_rates(path, source, times, tokens, p_null))
                   .cwiseAbs()
                   .maxCoeff(),
               WithinAbs(0.0, 1e-12));
  }
}

TEST_CASE("The labelled oracle's null posterior is the label-weighted mix of its conditionals",
          "[discrete][guidance][oracle]") {
  // p(x₁ | x_t) = Σ_y p(y | x_t)·p(x₁ | x_t, y), p(y | x_t) ∝ π(y)·Σ_x₁ p(x₁ | y)·p(x_t | x₁).
  const auto joint = labelled_joint();
  const MixturePath<CondOT<double>> path;
  const auto masked = DiscreteSource<double>::masked(vocabulary);
  const flowmatch::LabelledDiscreteJointPosterior<CondOT<double>> oracle(joint, path, masked);
  std::mt19937_64 generator(8);
  const TokenMatrix x_t = random_tokens(length, 30, masked.states(), generator);
  Vector<double> t = Vector<double>::Constant(30, 0.4);
  Matrix<double> null(9, 30);
  oracle(t, x_t, null);
  Matrix<double> mixed = Matrix<double>::Zero(9, 30);
  Vector<double> evidence = Vector<double>::Zero(30);
  for (Token label = 0; label < 2; ++label) {
    Matrix<double> conditional(9, 30);
    oracle(t, x_t, flowmatch::LabelVector::Constant(30, label), conditional);
    const DiscreteJoint& given = joint.conditional(label);
    for (Index sequence = 0; sequence < 30; ++sequence) {
      double likelihood = 0;  // p(x_t | y)
      for (Index index = 0; index < given.sequences(); ++index) {
        double term = given.probabilities()(index);
        for (Index position = 0; position < length; ++position) {
          const Token token = x_t(position, sequence);
          term *=
              token == vocabulary ? 0.6 : (token == given.token_of(index, position) ? 0.4 : 0.0);
        }
        likelihood += term;
      }
      const double weight = joint.label_probabilities()(label) * likelihood;
      mixed.col(sequence) += weight * conditional.col(sequence);
      evidence(sequence) += weight;
    }
  }
  for (Index sequence = 0; sequence < 30; ++sequence) {
    CHECK_THAT(
        (mixed.col(sequence) / evidence(sequence) - null.col(sequence)).cwiseAbs().maxCoeff(),
        WithinAbs(0.0, 1e-14));
  }
}

TEST_CASE("Exact draws of the labelled joint: labels from pi, sequences from p(x | y)",
          "[discrete][guidance][oracle]") {
  const auto joint = labelled_joint();
  std::mt19937_64 generator(77);
  const flowmatch::LabelledTokens drawn = joint.sample(20000, generator);
  Vector<double> label_counts = Vector<double>::Zero(2);
  std::array<TokenMatrix, 2> by_label;
  for (Token label = 0; label < 2; ++label) {
    std::vector<Index> columns;
    for (Index n = 0; n < drawn.labels.size(); ++n) {
      if (drawn.labels(n) == label) columns.push_back(n);
    }
    label_counts(label) = static_cast<double>(columns.size());
    by_label[static_cast<std::size_t>(label)] = drawn.tokens(Eigen::all, columns);
  }
  CHECK(chi_square(label_counts, joint.label_probabilities()) < chi_square_critical(1));
  for (Token label = 0; label < 2; ++label) {
    const Vector<double> counts =
        state_counts(joint.marginal(), by_label[static_cast<std::size_t>(label)]);
    CHECK(chi_square(counts, joint.conditional(label).probabilities()) < chi_square_critical(26));
  }
  // Bad joints.
  CHECK_THROWS_AS(flowmatch::LabelledDiscreteJoint({}, Vector<double>()), std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::LabelledDiscreteJoint({joint.conditional(0), joint.conditional(1)},
                                                   Vector<double>::Constant(2, 0.3)),
                  std::invalid_argument);
  CHECK_THROWS_AS(
      flowmatch::LabelledDiscreteJoint({joint.conditional(0), correlated_joint(),
                                        DiscreteJoint(Vector<double>::Constant(4, 0.25), 2, 2)},
                                       Vector<double>::Constant(3, 1.0 / 3)),
      std::invalid_argument);
  CHECK_THROWS_AS(joint.conditional(2), std::invalid_argument);
}

TEST_CASE("Guided sampling: w = 1 reproduces p(x | y), w = 0 reproduces p(x) (chi-square)",
          "[discrete][guidance][sampler]") {
  const auto joint = labelled_joint();
  const Index sequences = 12000;
  const double critical = chi_square_critical(26);
  const auto masked = DiscreteSource<double>::masked(vocabulary);
  const auto uniform = DiscreteSource<double>::uniform(vocabulary);
  const auto check = [&](const char* name, const Vector<double>& counts,
                         const Vector<double>& expected, const Vector<double>& other) {
    const double statistic = chi_square(counts, expected);
    INFO(name << ": chi-square " << statistic << " (critical " << critical << "), TV "
              << total_variation(counts, expected) << ", TV to the other target "
              << total_variation(counts, other));
    CHECK(statistic < critical);
    // The test can fail: the other distribution is rejected by far.
    CHECK(chi_square(counts, other) > 10 * critical);
  };
  const Vector<double>& marginal = joint.marginal().probabilities();
  check("w = 1, label 0, masked",
        guided_counts<CondOT<double>>(joint, masked, 0, 1.0, sequences, 2024),
        joint.conditional(0).probabilities(), marginal);
  check("w = 1, label 1, uniform",
        guided_counts<CondOT<double>>(joint, uniform, 1, 1.0, sequences, 2025),
        joint.conditional(1).probabilities(), marginal);
  check("w = 0, masked", guided_counts<CondOT<double>>(joint, masked, 1, 0.0, sequences, 2026),
        marginal, joint.conditional(1).probabilities());
}

TEMPLATE_TEST_CASE(
    "Guided sampling of a batch mixing labels and weights equals separate runs bit for bit",
    "[discrete][guidance][sampler]", double, float) {
  using Scalar = TestType;
  const auto joint = labelled_joint();
  const MixturePath<CondOT<Scalar>> path;
  const auto uniform = DiscreteSource<Scalar>::uniform(vocabulary);
  const flowmatch::LabelledDiscreteJointPosterior<CondOT<Scalar>> oracle(joint, path, uniform);
  const Index sequences = 12;
  std::mt19937_64 draws(17);
  const TokenMatrix x0 = uniform.sample(length, sequences, draws);
  flowmatch::LabelVector labels(sequences);
  Vector<Scalar> weights(sequences);
  for (Index sequence = 0; sequence < sequences; ++sequence) {
    labels(sequence) = sequence % 2;
    weights(sequence) = Scalar(0.75) * static_cast<Scalar>(sequence % 5);  // 0, 0.75, …, 3
  }
  auto options = with_step(Scalar(1.0 / 32));
  options.eta = [](Scalar t) { return 2 * t * (1 - t); };
  options.return_trajectory = true;
  const std::array<Scalar, 3> grid{Scalar(0), Scalar(0.5), Scalar(1)};
  std::mt19937_64 generator(99);
  const auto batch =
      flowmatch::sample_discrete_guided(oracle, path, uniform, x0, labels, weights,
                                        std::span<const Scalar>(grid), options, generator);
  CHECK(batch.stats.jumps > 0);
  for (Index sequence = 0; sequence < sequences; ++sequence) {
    auto single = options;
    single.first_sequence_index = static_cast<std::uint64_t>(sequence);
    std::mt19937_64 same(99);
    const auto alone = flowmatch::sample_discrete_guided(
        oracle, path, uniform, x0.col(sequence), labels.segment(sequence, 1),
        weights.segment(sequence, 1), std::span<const Scalar>(grid), single, same);
    CHECK(alone.tokens.col(0) == batch.tokens.col(sequence));
    CHECK(alone.trajectory[1].col(0) == batch.trajectory[1].col(sequence));
  }
  // The labels and weights matter: the same run with every label flipped differs.
  std::mt19937_64 again(99);
  const flowmatch::LabelVector flipped = flowmatch::LabelVector::Ones(sequences) - labels;
  const auto other = flowmatch::sample_discrete_guided(
      oracle, path, uniform, x0, flipped, weights, std::span<const Scalar>(grid), options, again);
  CHECK(other.tokens != batch.tokens);
}

TEST_CASE("Guided sampling rejects bad labels, weights and lengths with typed errors",
          "[discrete][guidance][errors]") {
  const auto joint = labelled_joint();
  const MixturePath<CondOT<double>> path;
  const auto masked = DiscreteSource<double>::masked(vocabulary);
  const flowmatch::LabelledDiscreteJointPosterior<CondOT<double>> oracle(joint, path, masked);
  const TokenMatrix x0 = TokenMatrix::Constant(length, 3, vocabulary);
  flowmatch::LabelVector labels = flowmatch::LabelVector::Zero(3);
  Vector<double> weights = Vector<double>::Ones(3);
  const auto options = with_step(0.25);
  std::mt19937_64 generator(1);
  const auto run = [&] {
    return flowmatch::sample_discrete_guided(oracle, path, masked, x0, labels, weights, options,
                                             generator);
  };
  CHECK_NOTHROW(run());
  labels(2) = 2;  // the null label is not a class to guide towards
  CHECK_THROWS_WITH(run(),
                    Contains("sample_discrete_guided: labels(2) is 2") && Contains("[0, 2)"));
  labels(2) = -1;
  CHECK_THROWS_AS(run(), std::invalid_argument);
  labels = flowmatch::LabelVector::Zero(2);
  CHECK_THROWS_WITH(run(), Contains("sample_discrete_guided: labels has 2 entries"));
  labels = flowmatch::LabelVector::Zero(3);
  weights(1) = -0.5;
  CHECK_THROWS_WITH(run(), Contains("sample_discrete_guided: weights(1) is -0.5"));
  weights(1) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_AS(run(), std::invalid_argument);
  weights(1) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(run(), std::invalid_argument);
  weights = Vector<double>::Ones(4);
  CHECK_THROWS_AS(run(), std::invalid_argument);
  weights = Vector<double>::Ones(3);
  CHECK_THROWS_AS(flowmatch::sample_discrete_guided(oracle, path, masked, x0, labels, weights,
                                                    with_step(0.0), generator),
                  std::invalid_argument);
  // The oracle itself rejects labels beyond the null label.
  Matrix<double> posterior(9, 3);
  CHECK_THROWS_AS(oracle(Vector<double>::Constant(3, 0.5), x0,
                         flowmatch::LabelVector::Constant(3, 3), posterior),
                  std::invalid_argument);
  // guided_rates: posteriors that are not distributions, weights of the wrong length.
  const TokenMatrix one = TokenMatrix::Zero(1, 1);
  const auto uniform = DiscreteSource<double>::uniform(3);
  Matrix<double> good = Matrix<double>::Constant(3, 1, 1.0 / 3);
  CHECK_THROWS_AS(
      flowmatch::guided_rates(path, uniform, Vector<double>::Constant(1, 0.5), one, good,
                              Matrix<double>::Constant(3, 1, 0.5), Vector<double>::Ones(1)),
      std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::guided_rates(path, uniform, Vector<double>::Constant(1, 0.5), one,
                                          good, good, Vector<double>::Ones(2)),
                  std::invalid_argument);
}

}  // namespace test_discrete
