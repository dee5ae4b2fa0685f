// Tests of the cheap score (from a velocity) and the exact score of a flow's density, against
// the Gaussian-mixture oracle's closed-form scores and finite differences of log-likelihoods.
#include <catch2/catch.hpp>

#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "flowmatch/autodiff/finite_differences.hpp"
#include "flowmatch/likelihood/conditioned_field.hpp"
#include "flowmatch/likelihood/log_likelihood.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/oracle/gaussian_mixture_path.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/scheduler/cosine.hpp"
#include "flowmatch/score/exact_score.hpp"
#include "flowmatch/score/velocity_score.hpp"
#include "generic_mixture_field.hpp"

namespace test_score {

namespace {

using Catch::Matchers::WithinAbs;
using flowmatch::ConstMatrixRef;
using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::MatrixRef;
using flowmatch::Method;
using flowmatch::SolverOptions;
using flowmatch::Vector;

SolverOptions<double> tight_dopri5() {
  SolverOptions<double> options;
  options.method = Method::dopri5;
  options.rtol = 1e-10;
  options.atol = 1e-10;
  return options;
}

Matrix<double> random_normal(Index rows, Index cols, std::mt19937_64& generator) {
  std::normal_distribution<double> normal;
  Matrix<double> result(rows, cols);
  for (Index j = 0; j < result.size(); ++j) result(j) = normal(generator);
  return result;
}

// A 3-D mixture with full covariances.
flowmatch::GaussianMixture<double> spatial_mixture() {
  Vector<double> weights(2);
  weights << 0.3, 0.7;
  Matrix<double> means(3, 2);
  means << 1.0, -0.5,  //
      0.0, 0.8,        //
      -1.0, 0.4;
  Matrix<double> first(3, 3);
  first << 0.6, 0.1, 0.0,  //
      0.1, 0.5, 0.2,       //
      0.0, 0.2, 0.7;
  Matrix<double> second = 0.4 * Matrix<double>::Identity(3, 3);
  second(0, 2) = second(2, 0) = -0.1;
  return flowmatch::GaussianMixture<double>::with_covariances(weights, means, {first, second});
}

double max_difference(const Matrix<double>& a, const Matrix<double>& b) {
  return (a - b).cwiseAbs().maxCoeff();
}

// Offers the derivatives the exact score needs as members (counting their calls), computed by
// forward mode on the generic field: shows that members are detected and used.
template <class Field>
struct FieldWithMembers {
  Field field;
  mutable int vjp_calls = 0;
  mutable int gradient_calls = 0;
  void operator()(double t, const ConstMatrixRef<double>& x, MatrixRef<double> out) const {
    flowmatch::evaluate_velocity<double>(field, t, x, out);
  }
  void vjp(double t, const ConstMatrixRef<double>& x, const ConstMatrixRef<double>& cotangent,
           MatrixRef<double> out) const {
    ++vjp_calls;
    flowmatch::vector_jacobian_product<double>(field, t, x, cotangent, out);
  }
  void divergence_gradient(double t, const ConstMatrixRef<double>& x, MatrixRef<double> out) const {
    ++gradient_calls;
    flowmatch::divergence_gradient<double>(field, t, x, out);
  }
};

}  // namespace

TEST_CASE("the cheap score equals the analytic score of p_t", "[score]") {
  std::mt19937_64 generator(2);
  {
    const flowmatch::GaussianMixturePath<flowmatch::CondOT<double>> oracle(spatial_mixture());
    const flowmatch::VelocityScore score_field(std::cref(oracle), flowmatch::CondOT<double>{});
    for (const double t : {0.1, 0.5, 0.9}) {
      const Matrix<double> x = oracle.marginal(t).sample(24, generator);
      const Matrix<double> expected = oracle.score(t, x);
      CHECK(max_difference(score_field.score(t, x), expected) < 1e-10);
      const flowmatch::AffinePath<flowmatch::CondOT<double>> path;
      CHECK(max_difference(flowmatch::velocity_score(oracle, path, t, x), expected) < 1e-10);
      // It still evaluates as the wrapped field.
      CHECK(max_difference(flowmatch::evaluate_velocity<double>(score_field, t, x),
                           flowmatch::evaluate_velocity<double>(oracle, t, x)) == 0.0);
    }
  }
  {
    const flowmatch::GaussianMixturePath<flowmatch::Cosine<double>> oracle(spatial_mixture());
    const flowmatch::VelocityScore score_field(std::cref(oracle), flowmatch::Cosine<double>{});
    for (const double t : {0.1, 0.5, 0.9}) {
      const Matrix<double> x = oracle.marginal(t).sample(24, generator);
      CHECK(max_difference(score_field.score(t, x), oracle.score(t, x)) < 1e-10);
    }
  }
}

TEST_CASE("the cheap score rejects t = 1, t outside [0, 1] and bad batches", "[score]") {
  const flowmatch::GaussianMixturePath<flowmatch::CondOT<double>> oracle(spatial_mixture());
  const flowmatch::VelocityScore score_field(std::cref(oracle), flowmatch::CondOT<double>{});
  const Matrix<double> x = Matrix<double>::Zero(3, 4);
  CHECK_THROWS_AS(score_field.score(1.0, x), std::domain_error);  // σ_1 = 0
  CHECK_THROWS_WITH(score_field.score(1.0, x), Catch::Matchers::Contains("sigma_t = 0"));
  CHECK_THROWS_AS(score_field.score(1.5, x), std::domain_error);
  CHECK_THROWS_AS(score_field.score(-0.1, x), std::domain_error);
  CHECK_THROWS_AS(score_field.score(std::nan(""), x), std::domain_error);
  CHECK_THROWS_AS(score_field.score(0.5, Matrix<double>::Zero(0, 4)), std::invalid_argument);
  Matrix<double> bad = x;
  bad(2, 3) = std::nan("");
  CHECK_THROWS_AS(score_field.score(0.5, bad), std::invalid_argument);
}

TEST_CASE("the exact score of the flow equals the mixture's analytic score", "[score]") {
  const auto mixture = flowmatch_test::DiagonalMixture::two_dimensional();
  const auto field = mixture.field();
  const auto data = mixture.oracle();
  std::mt19937_64 generator(4);
  const Matrix<double> x = data.sample(16, generator);
  const auto result = flowmatch::exact_score(field, 1.0, x, tight_dopri5());
  CHECK(max_difference(result.points, x) < 1e-8);
  CHECK(max_difference(result.score, data.score(x)) < 1e-5);
  CHECK(result.encode_stats.nfe > 0);
  CHECK(result.stats.nfe > 0);

  SECTION("at an intermediate time, the score of p_t") {
    const flowmatch::GaussianMixturePath<flowmatch::CondOT<double>> oracle(data);
    const Matrix<double> points = oracle.marginal(0.5).sample(8, generator);
    const auto halfway = flowmatch::exact_score(field, 0.5, points, tight_dopri5());
    CHECK(max_difference(halfway.score, oracle.score(0.5, points)) < 1e-5);
    // At t = 0, the source's score.
    const auto source = flowmatch::exact_score(field, 0.0, points, tight_dopri5());
    CHECK(max_difference(source.score, -points) == 0.0);
  }
  SECTION("members vjp and divergence_gradient are used when offered") {
    const FieldWithMembers<decltype(field)> with_members{field};
    static_assert(flowmatch::HasVjp<decltype(with_members), double>);
    static_assert(flowmatch::HasDivergenceGradient<decltype(with_members), double>);
    const auto member_result = flowmatch::exact_score(with_members, 1.0, x, tight_dopri5());
    CHECK(with_members.vjp_calls > 0);
    CHECK(with_members.gradient_calls == with_members.vjp_calls);
    CHECK(max_difference(member_result.score, result.score) < 1e-12);
  }
  SECTION("the oracle's closed-form vjp and divergence gradient give the analytic score") {
    const flowmatch::GaussianMixturePath<flowmatch::CondOT<double>> oracle(data);
    static_assert(flowmatch::HasDivergenceGradient<decltype(oracle), double>);
    const auto oracle_result = flowmatch::exact_score(oracle, 1.0, x, tight_dopri5());
    CHECK(max_difference(oracle_result.score, data.score(x)) < 1e-7);
  }
  SECTION("finite differences by explicit opt-in") {
    // The wrapper differences vjp and ∇div of the oracle (ignoring its exact members). Per
    // evaluation its ∇div is off by ~1e-7 (see test_likelihood), integrated over [0, 1]: a
    // tolerance of 1e-4.
    const flowmatch::GaussianMixturePath<flowmatch::CondOT<double>> oracle(data);
    const auto differenced = flowmatch::finite_differences<double>(std::cref(oracle));
    const auto approximate = flowmatch::exact_score(differenced, 1.0, x, tight_dopri5());
    CHECK(max_difference(approximate.score, data.score(x)) < 1e-4);
  }
}

/// Checks @p score (d×N) against central differences of the ODE log-likelihood @p log_prob
/// (a function of a d×N batch returning log p_1 per column) computed with fixed-step rk4
/// (h = 1/100), which is a smooth function of x: with step δ = 1e-4, truncation
/// δ²/6·|∂³log p| ~ 1e-9, rounding ε·|log p|/δ ~ 1e-11; rk4's O(h⁴) ≈ 1e-8 error in log p has a
/// gradient of the same order, so the two agree to 1e-6.
template <class LogProb>
void check_gradient_of_log_likelihood(const Matrix<double>& score, const Matrix<double>& x,
                                      const LogProb& log_prob) {
  SolverOptions<double> fixed;
  fixed.method = Method::rk4;
  fixed.step_size = 0.01;
  const double delta = 1e-4;
  for (Index j = 0; j < x.rows(); ++j) {
    Matrix<double> plus = x;
    Matrix<double> minus = x;
    plus.row(j).array() += delta;
    minus.row(j).array() -= delta;
    const Vector<double> difference =
        (log_prob(plus, fixed) - log_prob(minus, fixed)) / (2 * delta);
    CHECK((score.row(j).transpose() - difference).cwiseAbs().maxCoeff() < 1e-6);
  }
}

TEST_CASE("a time grid gives the exact score of p_t at every grid time", "[score]") {
  const auto mixture = flowmatch_test::DiagonalMixture::two_dimensional();
  const auto field = mixture.field();
  const flowmatch::GaussianMixturePath<flowmatch::CondOT<double>> oracle(mixture.oracle());
  std::mt19937_64 generator(8);
  const Matrix<double> points = oracle.marginal(0.8).sample(12, generator);
  const std::vector<double> times{0.0, 0.25, 0.5, 0.8};
  const auto result = flowmatch::exact_score(field, times, points, tight_dopri5());
  REQUIRE(result.times == times);
  REQUIRE(result.score_trajectory.size() == times.size());
  for (std::size_t k = 0; k < times.size(); ++k) {
    CHECK(max_difference(result.score_trajectory[k], oracle.score(times[k], result.trajectory[k])) <
          1e-5);
  }
  CHECK(max_difference(result.trajectory.back(), points) < 1e-8);
  CHECK(result.score == result.score_trajectory.back());

  const auto sampled = flowmatch::sample_with_score(
      field, result.noise, std::vector<double>{0.0, 0.5, 1.0}, tight_dopri5());
  CHECK(max_difference(sampled.score_trajectory[1], oracle.score(0.5, sampled.trajectory[1])) <
        1e-5);
  CHECK_THROWS_AS(flowmatch::exact_score(field, std::vector<double>{0.2, 0.8}, points),
                  std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::exact_score(field, std::vector<double>{0.0, 0.9, 0.8}, points),
                  std::invalid_argument);
}

TEST_CASE("the exact score is the gradient of the ODE log-likelihood", "[score]") {
  const auto mixture = flowmatch_test::DiagonalMixture::two_dimensional();
  const auto field = mixture.field();
  std::mt19937_64 generator(6);
  const Matrix<double> x = mixture.oracle().sample(6, generator);
  const auto result = flowmatch::exact_score(field, 1.0, x, tight_dopri5());
  check_gradient_of_log_likelihood(
      result.score, x, [&](const Matrix<double>& points, const SolverOptions<double>& options) {
        return flowmatch::log_likelihood(field, points, options).log_prob;
      });
}

TEST_CASE("sampling returns the exact score of each sample in the same pass", "[score]") {
  const auto mixture = flowmatch_test::DiagonalMixture::two_dimensional();
  std::mt19937_64 generator(8);
  const Matrix<double> noise = random_normal(2, 16, generator);
  const auto result = flowmatch::sample_with_score(mixture.field(), noise, tight_dopri5());
  CHECK(result.noise == noise);
  CHECK(max_difference(result.score, mixture.oracle().score(result.points)) < 1e-5);
  const auto plain = flowmatch::sample(mixture.field(), noise, tight_dopri5());
  CHECK(max_difference(result.points, plain.state) < 1e-8);
  CHECK(result.encode_stats.nfe == 0);
}

TEST_CASE("a custom source supplies its score", "[score]") {
  // Source N(0, 4 I) and u = 0: the score stays −x/4.
  struct WideNormal {
    Matrix<double> score(const Matrix<double>& x) const { return -x / 4; }
  };
  const auto still = [](auto, const auto& x) {
    using T = typename std::decay_t<decltype(x)>::Scalar;
    return Matrix<T>::Zero(x.rows(), x.cols()).eval();
  };
  Matrix<double> x(2, 2);
  x << 1, 2, 3, 4;
  const auto result = flowmatch::exact_score(still, 1.0, x, tight_dopri5(), WideNormal{});
  CHECK(max_difference(result.score, -x / 4) < 1e-14);
  struct BadSource {
    Matrix<double> score(const Matrix<double>& x) const { return x.leftCols(1); }
  };
  CHECK_THROWS_AS(flowmatch::exact_score(still, 1.0, x, tight_dopri5(), BadSource{}),
                  std::invalid_argument);
}

TEST_CASE("bad input to the exact score throws", "[score]") {
  const auto field = flowmatch_test::DiagonalMixture::two_dimensional().field();
  Matrix<double> x = Matrix<double>::Zero(2, 3);
  CHECK_THROWS_AS(flowmatch::exact_score(field, 1.5, x), std::domain_error);
  CHECK_THROWS_AS(flowmatch::exact_score(field, -0.5, x), std::domain_error);
  CHECK_THROWS_AS(flowmatch::exact_score(field, 1.0, Matrix<double>(2, 0)), std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::sample_with_score(field, Matrix<double>(0, 2)), std::invalid_argument);
  x(0, 1) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(
      flowmatch::exact_score(field, 1.0, x),
      Catch::Matchers::Contains("exact_score: x") && Catch::Matchers::Contains("column 1"));
  CHECK_THROWS_AS(flowmatch::sample_with_score(field, x), std::invalid_argument);
}

TEST_CASE("the exact score of an Mlp uses its exact derivatives and is the gradient of log p",
          "[score]") {
  // An Mlp offers vjp and divergence_gradient as members: no finite differences anywhere. The
  // check is the one above: central differences of log p_1 from fixed-step rk4 (h = 1/100),
  // whose error analysis (δ = 1e-4: truncation ~1e-9, rounding ~1e-11, rk4 ~1e-8) holds for
  // this smooth network (PyTorch's initialisation, O(1) derivatives) as for the mixture.
  static_assert(flowmatch::HasVjp<flowmatch::Mlp<double>, double>);
  static_assert(flowmatch::HasDivergenceGradient<flowmatch::Mlp<double>, double>);
  std::mt19937_64 generator(10);
  for (const flowmatch::Activation activation :
       {flowmatch::Activation::silu, flowmatch::Activation::tanh, flowmatch::Activation::gelu}) {
    INFO(flowmatch::activation_name(activation));
    const flowmatch::Mlp<double> mlp(
        flowmatch::MlpConfig{2, 0, {16, 16}, activation, flowmatch::TimeEmbedding{2}}, generator);
    const Matrix<double> x = random_normal(2, 6, generator);
    const auto result = flowmatch::exact_score(mlp, 1.0, x, tight_dopri5());
    CHECK(max_difference(result.points, x) < 1e-8);
    check_gradient_of_log_likelihood(
        result.score, x, [&](const Matrix<double>& points, const SolverOptions<double>& options) {
          return flowmatch::log_likelihood(mlp, points, options).log_prob;
        });
  }
}

TEST_CASE("the exact score of a conditional Mlp with bound conditions is the gradient of log p",
          "[score]") {
  // ConditionedField passes vjp and divergence_gradient through with each sample's condition;
  // the check is the central difference of the conditional log p_1 as in the case above.
  using Conditioned = flowmatch::ConditionedField<double, flowmatch::Mlp<double>>;
  static_assert(flowmatch::HasDivergenceGradient<Conditioned, double>);
  std::mt19937_64 generator(11);
  const flowmatch::Mlp<double> mlp(
      flowmatch::MlpConfig{2, 3, {16, 16}, flowmatch::Activation::silu, flowmatch::TimeEmbedding{}},
      generator);
  const Matrix<double> x = random_normal(2, 5, generator);
  const Matrix<double> condition = random_normal(3, 5, generator);
  const Conditioned conditioned(mlp, condition);
  const auto result = flowmatch::exact_score(conditioned, 1.0, x, tight_dopri5());
  check_gradient_of_log_likelihood(
      result.score, x, [&](const Matrix<double>& points, const SolverOptions<double>& options) {
        return flowmatch::conditional_log_likelihood(mlp, condition, points, options).log_prob;
      });
}

}  // namespace test_score
