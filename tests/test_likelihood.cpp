// Tests of dual numbers, field derivatives, divergence estimators and log-likelihoods, against
// closed forms: the Gaussian-mixture oracle (an exact field whose flow has density p_t),
// derivatives of elementary functions, and measured convergence rates.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <numbers>
#include <random>
#include <span>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include "flowmatch/autodiff/dual.hpp"
#include "flowmatch/autodiff/field_derivatives.hpp"
#include "flowmatch/autodiff/finite_differences.hpp"
#include "flowmatch/field/any_field.hpp"
#include "flowmatch/likelihood/bits_per_dimension.hpp"
#include "flowmatch/likelihood/conditioned_field.hpp"
#include "flowmatch/likelihood/divergence.hpp"
#include "flowmatch/likelihood/log_likelihood.hpp"
#include "flowmatch/oracle/gaussian_mixture_path.hpp"
#include "flowmatch/parallel/parallel_field.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/score/exact_score.hpp"
#include "generic_mixture_field.hpp"
#include "sde_support.hpp"

namespace test_likelihood {

namespace {

using Catch::Matchers::WithinAbs;
using Catch::Matchers::WithinRel;
using flowmatch::ConstMatrixRef;
using flowmatch::Dual;
using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::MatrixRef;
using flowmatch::Method;
using flowmatch::SolverOptions;
using flowmatch::Vector;
using MixturePath = flowmatch::GaussianMixturePath<flowmatch::CondOT<double>>;
using D = Dual<double>;

// A 2-D mixture with full covariances.
flowmatch::GaussianMixture<double> planar_mixture() {
  Vector<double> weights(2);
  weights << 0.6, 0.4;
  Matrix<double> means(2, 2);
  means << -1.0, 1.2,  //
      0.3, -0.8;
  Matrix<double> first(2, 2);
  first << 0.5, 0.2,  //
      0.2, 0.4;
  Matrix<double> second(2, 2);
  second << 0.3, -0.1,  //
      -0.1, 0.6;
  return flowmatch::GaussianMixture<double>::with_covariances(weights, means, {first, second});
}

// A 16-D mixture of two components with random full covariances (A Aᵀ/d + 0.2 I).
flowmatch::GaussianMixture<double> high_dimensional_mixture() {
  constexpr Index dim = 16;
  std::mt19937_64 generator(7);
  std::normal_distribution<double> normal;
  const auto random_matrix = [&](Index rows, Index cols) {
    Matrix<double> result(rows, cols);
    for (Index j = 0; j < result.size(); ++j) result(j) = normal(generator);
    return result;
  };
  std::vector<Matrix<double>> covariances;
  for (int k = 0; k < 2; ++k) {
    const Matrix<double> factor = random_matrix(dim, dim);
    covariances.emplace_back(factor * factor.transpose() / dim +
                             0.2 * Matrix<double>::Identity(dim, dim));
  }
  Vector<double> weights(2);
  weights << 0.5, 0.5;
  return flowmatch::GaussianMixture<double>::with_covariances(weights, random_matrix(dim, 2),
                                                              covariances);
}

SolverOptions<double> tight_dopri5() {
  SolverOptions<double> options;
  options.method = Method::dopri5;
  options.rtol = 1e-10;
  options.atol = 1e-10;
  return options;
}

// A field with no derivative members, not generic over its scalar type.
struct OpaqueField {
  void operator()(double t, const ConstMatrixRef<double>& x, MatrixRef<double> out) const {
    out = -t * x;
  }
};

Matrix<double> random_normal(Index rows, Index cols, std::mt19937_64& generator) {
  std::normal_distribution<double> normal;
  Matrix<double> result(rows, cols);
  for (Index j = 0; j < result.size(); ++j) result(j) = normal(generator);
  return result;
}

}  // namespace

TEST_CASE("dual numbers differentiate every supported function", "[dual]") {
  const double x = 0.7;
  const D seed(x, 1.0);
  const auto check = [](const D& result, double value, double derivative) {
    CHECK_THAT(result.value, WithinRel(value, 1e-15));
    CHECK_THAT(result.derivative, WithinRel(derivative, 1e-14));
  };
  check(seed * seed + 3.0 * seed, x * x + 3 * x, 2 * x + 3);
  check(1.0 / seed, 1 / x, -1 / (x * x));
  check((seed - 2.0) / (seed + 1.0), (x - 2) / (x + 1), 3 / ((x + 1) * (x + 1)));
  check(-seed, -x, -1);
  check(flowmatch::abs(-seed), x, 1);
  check(flowmatch::sqrt(seed), std::sqrt(x), 0.5 / std::sqrt(x));
  check(flowmatch::cbrt(seed), std::cbrt(x), 1 / (3 * std::cbrt(x) * std::cbrt(x)));
  check(flowmatch::exp(seed), std::exp(x), std::exp(x));
  check(flowmatch::expm1(seed), std::expm1(x), std::exp(x));
  check(flowmatch::log(seed), std::log(x), 1 / x);
  check(flowmatch::log1p(seed), std::log1p(x), 1 / (1 + x));
  check(flowmatch::pow(seed, 2.5), std::pow(x, 2.5), 2.5 * std::pow(x, 1.5));
  check(flowmatch::pow(seed, D(1.5, 0.0)), std::pow(x, 1.5), 1.5 * std::pow(x, 0.5));
  check(flowmatch::sin(seed), std::sin(x), std::cos(x));
  check(flowmatch::cos(seed), std::cos(x), -std::sin(x));
  check(flowmatch::tan(seed), std::tan(x), 1 / (std::cos(x) * std::cos(x)));
  check(flowmatch::sinh(seed), std::sinh(x), std::cosh(x));
  check(flowmatch::cosh(seed), std::cosh(x), std::sinh(x));
  check(flowmatch::tanh(seed), std::tanh(x), 1 / (std::cosh(x) * std::cosh(x)));
  check(flowmatch::atan(seed), std::atan(x), 1 / (1 + x * x));
  check(flowmatch::erf(seed), std::erf(x), 2 / std::sqrt(std::numbers::pi) * std::exp(-x * x));
  check(flowmatch::square(seed), x * x, 2 * x);
  // d/dy of x^y at y = 1.5 is x^y log x.
  const D exponent(1.5, 1.0);
  check(flowmatch::pow(D(x, 0.0), exponent), std::pow(x, 1.5), std::pow(x, 1.5) * std::log(x));
  CHECK(flowmatch::isfinite(seed));
  CHECK(!flowmatch::isfinite(D(x, std::numeric_limits<double>::infinity())));
  CHECK(flowmatch::isnan(D(std::nan(""), 0.0)));
  CHECK(D(1.0, 5.0) < D(2.0, -5.0));
  CHECK(flowmatch::max(D(1.0, 5.0), D(2.0, -5.0)).derivative == -5.0);
}

TEST_CASE("nested duals give second derivatives", "[dual]") {
  // f(x) = exp(x)·sin(x): f'' = 2·exp(x)·cos(x).
  const double x = 0.4;
  using DD = Dual<D>;
  const DD seed(D(x, 1.0), D(1.0, 0.0));
  const DD result = flowmatch::exp(seed) * flowmatch::sin(seed);
  CHECK_THAT(result.value.value, WithinRel(std::exp(x) * std::sin(x), 1e-15));
  CHECK_THAT(result.value.derivative, WithinRel(std::exp(x) * (std::sin(x) + std::cos(x)), 1e-14));
  CHECK_THAT(result.derivative.derivative, WithinRel(2 * std::exp(x) * std::cos(x), 1e-14));
  CHECK(flowmatch::real_value(result) == result.value.value);
}

TEST_CASE("a generic lambda with exp, tanh and sqrt works on Eigen matrices of duals", "[dual]") {
  const auto function = [](const auto& x) {
    using T = typename std::decay_t<decltype(x)>::Scalar;
    return ((x.array().exp() * x.array().tanh() + x.array().sqrt()) / T(2)).matrix().eval();
  };
  Matrix<double> x(2, 3);
  x << 0.1, 0.5, 0.9,  //
      1.3, 1.7, 2.1;
  const Matrix<D> x_dual = x.unaryExpr([](double value) { return D(value, 1.0); });
  const Matrix<D> result = function(x_dual);
  for (Index j = 0; j < x.size(); ++j) {
    const double v = x(j);
    const double expected =
        0.5 * (std::exp(v) * std::tanh(v) + std::exp(v) / (std::cosh(v) * std::cosh(v)) +
               0.5 / std::sqrt(v));
    CHECK_THAT(result(j).value, WithinRel(function(x)(j), 1e-15));
    CHECK_THAT(result(j).derivative, WithinRel(expected, 1e-14));
  }
  // Mixed expressions with the base type, and reductions.
  const Matrix<D> scaled = 2.0 * x_dual;
  CHECK(scaled(0, 1).derivative == 2.0);
  CHECK_THAT(x_dual.squaredNorm().derivative, WithinRel(2 * x.sum(), 1e-15));
}

TEST_CASE("forward mode gives the oracle's divergence, jvp and vjp", "[derivatives]") {
  const auto mixture = flowmatch_test::DiagonalMixture::two_dimensional();
  const auto field = mixture.field();
  const MixturePath oracle(mixture.oracle());
  static_assert(flowmatch::ForwardDifferentiable<decltype(field), double>);
  static_assert(flowmatch::TwiceForwardDifferentiable<decltype(field), double>);
  static_assert(!flowmatch::ForwardDifferentiable<OpaqueField, double>);
  static_assert(!flowmatch::ForwardDifferentiable<MixturePath, double>);
  std::mt19937_64 generator(3);
  const Matrix<double> x = 1.5 * random_normal(2, 20, generator);
  const Matrix<double> direction = random_normal(2, 20, generator);
  for (const double t : {0.0, 0.3, 0.8, 1.0}) {
    const Matrix<double> velocity = flowmatch::evaluate_velocity<double>(field, t, x);
    CHECK((velocity - flowmatch::evaluate_velocity<double>(oracle, t, x)).cwiseAbs().maxCoeff() <
          1e-12);
    Vector<double> divergence(20);
    Vector<double> expected(20);
    flowmatch::exact_divergence<double>(field, t, x, divergence);
    oracle.divergence(t, x, expected);
    CHECK((divergence - expected).cwiseAbs().maxCoeff() < 1e-12);

    Matrix<double> product(2, 20);
    Matrix<double> expected_product(2, 20);
    flowmatch::jacobian_vector_product<double>(field, t, x, direction, product);
    oracle.jvp(t, x, direction, expected_product);
    CHECK((product - expected_product).cwiseAbs().maxCoeff() < 1e-12);
    flowmatch::vector_jacobian_product<double>(field, t, x, direction, product);
    oracle.vjp(t, x, direction, expected_product);
    CHECK((product - expected_product).cwiseAbs().maxCoeff() < 1e-12);
  }
}

TEST_CASE("nested forward mode gives the gradient of the divergence", "[derivatives]") {
  // Compared with central differences of the oracle's closed-form divergence, step h = 1e-4:
  // truncation h²/6·|∂³div| ~ 1e-8, rounding ε·|div|/h ~ 1e-12.
  const auto mixture = flowmatch_test::DiagonalMixture::two_dimensional();
  const MixturePath oracle(mixture.oracle());
  std::mt19937_64 generator(5);
  const Matrix<double> x = random_normal(2, 10, generator);
  const double t = 0.6;
  const double h = 1e-4;
  Matrix<double> gradient(2, 10);
  flowmatch::divergence_gradient<double>(mixture.field(), t, x, gradient);
  for (Index j = 0; j < 2; ++j) {
    Matrix<double> plus = x;
    Matrix<double> minus = x;
    plus.row(j).array() += h;
    minus.row(j).array() -= h;
    Vector<double> up(10);
    Vector<double> down(10);
    oracle.divergence(t, plus, up);
    oracle.divergence(t, minus, down);
    const Vector<double> difference = (up - down) / (2 * h);
    CHECK((gradient.row(j).transpose() - difference).cwiseAbs().maxCoeff() < 1e-6);
  }
}

TEST_CASE("finite differences are an explicit opt-in with documented accuracy", "[derivatives]") {
  // First differences with h = ε^{1/3}: error ~ h²|u'''| + ε|u|/h ~ 1e-10; second (∇div) with
  // H = ε^{1/4}: error ~ H²|∂³div| + ε|u|/(hH) ~ 1e-7.
  const auto mixture = flowmatch_test::DiagonalMixture::two_dimensional();
  const MixturePath oracle(mixture.oracle());
  const auto wrapped = flowmatch::finite_differences<double>(OpaqueField{});
  static_assert(flowmatch::HasDivergence<decltype(wrapped), double>);
  const auto differenced = flowmatch::finite_differences<double>(std::cref(oracle));
  std::mt19937_64 generator(9);
  const Matrix<double> x = random_normal(2, 12, generator);
  const Matrix<double> direction = random_normal(2, 12, generator);
  const double t = 0.7;
  Vector<double> divergence(12);
  Vector<double> expected(12);
  differenced.divergence(t, x, divergence);
  oracle.divergence(t, x, expected);
  CHECK((divergence - expected).cwiseAbs().maxCoeff() < 1e-7);
  Matrix<double> product(2, 12);
  Matrix<double> expected_product(2, 12);
  differenced.jvp(t, x, direction, product);
  oracle.jvp(t, x, direction, expected_product);
  CHECK((product - expected_product).cwiseAbs().maxCoeff() < 1e-7);
  differenced.vjp(t, x, direction, product);
  oracle.vjp(t, x, direction, expected_product);
  CHECK((product - expected_product).cwiseAbs().maxCoeff() < 1e-7);
  Matrix<double> gradient(2, 12);
  differenced.divergence_gradient(t, x, gradient);
  flowmatch::divergence_gradient<double>(mixture.field(), t, x, expected_product);
  CHECK((gradient - expected_product).cwiseAbs().maxCoeff() < 1e-5);
  // The opaque field: u = −t x has divergence −t·d.
  Vector<double> opaque(12);
  wrapped.divergence(0.5, x, opaque);
  CHECK((opaque.array() + 1.0).abs().maxCoeff() < 1e-9);
  CHECK_THROWS_AS(flowmatch::finite_differences<double>(OpaqueField{}, 0.0), std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::finite_differences<double>(OpaqueField{}, 1e-5, -1.0),
                  std::invalid_argument);
}

TEST_CASE("ODE log-likelihood equals the mixture's log-density in 2-D", "[likelihood]") {
  const MixturePath oracle(planar_mixture());
  std::mt19937_64 generator(11);
  const Matrix<double> x = oracle.data().sample(32, generator);
  const auto result = flowmatch::log_likelihood(oracle, x, tight_dopri5());
  const Vector<double> expected = oracle.data().log_prob(x);
  CHECK((result.log_prob - expected).cwiseAbs().maxCoeff() < 1e-6);
  CHECK(result.data == x);
  CHECK(result.noise.rows() == 2);
  CHECK(result.stats.nfe > 0);
  // The encoding is the flow map: sampling it back gives x.
  const auto back = flowmatch::sample(oracle, result.noise, tight_dopri5());
  CHECK((back.state - x).cwiseAbs().maxCoeff() < 1e-7);
  // Bits per dimension of the same.
  const Vector<double> bits = flowmatch::bits_per_dimension(result.log_prob, 2);
  CHECK((bits + expected / (2 * std::numbers::ln2)).cwiseAbs().maxCoeff() < 1e-6);
}

TEST_CASE("ODE log-likelihood equals the mixture's log-density in 16-D, full covariance",
          "[likelihood]") {
  const MixturePath oracle(high_dimensional_mixture());
  std::mt19937_64 generator(13);
  const Matrix<double> x = oracle.data().sample(16, generator);
  const auto result = flowmatch::log_likelihood(oracle, x, tight_dopri5());
  CHECK((result.log_prob - oracle.data().log_prob(x)).cwiseAbs().maxCoeff() < 1e-6);
}

TEST_CASE("the density defaults bound the error of log-likelihoods and scores", "[likelihood]") {
  // Without options, log_likelihood and exact_score use SolverOptions::for_density(): on this
  // mixture they reach errors of about 7e-6 and 1.4e-5, where the sampling default rtol = atol
  // = 1e-5 leaves 2.2e-3 and 1.0e-3 (tests/bench/density_tolerance.cpp).
  const flowmatch::GaussianMixture<double> data = flowmatch_test::sde_data_mixture();
  const MixturePath oracle(data);
  std::mt19937_64 generator(3);
  const Matrix<double> x = data.sample(200, generator);
  const auto likelihood = flowmatch::log_likelihood(oracle, x);
  CHECK((likelihood.log_prob - data.log_prob(x)).cwiseAbs().maxCoeff() < 1e-4);
  const auto score = flowmatch::exact_score(oracle, 1.0, x);
  CHECK((score.score - data.score(x)).cwiseAbs().maxCoeff() < 1e-4);
  // The same calls with the sampling defaults miss these bounds.
  const auto coarse = flowmatch::log_likelihood(oracle, x, SolverOptions<double>{});
  CHECK((coarse.log_prob - data.log_prob(x)).cwiseAbs().maxCoeff() > 1e-4);
}

TEST_CASE("a time grid gives the marginal log-density at every grid time", "[likelihood]") {
  const MixturePath oracle(planar_mixture());
  std::mt19937_64 generator(23);
  const Matrix<double> x = oracle.data().sample(24, generator);
  const std::vector<double> backward{1.0, 0.7, 0.35, 0.0};
  const auto result =
      flowmatch::log_likelihood(oracle, x, std::span<const double>(backward), tight_dopri5());
  REQUIRE(result.times == backward);
  REQUIRE(result.trajectory.size() == backward.size());
  REQUIRE(result.log_prob_trajectory.size() == backward.size());
  // log p_t(x_t) along the trajectory is the closed-form marginal density at x_t.
  for (std::size_t k = 0; k < backward.size(); ++k) {
    const Vector<double> exact = oracle.log_prob(backward[k], result.trajectory[k]);
    CHECK((result.log_prob_trajectory[k] - exact).cwiseAbs().maxCoeff() < 1e-6);
  }
  CHECK(result.trajectory.front() == x);
  CHECK(result.log_prob_trajectory.front() == result.log_prob);
  CHECK(result.log_prob_trajectory.back() == result.source_log_prob);

  // Sampling through a grid: the same marginals along the forward trajectory.
  const std::vector<double> forward{0.0, 0.5, 1.0};
  const auto sampled = flowmatch::sample_with_log_likelihood(
      oracle, result.noise, std::span<const double>(forward), tight_dopri5());
  for (std::size_t k = 0; k < forward.size(); ++k) {
    const Vector<double> exact = oracle.log_prob(forward[k], sampled.trajectory[k]);
    CHECK((sampled.log_prob_trajectory[k] - exact).cwiseAbs().maxCoeff() < 1e-6);
  }
  CHECK(sampled.log_prob == sampled.log_prob_trajectory.back());

  const std::vector<double> open_ended{1.0, 0.5};
  const std::vector<double> wrong_way{0.0, 1.0};
  CHECK_THROWS_AS(flowmatch::log_likelihood(oracle, x, std::span<const double>(open_ended)),
                  std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::log_likelihood(oracle, x, std::span<const double>(wrong_way)),
                  std::invalid_argument);
}

TEST_CASE("a type-erased field without a divergence is reported before any evaluation",
          "[likelihood]") {
  // Not generic over its scalar type and without members: the velocity only.
  std::size_t calls = 0;
  const auto velocity_only = [&calls](double /*t*/, const Matrix<double>& x) {
    ++calls;
    return Matrix<double>(-x);
  };
  const flowmatch::AnyField<double> field(velocity_only);
  CHECK_FALSE(field.offers(flowmatch::capability::Divergence{}));
  CHECK_FALSE(field.offers(flowmatch::capability::Jvp{}));
  CHECK(field.offers(flowmatch::capability::Velocity{}));
  const Matrix<double> x = Matrix<double>::Ones(2, 3);
  CHECK_THROWS_WITH(flowmatch::log_likelihood(field, x),
                    Catch::Contains("log_likelihood: field offers no velocity with divergence "
                                    "in one pass"));
  std::mt19937_64 generator(1);
  const flowmatch::Hutchinson<std::mt19937_64> hutchinson(
      2, flowmatch::ProbeDistribution::rademacher, generator);
  CHECK_THROWS_WITH(flowmatch::log_likelihood(field, x, {}, hutchinson),
                    Catch::Contains("Jacobian-vector product"));
  CHECK(calls == 0);

  // The same field with a generic body offers everything by forward mode.
  const flowmatch::AnyField<double> generic([](auto /*t*/, const auto& points) {
    using Batch = std::decay_t<decltype(points)>;
    return flowmatch::Matrix<typename Batch::Scalar>(-points);
  });
  CHECK(generic.offers(flowmatch::capability::DivergenceGradient{}));
  const auto result = flowmatch::log_likelihood(generic, x, tight_dopri5());
  // u = −x: x(0) = e·x, log p_1(x) = log N(e·x) + 2 (∇·u = −2 for one unit of time).
  const Matrix<double> noise = std::exp(1.0) * x;
  const Vector<double> expected =
      (-0.5 * noise.colwise().squaredNorm().array() - std::log(2 * std::numbers::pi) + 2.0)
          .transpose();
  CHECK((result.log_prob - expected).cwiseAbs().maxCoeff() < 1e-7);
}

TEST_CASE("forward mode divergence of a generic lambda gives the same log-likelihood",
          "[likelihood]") {
  const auto mixture = flowmatch_test::DiagonalMixture::two_dimensional();
  const auto oracle = mixture.oracle();
  std::mt19937_64 generator(17);
  const Matrix<double> x = oracle.sample(16, generator);
  const auto result = flowmatch::log_likelihood(mixture.field(), x, tight_dopri5());
  CHECK((result.log_prob - oracle.log_prob(x)).cwiseAbs().maxCoeff() < 1e-6);
}

TEST_CASE("sampling returns the log-density of each sample in the same pass", "[likelihood]") {
  const MixturePath oracle(planar_mixture());
  std::mt19937_64 generator(19);
  const Matrix<double> noise = random_normal(2, 32, generator);
  const auto result = flowmatch::sample_with_log_likelihood(oracle, noise, tight_dopri5());
  CHECK(result.noise == noise);
  CHECK((result.log_prob - oracle.data().log_prob(result.data)).cwiseAbs().maxCoeff() < 1e-6);
  const auto plain = flowmatch::sample(oracle, noise, tight_dopri5());
  CHECK((result.data - plain.state).cwiseAbs().maxCoeff() < 1e-8);
  CHECK_THAT(result.source_log_prob(0),
             WithinRel(-0.5 * noise.col(0).squaredNorm() - std::log(2 * std::numbers::pi), 1e-14));
}

TEST_CASE("every fixed-step method converges at its order, on x and the log-density",
          "[likelihood]") {
  const MixturePath oracle(planar_mixture());
  std::mt19937_64 generator(23);
  const Matrix<double> x = oracle.data().sample(8, generator);
  const Vector<double> expected = oracle.data().log_prob(x);
  const auto error_at = [&](Method method, double step) {
    SolverOptions<double> options;
    options.method = method;
    options.step_size = step;
    return (flowmatch::log_likelihood(oracle, x, options).log_prob - expected)
        .cwiseAbs()
        .maxCoeff();
  };
  const std::vector<std::pair<Method, double>> methods = {
      {Method::euler, 1.0}, {Method::midpoint, 2.0}, {Method::heun2, 2.0},
      {Method::heun3, 3.0}, {Method::rk4, 4.0},      {Method::rk38, 4.0}};
  for (const auto& [method, order] : methods) {
    INFO("method " << flowmatch::method_name(method));
    const double coarse = error_at(method, 1.0 / 40);
    const double fine = error_at(method, 1.0 / 80);
    // The observed order log2(coarse/fine) tends to the method's order as h → 0.
    CHECK_THAT(std::log2(coarse / fine), WithinAbs(order, 0.35));
  }
}

TEST_CASE("every adaptive method meets a tight tolerance on the log-density", "[likelihood]") {
  const MixturePath oracle(planar_mixture());
  std::mt19937_64 generator(29);
  const Matrix<double> x = oracle.data().sample(8, generator);
  for (const Method method : {Method::dopri5, Method::rkf78, Method::tsit5}) {
    for (const auto norm : {flowmatch::ErrorNorm::rms, flowmatch::ErrorNorm::max}) {
      INFO("method " << flowmatch::method_name(method));
      SolverOptions<double> options = tight_dopri5();
      options.method = method;
      options.error_norm = norm;
      const auto result = flowmatch::log_likelihood(oracle, x, options);
      CHECK((result.log_prob - oracle.data().log_prob(x)).cwiseAbs().maxCoeff() < 1e-6);
    }
  }
}

TEST_CASE("adaptive error control covers the log-density row", "[likelihood]") {
  // u = cos(20t)·x at x = 0: the point never moves, but div u = d·cos(20t), so only the row of
  // ℓ forces small steps; log p_1(0) = log p_0(0) − d·sin(20)/20.
  const auto field = [](auto t, const auto& x) {
    using std::cos;
    return (cos(20 * t) * x).eval();
  };
  const Matrix<double> origin = Matrix<double>::Zero(3, 1);
  SolverOptions<double> options = tight_dopri5();
  const auto result = flowmatch::log_likelihood(field, origin, options);
  const double expected = -1.5 * std::log(2 * std::numbers::pi) - 3 * std::sin(20.0) / 20;
  CHECK_THAT(result.log_prob(0), WithinAbs(expected, 1e-8));
  CHECK(result.stats.accepted > 10);
}

TEST_CASE("Hutchinson's estimate converges at the 1/sqrt(K) rate", "[hutchinson]") {
  // The error of a mean of K i.i.d. unbiased probes has standard deviation σ/√K, so the RMS
  // error over many seeds and samples falls with slope −1/2 in log-log. With 30 seeds × 32
  // samples = 960 replicates per K, each RMS is known to ≈ 1/√(2·960) ≈ 2.3% (0.023 in log);
  // over log K ∈ [0, ln 256] a least-squares slope is then known to ≈ 0.01: a tolerance of
  // 0.08 is > 5 standard errors.
  const MixturePath oracle(high_dimensional_mixture());
  std::mt19937_64 generator(31);
  const double t = 0.7;
  const Matrix<double> x = oracle.marginal(t).sample(32, generator);
  Vector<double> exact(32);
  oracle.divergence(t, x, exact);
  for (const auto distribution :
       {flowmatch::ProbeDistribution::rademacher, flowmatch::ProbeDistribution::gaussian}) {
    std::vector<double> log_probes;
    std::vector<double> log_errors;
    for (const Index probes : {1, 4, 16, 64, 256}) {
      double squared = 0;
      for (int seed = 0; seed < 30; ++seed) {
        std::mt19937_64 probe_generator(1000 + seed);
        const Matrix<double> z =
            flowmatch::draw_probes<double>(16, 32, probes, distribution, probe_generator);
        Vector<double> estimate(32);
        flowmatch::hutchinson_divergence<double>(oracle, t, x, z, estimate);
        squared += (estimate - exact).squaredNorm();
      }
      log_probes.push_back(std::log(static_cast<double>(probes)));
      log_errors.push_back(0.5 * std::log(squared / (30 * 32)));
    }
    const Eigen::Map<const Eigen::VectorXd> u(log_probes.data(), 5);
    const Eigen::Map<const Eigen::VectorXd> v(log_errors.data(), 5);
    const double slope = ((u.array() - u.mean()) * (v.array() - v.mean())).sum() /
                         (u.array() - u.mean()).square().sum();
    CHECK_THAT(slope, WithinAbs(-0.5, 0.08));
  }
}

TEST_CASE("Hutchinson log-likelihoods are reproducible and unbiased", "[hutchinson]") {
  const MixturePath oracle(planar_mixture());
  std::mt19937_64 generator(37);
  const Matrix<double> x = oracle.data().sample(64, generator);
  SolverOptions<double> options;
  options.rtol = 1e-8;
  options.atol = 1e-8;
  std::mt19937_64 first_generator(42);
  std::mt19937_64 second_generator(42);
  const flowmatch::Hutchinson first(4, flowmatch::ProbeDistribution::rademacher, first_generator);
  const flowmatch::Hutchinson second(4, flowmatch::ProbeDistribution::rademacher, second_generator);
  const auto a = flowmatch::log_likelihood(oracle, x, options, first);
  const auto b = flowmatch::log_likelihood(oracle, x, options, second);
  CHECK(a.log_prob == b.log_prob);  // bit-identical
  CHECK(a.noise == b.noise);
  // A second call draws new probes from the advanced generator.
  const auto c = flowmatch::log_likelihood(oracle, x, options, first);
  CHECK(c.log_prob != a.log_prob);
  // Unbiased: the mean error over 64 independent samples is within 4 standard errors of 0.
  const Vector<double> error = a.log_prob - oracle.data().log_prob(x);
  const double mean = error.mean();
  const double deviation = std::sqrt((error.array() - mean).square().sum() / 63);
  CHECK(std::abs(mean) < 4 * deviation / 8);
  CHECK(deviation > 0);
  // Sampling with a Hutchinson estimator and a generic lambda (jvp by forward mode).
  const auto mixture = flowmatch_test::DiagonalMixture::two_dimensional();
  const flowmatch::Hutchinson gaussian(2, flowmatch::ProbeDistribution::gaussian, generator);
  const auto sampled = flowmatch::sample_with_log_likelihood(
      mixture.field(), random_normal(2, 8, generator), options, gaussian);
  CHECK(sampled.log_prob.allFinite());
}

// u(x) = A x with both Jacobian products as members, counting which one is called: the
// estimate is exact arithmetic on A, so both products must give the same z·(A z).
template <bool ReverseMode>
struct CountingLinearField {
  static constexpr bool prefers_reverse_mode = ReverseMode;
  Matrix<double> matrix;
  mutable int jvp_calls = 0;
  mutable int vjp_calls = 0;
  void operator()(double /*t*/, const ConstMatrixRef<double>& x, MatrixRef<double> out) const {
    out.noalias() = matrix * x;
  }
  void jvp(double /*t*/, const ConstMatrixRef<double>& /*x*/, const ConstMatrixRef<double>& tangent,
           MatrixRef<double> out) const {
    ++jvp_calls;
    out.noalias() = matrix * tangent;
  }
  void vjp(double /*t*/, const ConstMatrixRef<double>& /*x*/,
           const ConstMatrixRef<double>& cotangent, MatrixRef<double> out) const {
    ++vjp_calls;
    out.noalias() = matrix.transpose() * cotangent;
  }
};

TEST_CASE("Hutchinson uses the vjp of a field that prefers reverse mode, the jvp otherwise",
          "[hutchinson]") {
  std::mt19937_64 generator(11);
  const Matrix<double> matrix = random_normal(4, 4, generator);
  const Matrix<double> x = random_normal(4, 6, generator);
  const Matrix<double> probes =
      flowmatch::draw_probes<double>(4, 6, 3, flowmatch::ProbeDistribution::rademacher, generator);
  // z·(A z) for each probe column, averaged over the 3 probes of each sample.
  Vector<double> expected = Vector<double>::Zero(6);
  for (Index k = 0; k < 3; ++k) {
    for (Index n = 0; n < 6; ++n) {
      const auto z = probes.col(k * 6 + n);
      expected(n) += z.dot(matrix * z) / 3;
    }
  }
  CountingLinearField<true> reverse{matrix};
  CountingLinearField<false> forward{matrix};
  Vector<double> estimate(6);
  flowmatch::hutchinson_divergence<double>(reverse, 0.5, x, probes, estimate);
  CHECK(reverse.vjp_calls == 1);
  CHECK(reverse.jvp_calls == 0);
  CHECK((estimate - expected).cwiseAbs().maxCoeff() < 1e-12);
  flowmatch::hutchinson_divergence<double>(forward, 0.5, x, probes, estimate);
  CHECK(forward.jvp_calls == 1);
  CHECK(forward.vjp_calls == 0);
  CHECK((estimate - expected).cwiseAbs().maxCoeff() < 1e-12);
  // An adapter passes the preference on: a field wrapped for parallel evaluation, by reference
  // (the 18 columns of the probes fit one chunk: one call).
  flowmatch::ThreadPool pool(2);
  const flowmatch::ParallelField parallel(std::cref(reverse), pool);
  STATIC_REQUIRE(flowmatch::prefers_reverse_mode<decltype(parallel)>);
  STATIC_REQUIRE_FALSE(flowmatch::prefers_reverse_mode<CountingLinearField<false>>);
  STATIC_REQUIRE(flowmatch::prefers_reverse_mode<decltype(std::cref(reverse))>);
  flowmatch::hutchinson_divergence<double>(parallel, 0.5, x, probes, estimate);
  CHECK(reverse.vjp_calls == 2);
  CHECK(reverse.jvp_calls == 0);
  // A field whose type is chosen at run time carries the preference as a run-time answer, and an
  // adapter over it asks it at run time.
  const flowmatch::AnyField<double> erased(std::cref(reverse));
  CHECK(erased.reverse_mode_preferred());
  CHECK_FALSE(flowmatch::AnyField<double>(std::cref(forward)).reverse_mode_preferred());
  flowmatch::hutchinson_divergence<double>(erased, 0.5, x, probes, estimate);
  CHECK(reverse.vjp_calls == 3);
  const flowmatch::ParallelField parallel_erased(std::cref(erased), pool);
  CHECK(parallel_erased.reverse_mode_preferred());
  flowmatch::hutchinson_divergence<double>(parallel_erased, 0.5, x, probes, estimate);
  CHECK(reverse.vjp_calls == 4);
  CHECK(reverse.jvp_calls == 0);
  CHECK((estimate - expected).cwiseAbs().maxCoeff() < 1e-12);
  const flowmatch::AnyField<double> erased_forward(std::cref(forward));
  flowmatch::hutchinson_divergence<double>(erased_forward, 0.5, x, probes, estimate);
  CHECK(forward.jvp_calls == 2);
  CHECK(forward.vjp_calls == 0);
}

TEST_CASE("conditional log-likelihoods bind the conditions to the samples", "[likelihood]") {
  // u(x | c) of the CondOT path to N(c, s² I): u = c + a(t)(x − t c), a = (t s² − (1 − t))/v,
  // v = t² s² + (1 − t)²; log p_1(x | c) = log N(x; c, s² I).
  const double variance = 0.5;
  const auto conditional = [variance](auto t, const auto& x, const auto& c) {
    using T = typename std::decay_t<decltype(x)>::Scalar;
    const T time(t);
    const T spread = time * time * T(variance) + (T(1) - time) * (T(1) - time);
    const T gain = (time * T(variance) - (T(1) - time)) / spread;
    return (c + gain * (x - time * c)).eval();
  };
  std::mt19937_64 generator(41);
  const Matrix<double> condition = random_normal(2, 6, generator);
  const Matrix<double> x = condition + std::sqrt(variance) * random_normal(2, 6, generator);
  const auto result =
      flowmatch::conditional_log_likelihood(conditional, condition, x, tight_dopri5());
  for (Index n = 0; n < 6; ++n) {
    const double expected = -(x.col(n) - condition.col(n)).squaredNorm() / (2 * variance) -
                            std::log(2 * std::numbers::pi * variance);
    CHECK_THAT(result.log_prob(n), WithinAbs(expected, 1e-6));
  }
  // Through Hutchinson probes (K·N columns) the conditions are repeated along.
  std::mt19937_64 probe_generator(43);
  const flowmatch::Hutchinson estimator(3, flowmatch::ProbeDistribution::rademacher,
                                        probe_generator);
  const auto estimated =
      flowmatch::conditional_log_likelihood(conditional, condition, x, tight_dopri5(), estimator);
  CHECK(estimated.log_prob.allFinite());
  CHECK_THROWS_AS(
      flowmatch::conditional_log_likelihood(conditional, Matrix<double>(condition.leftCols(5)), x),
      std::invalid_argument);
  const flowmatch::ConditionedField<double, decltype(conditional)> bound(conditional, condition);
  Matrix<double> out(2, 5);
  CHECK_THROWS_AS(bound(0.5, ConstMatrixRef<double>(x.leftCols(5)), MatrixRef<double>(out)),
                  std::invalid_argument);
}

TEST_CASE("bits per dimension", "[likelihood]") {
  const Index dim = 4;
  Vector<double> log_prob(2);
  log_prob << -3 * dim * std::numbers::ln2, 0.0;
  const Vector<double> bits = flowmatch::bits_per_dimension(log_prob, dim);
  CHECK_THAT(bits(0), WithinRel(3.0, 1e-15));
  CHECK(bits(1) == 0.0);
  // 256 levels in [0, 1]: log P(bin) = log p + d·log(1/256) adds 8 bits per dimension.
  const Vector<double> dequantised = flowmatch::bits_per_dimension(log_prob, dim, 1.0 / 256);
  CHECK_THAT(dequantised(0), WithinRel(11.0, 1e-15));
  CHECK_THROWS_AS(flowmatch::bits_per_dimension(log_prob, 0), std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::bits_per_dimension(log_prob, dim, 0.0), std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::bits_per_dimension(log_prob, dim, std::nan("")),
                  std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::bits_per_dimension(Matrix<double>::Zero(2, 2), dim),
                  std::invalid_argument);
  log_prob(1) = std::nan("");
  CHECK_THROWS_AS(flowmatch::bits_per_dimension(log_prob, dim), std::invalid_argument);
}

TEST_CASE("a custom source log-density is used", "[likelihood]") {
  // Source N(0, 4 I) and u = 0: log p_1 = log p_0.
  const auto still = [](auto, const auto& x) {
    using T = typename std::decay_t<decltype(x)>::Scalar;
    return Matrix<T>::Zero(x.rows(), x.cols()).eval();
  };
  const auto wide = [](const Matrix<double>& x) {
    return (-x.colwise().squaredNorm().array() / 8 - std::log(8 * std::numbers::pi))
        .matrix()
        .transpose()
        .eval();
  };
  Matrix<double> x(2, 2);
  x << 1, 2, 3, 4;
  const auto result = flowmatch::log_likelihood(still, x, SolverOptions<double>{},
                                                flowmatch::ExactDivergence{}, wide);
  CHECK_THAT(result.log_prob(1), WithinRel(-20.0 / 8 - std::log(8 * std::numbers::pi), 1e-14));
  const auto wrong_length = [](const Matrix<double>& points) {
    return Vector<double>::Zero(points.cols() + 1).eval();
  };
  CHECK_THROWS_AS(flowmatch::log_likelihood(still, x, SolverOptions<double>{},
                                            flowmatch::ExactDivergence{}, wrong_length),
                  std::invalid_argument);
}

TEST_CASE("float works", "[likelihood]") {
  const auto field = [](auto t, const auto& x) { return (-t * x).eval(); };
  const Eigen::MatrixXf x = Eigen::MatrixXf::Constant(2, 3, 0.5f);
  SolverOptions<float> options;
  options.rtol = 1e-5f;
  options.atol = 1e-5f;
  // u = −t x: x(t) = x(1)·exp((1 − t²)/2), div = −2t, log p_1 = log p_0(x(0)) + ∫₁⁰ −2t dt.
  const auto result = flowmatch::log_likelihood(field, x, options);
  const float start = 0.5f * std::exp(0.5f);
  const float expected = -start * start - std::log(2 * std::numbers::pi_v<float>) + 1.0f;
  CHECK_THAT(result.log_prob(0), WithinAbs(expected, 1e-4f));
}

TEST_CASE("bad input to the likelihood functions throws", "[likelihood]") {
  const MixturePath oracle(planar_mixture());
  Matrix<double> x = Matrix<double>::Zero(2, 3);
  CHECK_THROWS_AS(flowmatch::log_likelihood(oracle, Matrix<double>(2, 0)), std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::log_likelihood(oracle, Matrix<double>(0, 3)), std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::log_likelihood(oracle, Matrix<double>::Zero(3, 3)),
                  std::invalid_argument);
  x(1, 2) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(
      flowmatch::log_likelihood(oracle, x),
      Catch::Matchers::Contains("log_likelihood: x") && Catch::Matchers::Contains("column 2"));
  CHECK_THROWS_AS(flowmatch::sample_with_log_likelihood(oracle, x), std::invalid_argument);
  std::mt19937_64 generator(1);
  CHECK_THROWS_AS(flowmatch::Hutchinson(0, flowmatch::ProbeDistribution::gaussian, generator),
                  std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::Hutchinson(-2, flowmatch::ProbeDistribution::gaussian, generator),
                  std::invalid_argument);
  CHECK_THROWS_AS(
      flowmatch::draw_probes<double>(2, 3, 0, flowmatch::ProbeDistribution::gaussian, generator),
      std::invalid_argument);
  CHECK_THROWS_AS(
      flowmatch::draw_probes<double>(0, 3, 1, flowmatch::ProbeDistribution::gaussian, generator),
      std::invalid_argument);
  const Matrix<double> points = Matrix<double>::Zero(2, 3);
  Vector<double> out(3);
  CHECK_THROWS_AS(flowmatch::hutchinson_divergence<double>(oracle, 0.5, points,
                                                           Matrix<double>::Ones(2, 4), out),
                  std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::hutchinson_divergence<double>(oracle, 0.5, points,
                                                           Matrix<double>::Ones(3, 3), out),
                  std::invalid_argument);
  Vector<double> short_out(2);
  CHECK_THROWS_AS(flowmatch::exact_divergence<double>(oracle, 0.5, points, short_out),
                  std::invalid_argument);
  Matrix<double> product(2, 3);
  CHECK_THROWS_AS(flowmatch::jacobian_vector_product<double>(oracle, 0.5, points,
                                                             Matrix<double>::Ones(2, 2), product),
                  std::invalid_argument);
  SolverOptions<double> bad;
  bad.rtol = -1;
  CHECK_THROWS_AS(flowmatch::log_likelihood(oracle, points, bad), std::invalid_argument);
}

}  // namespace test_likelihood
