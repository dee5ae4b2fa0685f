// Tests of the Gaussian-mixture oracle against mathematics independent of its implementation:
// quadrature of the density and its moments, finite differences in x and t, the continuity
// equation, a Cholesky-based reference built from generic Gaussian conditioning, the Lyapunov
// equation of the linear Gaussian flow, and Monte-Carlo orthogonality of the regression residual.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <random>
#include <type_traits>
#include <vector>

#include "flowmatch/core/errors.hpp"
#include "flowmatch/field/velocity_field.hpp"
#include "flowmatch/oracle/gaussian_mixture.hpp"
#include "flowmatch/oracle/gaussian_mixture_path.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/scheduler/cosine.hpp"
#include "flowmatch/scheduler/linear_vp.hpp"
#include "flowmatch/scheduler/polynomial.hpp"
#include "flowmatch/scheduler/vp.hpp"

namespace test_oracle {

namespace {

using Catch::Matchers::WithinAbs;
using Catch::Matchers::WithinRel;
using flowmatch::CondOT;
using flowmatch::GaussianMixture;
using flowmatch::GaussianMixturePath;
using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::Vector;
using MatrixXd = Matrix<double>;
using VectorXd = Vector<double>;

// ---------------------------------------------------------------------------------------------
// Fixtures.

// Three components in the plane, all with full covariances (two of them strongly correlated);
// the weights are given unnormalised (5 : 3 : 2).
GaussianMixture<double> planar_mixture() {
  VectorXd weights(3);
  weights << 5.0, 3.0, 2.0;
  MatrixXd means(2, 3);
  means << -1.5, 1.0, 0.5,  //
      0.5, -1.0, 2.0;
  std::vector<MatrixXd> covariances(3, MatrixXd(2, 2));
  covariances[0] << 1.0, 0.6, 0.6, 0.5;
  covariances[1] << 0.3, -0.2, -0.2, 0.8;
  covariances[2] << 0.4, 0.1, 0.1, 0.3;
  return GaussianMixture<double>::with_covariances(weights, means, covariances);
}

// Four components in R^5 with random full covariances B Bᵀ + 0.2 I (fixed seed).
GaussianMixture<double> five_dim_mixture() {
  std::mt19937_64 generator(20240521);
  std::normal_distribution<double> normal;
  const Index dim = 5;
  const Index components = 4;
  VectorXd weights(components);
  weights << 0.1, 0.4, 0.3, 0.2;
  MatrixXd means(dim, components);
  for (Index k = 0; k < components; ++k) {
    for (Index i = 0; i < dim; ++i) means(i, k) = 1.5 * normal(generator);
  }
  std::vector<MatrixXd> covariances;
  for (Index k = 0; k < components; ++k) {
    MatrixXd factor(dim, dim);
    for (Index i = 0; i < dim * dim; ++i) factor(i) = 0.5 * normal(generator);
    MatrixXd covariance = factor * factor.transpose() + 0.2 * MatrixXd::Identity(dim, dim);
    covariances.push_back(0.5 * (covariance + covariance.transpose()));
  }
  return GaussianMixture<double>::with_covariances(weights, means, covariances);
}

// ---------------------------------------------------------------------------------------------
// An independent reference: Cholesky factorisations of C_k = α²Σ_k + σ²I, and the velocity by
// generic linear-Gaussian conditioning of target = G z on x_t = H z, z = (x₁, x₀) ~ N((μ_k, 0),
// blockdiag(Σ_k, I)), G = [α̇ I, σ̇ I], H = [α I, σ I]:
//   E[target | x_t = x, k] = G E z + (G J Hᵀ)(H J Hᵀ)⁻¹ (x − H E z).
class ReferencePath {
 public:
  ReferencePath(const GaussianMixture<double>& data, double alpha, double sigma, double d_alpha,
                double d_sigma) {
    const Index dim = data.dim();
    const MatrixXd identity = MatrixXd::Identity(dim, dim);
    MatrixXd signal(dim, 2 * dim);  // H
    signal << alpha * identity, sigma * identity;
    MatrixXd target(dim, 2 * dim);  // G
    target << d_alpha * identity, d_sigma * identity;
    for (Index k = 0; k < data.components(); ++k) {
      MatrixXd joint = MatrixXd::Zero(2 * dim, 2 * dim);  // J
      joint.topLeftCorner(dim, dim) = data.covariance(k);
      joint.bottomRightCorner(dim, dim) = identity;
      VectorXd joint_mean = VectorXd::Zero(2 * dim);
      joint_mean.head(dim) = data.means().col(k);
      Component component;
      component.log_weight = std::log(data.weights()(k));
      component.centre = signal * joint_mean;
      component.target_mean = target * joint_mean;
      component.cross_covariance = target * joint * signal.transpose();
      component.cholesky.compute(signal * joint * signal.transpose());
      REQUIRE(component.cholesky.info() == Eigen::Success);
      components_.push_back(component);
    }
  }

  // log p_t(x) by log-sum-exp over log w_k N(x; m_k, C_k), with log det C_k from Cholesky.
  double log_prob(const VectorXd& x) const {
    const VectorXd logs = component_log_densities(x);
    const double largest = logs.maxCoeff();
    return largest + std::log((logs.array() - largest).exp().sum());
  }

  // u_t(x) = Σ_k γ_k E[target | x_t = x, k].
  VectorXd velocity(const VectorXd& x) const {
    const VectorXd logs = component_log_densities(x);
    const VectorXd posterior = (logs.array() - logs.maxCoeff()).exp().matrix();
    VectorXd velocity = VectorXd::Zero(x.size());
    for (std::size_t k = 0; k < components_.size(); ++k) {
      const Component& component = components_[k];
      velocity += posterior(static_cast<Index>(k)) *
                  (component.target_mean +
                   component.cross_covariance * component.cholesky.solve(x - component.centre));
    }
    return velocity / posterior.sum();
  }

 private:
  struct Component {
    double log_weight = 0.0;
    VectorXd centre;
    VectorXd target_mean;
    MatrixXd cross_covariance;
    Eigen::LLT<MatrixXd> cholesky;
  };

  VectorXd component_log_densities(const VectorXd& x) const {
    VectorXd logs(static_cast<Index>(components_.size()));
    for (std::size_t k = 0; k < components_.size(); ++k) {
      const Component& component = components_[k];
      const MatrixXd factor = component.cholesky.matrixL();
      const VectorXd whitened = factor.triangularView<Eigen::Lower>().solve(x - component.centre);
      logs(static_cast<Index>(k)) =
          component.log_weight - 0.5 * whitened.squaredNorm() -
          factor.diagonal().array().log().sum() -
          0.5 * static_cast<double>(x.size()) * std::log(2.0 * std::numbers::pi);
    }
    return logs;
  }

  std::vector<Component> components_;
};

template <class S>
ReferencePath reference_at(const GaussianMixturePath<S>& path, double t) {
  const auto& scheduler = path.scheduler();
  return ReferencePath(path.data(), scheduler.alpha(t), scheduler.sigma(t), scheduler.d_alpha(t),
                       scheduler.d_sigma(t));
}

// ---------------------------------------------------------------------------------------------
// Numerical helpers.

// Fourth-order central difference of f at 0 with step h: error h⁴ f⁽⁵⁾/30 + O(ε f / h).
template <class Value, class F>
Value central_difference(const F& f, double h) {
  Value difference = (f(-2.0 * h) - 8.0 * f(-h) + 8.0 * f(h) - f(2.0 * h)) / (12.0 * h);
  return difference;
}

// The gradient of a per-sample scalar function @p f of the batch @p x (d×N → length N), by
// central differences along each coordinate: row i of the result is ∂f/∂x_i (d×N).
template <class F>
MatrixXd gradient_by_differences(const F& f, const MatrixXd& x, double h) {
  MatrixXd gradient(x.rows(), x.cols());
  for (Index i = 0; i < x.rows(); ++i) {
    gradient.row(i) = central_difference<VectorXd>(
                          [&](double step) {
                            MatrixXd shifted = x;
                            shifted.row(i).array() += step;
                            return f(shifted);
                          },
                          h)
                          .transpose();
  }
  return gradient;
}

// Largest entrywise |actual − expected| / (1 + |expected|).
template <class A, class B>
double max_relative_error(const A& actual, const B& expected) {
  return ((actual - expected).array().abs() / (1.0 + expected.array().abs())).maxCoeff();
}

// Points where the tests look: samples of p_t plus a few far in the tails (3x scaled).
template <class S>
MatrixXd probe_points(const GaussianMixturePath<S>& path, double t, Index count,
                      std::uint64_t seed) {
  std::mt19937_64 generator(seed);
  MatrixXd points = path.marginal(t).sample(count, generator);
  points.rightCols(count / 4) *= 3.0;
  return points;
}

template <class S>
MatrixXd velocity_of(const GaussianMixturePath<S>& path, double t, const MatrixXd& x) {
  MatrixXd out(x.rows(), x.cols());
  path(t, x, out);
  return out;
}

template <class S>
VectorXd divergence_of(const GaussianMixturePath<S>& path, double t, const MatrixXd& x) {
  VectorXd out(x.cols());
  path.divergence(t, x, out);
  return out;
}

// The Jacobian ∂u/∂x_i of every column by fourth-order central differences, for i = 0..d−1.
template <class S>
std::vector<MatrixXd> jacobian_columns(const GaussianMixturePath<S>& path, double t,
                                       const MatrixXd& x, double h) {
  std::vector<MatrixXd> columns;
  for (Index i = 0; i < x.rows(); ++i) {
    columns.push_back(central_difference<MatrixXd>(
        [&](double step) {
          MatrixXd shifted = x;
          shifted.row(i).array() += step;
          return velocity_of(path, t, shifted);
        },
        h));
  }
  return columns;
}

// Finite-difference tolerance: with h = 1e-4 the truncation error h⁴ f⁽⁵⁾/30 is below 1e-10
// for these mixtures (|f⁽⁵⁾| ≲ 1e5: smallest variance 0.1, mean gaps ≲ 5), and rounding
// ε|f|/h ≈ 1e-11; 1e-7 relative leaves a margin of three orders.
constexpr double fd_step = 1e-4;
constexpr double fd_tolerance = 1e-7;

// Checks score, divergence, its gradient, jvp and vjp against finite differences of log p_t,
// u_t and ∇·u_t, and log p_t and u_t against the Cholesky reference, at time t.
template <class S>
void check_against_differences_and_reference(const GaussianMixturePath<S>& path, double t,
                                             bool with_velocity) {
  INFO("t = " << t << ", d = " << path.dim());
  const MatrixXd x = probe_points(path, t, 24, 7);
  const Index dim = x.rows();
  const Index count = x.cols();

  // log p_t and its gradient.
  const VectorXd log_density = path.log_prob(t, x);
  const auto& scheduler = path.scheduler();
  const ReferencePath reference(path.data(), scheduler.alpha(t), scheduler.sigma(t),
                                with_velocity ? scheduler.d_alpha(t) : 0.0,
                                with_velocity ? scheduler.d_sigma(t) : 0.0);
  VectorXd reference_log_density(count);
  for (Index j = 0; j < count; ++j) reference_log_density(j) = reference.log_prob(x.col(j));
  CHECK_THAT(max_relative_error(log_density, reference_log_density), WithinAbs(0.0, 1e-12));

  const MatrixXd gradient = gradient_by_differences(
      [&](const MatrixXd& points) { return path.log_prob(t, points); }, x, fd_step);
  CHECK_THAT(max_relative_error(path.score(t, x), gradient), WithinAbs(0.0, fd_tolerance));
  if (!with_velocity) return;

  // The velocity against generic Gaussian conditioning.
  const MatrixXd velocity = velocity_of(path, t, x);
  MatrixXd reference_velocity(dim, count);
  for (Index j = 0; j < count; ++j) reference_velocity.col(j) = reference.velocity(x.col(j));
  CHECK_THAT(max_relative_error(velocity, reference_velocity), WithinAbs(0.0, 1e-11));

  // Divergence = trace of the finite-difference Jacobian; jvp and vjp = J v and Jᵀ w.
  const std::vector<MatrixXd> jacobian = jacobian_columns(path, t, x, fd_step);
  std::mt19937_64 generator(11);
  std::normal_distribution<double> normal;
  MatrixXd tangent(dim, count);
  MatrixXd cotangent(dim, count);
  for (Index i = 0; i < tangent.size(); ++i) {
    tangent(i) = normal(generator);
    cotangent(i) = normal(generator);
  }
  VectorXd trace = VectorXd::Zero(count);
  MatrixXd jacobian_tangent = MatrixXd::Zero(dim, count);
  MatrixXd jacobian_transpose_cotangent(dim, count);
  for (Index i = 0; i < dim; ++i) {
    trace += jacobian[static_cast<std::size_t>(i)].row(i).transpose();
    jacobian_tangent += jacobian[static_cast<std::size_t>(i)] * tangent.row(i).asDiagonal();
    jacobian_transpose_cotangent.row(i) =
        (jacobian[static_cast<std::size_t>(i)].array() * cotangent.array()).colwise().sum();
  }
  CHECK_THAT(max_relative_error(divergence_of(path, t, x), trace), WithinAbs(0.0, fd_tolerance));

  MatrixXd jvp(dim, count);
  path.jvp(t, x, tangent, jvp);
  CHECK_THAT(max_relative_error(jvp, jacobian_tangent), WithinAbs(0.0, fd_tolerance));

  MatrixXd vjp(dim, count);
  path.vjp(t, x, cotangent, vjp);
  CHECK_THAT(max_relative_error(vjp, jacobian_transpose_cotangent), WithinAbs(0.0, fd_tolerance));

  // ∇(∇·u) against central differences of the divergence.
  MatrixXd divergence_gradient(dim, count);
  path.divergence_gradient(t, x, divergence_gradient);
  const MatrixXd divergence_differences = gradient_by_differences(
      [&](const MatrixXd& points) { return divergence_of(path, t, points); }, x, fd_step);
  CHECK_THAT(max_relative_error(divergence_gradient, divergence_differences),
             WithinAbs(0.0, fd_tolerance));

  // ⟨w, J v⟩ = ⟨Jᵀ w, v⟩ for each sample, to rounding.
  const VectorXd left = (cotangent.array() * jvp.array()).colwise().sum().transpose();
  const VectorXd right = (vjp.array() * tangent.array()).colwise().sum().transpose();
  CHECK_THAT(max_relative_error(left, right), WithinAbs(0.0, 1e-12));
}

// The continuity equation ∂_t log p + ∇log p · u + ∇·u = 0, with ∂_t log p by central
// differences in t (step 1e-4, same error budget as in x).
template <class S>
void check_continuity_equation(const GaussianMixturePath<S>& path, double t) {
  INFO("t = " << t << ", d = " << path.dim());
  const MatrixXd x = probe_points(path, t, 40, 13);
  const VectorXd time_derivative = central_difference<VectorXd>(
      [&](double step) { return path.log_prob(t + step, x); }, fd_step);
  const MatrixXd score = path.score(t, x);
  const MatrixXd velocity = velocity_of(path, t, x);
  const VectorXd transport = (score.array() * velocity.array()).colwise().sum().transpose();
  const VectorXd divergence = divergence_of(path, t, x);
  const VectorXd scale =
      1.0 + time_derivative.array().abs() + transport.array().abs() + divergence.array().abs();
  const VectorXd residual = (time_derivative + transport + divergence).array() / scale.array();
  CHECK_THAT(residual.cwiseAbs().maxCoeff(), WithinAbs(0.0, fd_tolerance));
}

// The analytic mixture mean Σ w_k μ_k and covariance Σ w_k (Σ_k + μ_k μ_kᵀ) − μ μᵀ.
VectorXd mixture_mean(const GaussianMixture<double>& mixture) {
  return mixture.means() * mixture.weights();
}

MatrixXd mixture_covariance(const GaussianMixture<double>& mixture) {
  const VectorXd mean = mixture_mean(mixture);
  MatrixXd second_moment = MatrixXd::Zero(mixture.dim(), mixture.dim());
  for (Index k = 0; k < mixture.components(); ++k) {
    second_moment +=
        mixture.weights()(k) *
        (mixture.covariance(k) + mixture.means().col(k) * mixture.means().col(k).transpose());
  }
  return second_moment - mean * mean.transpose();
}

// ∫ p_t = 1, ∫ x p_t = α E[x₁] and ∫ x xᵀ p_t = α² E[x₁x₁ᵀ] + σ² I for the planar mixture at
// t ∈ {0, 0.3, 0.7, 1}, by the tensor trapezoid rule on [-13, 13]² with step 0.05. For a
// Gaussian of standard deviation s the rule's error is ~2 exp(−2π² s²/h²); here s ≥ √0.1 (the
// smallest eigenvalue, at t = 1), so it is below e^-700. For every scheduler here
// α_t² + σ_t² ≤ 1, so every component's mean lies within 2.1 of the origin and its standard
// deviation is at most 1.2: the mass outside the box is below e^-40. What remains is rounding
// in the sum of 521² terms.
template <class S>
void check_quadrature(const GaussianMixturePath<S>& path) {
  const double half_width = 13.0;
  const double step = 0.05;
  const Index per_axis = static_cast<Index>(std::lround(2.0 * half_width / step)) + 1;
  MatrixXd grid(2, per_axis * per_axis);
  for (Index i = 0; i < per_axis; ++i) {
    for (Index j = 0; j < per_axis; ++j) {
      grid(0, i * per_axis + j) = -half_width + step * static_cast<double>(i);
      grid(1, i * per_axis + j) = -half_width + step * static_cast<double>(j);
    }
  }
  const VectorXd data_mean = mixture_mean(path.data());
  const MatrixXd data_second_moment =
      mixture_covariance(path.data()) + data_mean * data_mean.transpose();
  for (const double t : {0.0, 0.3, 0.7, 1.0}) {
    INFO("t = " << t);
    const double alpha = path.scheduler().alpha(t);
    const double sigma = path.scheduler().sigma(t);
    const VectorXd density = path.log_prob(t, grid).array().exp().matrix();
    const double cell = step * step;
    CHECK_THAT(density.sum() * cell, WithinAbs(1.0, 1e-11));
    const VectorXd mean = grid * density * cell;
    CHECK_THAT((mean - alpha * data_mean).cwiseAbs().maxCoeff(), WithinAbs(0.0, 1e-11));
    const MatrixXd second_moment = grid * density.asDiagonal() * grid.transpose() * cell;
    const MatrixXd expected =
        alpha * alpha * data_second_moment + sigma * sigma * MatrixXd::Identity(2, 2);
    CHECK_THAT((second_moment - expected).cwiseAbs().maxCoeff(), WithinAbs(0.0, 1e-10));
  }
}

// u_t(x) = E[α̇x₁ + σ̇x₀ | x_t = x] holds iff the residual r = α̇x₁ + σ̇x₀ − u_t(x_t) is
// orthogonal to every function g of x_t: E[r g(x_t)] = 0. Checks it for several g on the planar
// mixture, each within 5 standard errors of its sample mean (n = 200000 independent draws),
// and that the velocity of a slightly different time fails the same criterion (the check has
// power).
template <class S>
void check_conditional_expectation(const GaussianMixturePath<S>& path) {
  const Index count = 200000;
  std::mt19937_64 generator(2024);
  const MatrixXd data = path.data().sample(count, generator);
  MatrixXd noise(2, count);
  std::normal_distribution<double> normal;
  for (Index i = 0; i < noise.size(); ++i) noise(i) = normal(generator);

  // Largest |mean| / standard error of r_i g(x_t) over coordinates i and test functions g.
  const auto largest_z_score = [&](const MatrixXd& x_t, const MatrixXd& residual) {
    std::vector<VectorXd> tests;
    tests.push_back(VectorXd::Ones(count));
    tests.push_back(x_t.row(0).transpose());
    tests.push_back(x_t.row(1).transpose());
    tests.push_back((x_t.row(0).array() * x_t.row(1).array()).transpose().matrix());
    tests.push_back((x_t.row(0).array() > 0.0).cast<double>().transpose().matrix());
    tests.push_back(((x_t.colwise() - VectorXd::Constant(2, 0.5)).colwise().norm().array() < 0.7)
                        .cast<double>()
                        .transpose()
                        .matrix());
    tests.push_back((-0.5 * x_t.colwise().squaredNorm().array()).exp().transpose().matrix());
    double largest = 0.0;
    for (const VectorXd& test : tests) {
      for (Index i = 0; i < 2; ++i) {
        const VectorXd product = residual.row(i).transpose().cwiseProduct(test);
        const double mean = product.mean();
        const double deviation =
            std::sqrt((product.array() - mean).square().sum() / static_cast<double>(count - 1));
        largest = std::max(largest, std::abs(mean) / (deviation / std::sqrt(double(count))));
      }
    }
    return largest;
  };

  for (const double t : {0.3, 0.8}) {
    INFO("t = " << t);
    const S& scheduler = path.scheduler();
    const MatrixXd x_t = scheduler.alpha(t) * data + scheduler.sigma(t) * noise;
    const MatrixXd target = scheduler.d_alpha(t) * data + scheduler.d_sigma(t) * noise;
    CHECK(largest_z_score(x_t, target - velocity_of(path, t, x_t)) < 5.0);
    CHECK(largest_z_score(x_t, target - velocity_of(path, t + 0.05, x_t)) > 5.0);
  }
}

// Whether the scheduler's derivatives exist at t (VP and LinearVP: not at t = 1; Polynomial
// with n < 1: not at t = 0).
template <class S>
bool has_rates(const S& scheduler, double t) {
  try {
    static_cast<void>(flowmatch::scheduler_values(scheduler, t));
    return true;
  } catch (const std::domain_error&) {
    return false;
  }
}

// Every identity on the paths of @p scheduler to the planar and the five-dimensional mixture:
// quadrature; the Cholesky reference and finite differences at t ∈ {0, 0.2, 0.5, 0.8, 1}
// (velocity quantities where the scheduler's derivatives exist; where they do not, the
// velocity throws the scheduler's std::domain_error while log p_t and the score still work);
// the continuity equation at interior times.
template <class S>
void check_scheduler(const S& scheduler) {
  const GaussianMixturePath<S> planar(planar_mixture(), scheduler);
  const GaussianMixturePath<S> five_dim(five_dim_mixture(), scheduler);
  check_quadrature(planar);
  for (const double t : {0.0, 0.2, 0.5, 0.8, 1.0}) {
    const bool rates = has_rates(scheduler, t);
    check_against_differences_and_reference(planar, t, rates);
    check_against_differences_and_reference(five_dim, t, rates);
    if (!rates) {
      const MatrixXd x = MatrixXd::Zero(2, 3);
      MatrixXd out(2, 3);
      VectorXd divergence(3);
      CHECK_THROWS_AS(planar(t, x, out), std::domain_error);
      CHECK_THROWS_AS(planar.divergence(t, x, divergence), std::domain_error);
      CHECK_THROWS_AS(planar.jvp(t, x, x, out), std::domain_error);
    }
  }
  for (const double t : {0.1, 0.35, 0.6, 0.85}) {
    check_continuity_equation(planar, t);
    check_continuity_equation(five_dim, t);
  }
}

}  // namespace

// =============================================================================================

TEST_CASE("the path is a velocity field with exact divergence and jvp", "[oracle]") {
  using Path = GaussianMixturePath<CondOT<double>>;
  static_assert(flowmatch::InPlaceVelocityField<Path, double>);
  static_assert(flowmatch::HasDivergence<Path, double>);
  static_assert(flowmatch::HasJvp<Path, double>);
  using FloatPath = GaussianMixturePath<CondOT<float>>;
  static_assert(flowmatch::InPlaceVelocityField<FloatPath, float>);
  static_assert(flowmatch::HasDivergence<FloatPath, float>);
  static_assert(flowmatch::HasJvp<FloatPath, float>);
  static_assert(std::is_same_v<FloatPath::scalar_type, float>);
}

TEST_CASE("the mixture keeps its parameters and normalises its weights", "[oracle]") {
  const GaussianMixture<double> mixture = planar_mixture();
  CHECK(mixture.dim() == 2);
  CHECK(mixture.components() == 3);
  CHECK_THAT(mixture.weights()(0), WithinRel(0.5, 1e-15));
  CHECK_THAT(mixture.weights()(1), WithinRel(0.3, 1e-15));
  CHECK_THAT(mixture.weights()(2), WithinRel(0.2, 1e-15));
  CHECK(mixture.means()(1, 2) == 2.0);
  CHECK(mixture.covariance(0)(0, 1) == 0.6);
  for (Index k = 0; k < mixture.components(); ++k) {
    const MatrixXd& eigenvectors = mixture.eigenvectors(k);
    CHECK_THAT((eigenvectors.transpose() * eigenvectors - MatrixXd::Identity(2, 2)).norm(),
               WithinAbs(0.0, 1e-15));
    const MatrixXd rebuilt =
        eigenvectors * mixture.eigenvalues().col(k).asDiagonal() * eigenvectors.transpose();
    CHECK_THAT((rebuilt - mixture.covariance(k)).norm(), WithinAbs(0.0, 1e-14));
  }
}

TEST_CASE("every identity holds under every scheduler", "[oracle]") {
  SECTION("CondOT") {
    check_scheduler(CondOT<double>{});
  }
  SECTION("Polynomial n = 2") {
    check_scheduler(flowmatch::Polynomial<double>(2.0));
  }
  SECTION("Polynomial n = 0.5 (no rates at t = 0)") {
    CHECK_FALSE(has_rates(flowmatch::Polynomial<double>(0.5), 0.0));
    check_scheduler(flowmatch::Polynomial<double>(0.5));
  }
  SECTION("Cosine") {
    check_scheduler(flowmatch::Cosine<double>{});
  }
  SECTION("LinearVP (no rates at t = 1)") {
    CHECK_FALSE(has_rates(flowmatch::LinearVP<double>{}, 1.0));
    check_scheduler(flowmatch::LinearVP<double>{});
  }
  SECTION("VP (no rates at t = 1)") {
    CHECK_FALSE(has_rates(flowmatch::VP<double>{}, 1.0));
    check_scheduler(flowmatch::VP<double>{});
  }
  SECTION("VP with beta_min = 0 (rates on all of [0, 1])") {
    check_scheduler(flowmatch::VP<double>(0.0, 10.0));
  }
}

TEST_CASE("the velocity is the conditional expectation of the target (Monte Carlo)", "[oracle]") {
  check_conditional_expectation(GaussianMixturePath<CondOT<double>>(planar_mixture()));
  check_conditional_expectation(
      GaussianMixturePath<flowmatch::VP<double>>(planar_mixture(), flowmatch::VP<double>{}));
}

TEST_CASE("a single Gaussian flows by the symmetric solution of the Lyapunov equation",
          "[oracle]") {
  // For p_t = N(m_t, C_t) and a linear field u(x) = ṁ + B (x − m), the Gaussian is transported
  // iff u(m) = ṁ and B C + C Bᵀ = Ċ; with B symmetric the Sylvester equation B C + C B = Ċ has a
  // unique solution (C and −C have disjoint spectra). The conditional-expectation field must
  // be that linear field: check linearity, symmetry, the mean and the Lyapunov equation, with
  // ṁ and Ċ by central differences in t of m_t = α_t μ and C_t = α_t²Σ + σ_t²I.
  VectorXd weights(1);
  weights << 1.0;
  MatrixXd mean(3, 1);
  mean << 0.7, -1.2, 2.0;
  std::vector<MatrixXd> covariance(1, MatrixXd(3, 3));
  covariance[0] << 2.0, 0.5, -0.3,  //
      0.5, 1.0, 0.2,                //
      -0.3, 0.2, 0.4;
  const GaussianMixturePath<CondOT<double>> path(
      GaussianMixture<double>::with_covariances(weights, mean, covariance));
  const CondOT<double> scheduler;
  const auto moments = [&](double t) {
    const double alpha = scheduler.alpha(t);
    const double sigma = scheduler.sigma(t);
    MatrixXd moments(3, 4);  // [m_t | C_t]
    moments.col(0) = alpha * mean;
    moments.rightCols(3) = alpha * alpha * covariance[0] + sigma * sigma * MatrixXd::Identity(3, 3);
    return moments;
  };
  for (const double t : {0.0, 0.25, 0.5, 0.9, 1.0}) {
    INFO("t = " << t);
    // Under CondOT m_t and C_t are polynomials of degree ≤ 2, so these differences are exact
    // up to rounding. Near the ends, where the stencil would leave [0, 1], it is centred inside
    // and the derivative carried to t with the second difference (exact for quadratics).
    const double h = 1e-3;
    const double centre = std::clamp(t, 2 * h, 1.0 - 2 * h);
    const MatrixXd rates =
        central_difference<MatrixXd>([&](double step) { return moments(centre + step); }, h);
    const MatrixXd rates_at_t =
        rates + (t - centre) * (moments(centre + h) - 2.0 * moments(centre) + moments(centre - h)) /
                    (h * h);
    const VectorXd mean_rate = rates_at_t.col(0);
    const MatrixXd covariance_rate = rates_at_t.rightCols(3);
    const MatrixXd covariance_t = moments(t).rightCols(3);
    const VectorXd mean_t = moments(t).col(0);

    // B from the jvp with unit tangents; linearity from three points far apart.
    MatrixXd points(3, 4);
    points.col(0) = mean_t;
    points.col(1) = mean_t + VectorXd::Constant(3, 5.0);
    points.col(2) = mean_t - VectorXd::Constant(3, 3.0);
    points.col(3) = VectorXd::Zero(3);
    MatrixXd gain(3, 3);
    for (Index i = 0; i < 3; ++i) {
      MatrixXd unit = MatrixXd::Zero(3, 1);
      unit(i, 0) = 1.0;
      MatrixXd column(3, 1);
      path.jvp(t, points.col(1), unit, column);
      gain.col(i) = column;
    }
    const MatrixXd velocity = velocity_of(path, t, points);
    CHECK_THAT((velocity.col(0) - mean_rate).cwiseAbs().maxCoeff(), WithinAbs(0.0, 1e-9));
    for (Index j = 1; j < 4; ++j) {
      const VectorXd expected = mean_rate + gain * (points.col(j) - mean_t);
      CHECK_THAT(max_relative_error(velocity.col(j), expected), WithinAbs(0.0, 1e-12));
    }
    CHECK_THAT((gain - gain.transpose()).cwiseAbs().maxCoeff(), WithinAbs(0.0, 1e-13));
    const MatrixXd lyapunov = gain * covariance_t + covariance_t * gain.transpose();
    CHECK_THAT((lyapunov - covariance_rate).cwiseAbs().maxCoeff(), WithinAbs(0.0, 1e-9));
    CHECK_THAT(divergence_of(path, t, points)(0), WithinAbs(gain.trace(), 1e-12));
  }
}

TEST_CASE("samples have the mixture's mean and covariance", "[oracle]") {
  // Each sample mean and covariance entry is compared within 5 standard errors, estimated from
  // the analytic variance (means) and the sample variance of the centred products (covariances).
  for (const GaussianMixture<double>& mixture : {planar_mixture(), five_dim_mixture()}) {
    INFO("d = " << mixture.dim());
    const Index count = 200000;
    std::mt19937_64 generator(99);
    const MatrixXd samples = mixture.sample(count, generator);
    REQUIRE(samples.rows() == mixture.dim());
    REQUIRE(samples.cols() == count);
    const VectorXd mean = mixture_mean(mixture);
    const MatrixXd covariance = mixture_covariance(mixture);
    const VectorXd sample_mean = samples.rowwise().mean();
    const MatrixXd centred = samples.colwise() - sample_mean;
    const double n = static_cast<double>(count);
    const MatrixXd sample_covariance = centred * centred.transpose() / (n - 1.0);
    for (Index i = 0; i < mixture.dim(); ++i) {
      const double standard_error = std::sqrt(covariance(i, i) / n);
      CHECK(std::abs(sample_mean(i) - mean(i)) < 5.0 * standard_error);
      for (Index j = 0; j < mixture.dim(); ++j) {
        const VectorXd product = centred.row(i).cwiseProduct(centred.row(j)).transpose();
        const double product_deviation =
            std::sqrt((product.array() - product.mean()).square().sum() / (n - 1.0));
        CHECK(std::abs(sample_covariance(i, j) - covariance(i, j)) <
              5.0 * product_deviation / std::sqrt(n));
      }
    }
  }
}

TEST_CASE("sampling uses only the caller's generator", "[oracle]") {
  const GaussianMixture<double> mixture = planar_mixture();
  std::mt19937_64 first(5);
  std::mt19937_64 second(5);
  CHECK(mixture.sample(100, first) == mixture.sample(100, second));
  CHECK(mixture.sample(0, first).cols() == 0);
}

TEST_CASE("marginal(t) agrees with the path, p_0 is N(0, I) and p_1 is the data", "[oracle]") {
  const GaussianMixturePath<CondOT<double>> path(five_dim_mixture());
  const MatrixXd x = probe_points(path, 0.5, 40, 3);
  for (const double t : {0.0, 0.3, 0.7, 1.0}) {
    INFO("t = " << t);
    const GaussianMixture<double> marginal = path.marginal(t);
    CHECK_THAT(max_relative_error(marginal.log_prob(x), path.log_prob(t, x)),
               WithinAbs(0.0, 1e-13));
    CHECK_THAT(max_relative_error(marginal.score(x), path.score(t, x)), WithinAbs(0.0, 1e-13));
    for (Index k = 0; k < marginal.components(); ++k) {
      const double alpha = path.scheduler().alpha(t);
      const double sigma = path.scheduler().sigma(t);
      const MatrixXd expected =
          alpha * alpha * path.data().covariance(k) + sigma * sigma * MatrixXd::Identity(5, 5);
      CHECK_THAT((marginal.covariance(k) - expected).cwiseAbs().maxCoeff(), WithinAbs(0.0, 1e-15));
      // The rounded product, evaluated first: a fused multiply-subtract would not cancel.
      const VectorXd scaled_mean = (alpha * path.data().means().col(k)).eval();
      CHECK(marginal.means().col(k) == scaled_mean);
    }
  }
  // t = 0: N(0, I) exactly, whatever the data.
  const GaussianMixture<double> source = path.marginal(0.0);
  CHECK(source.means().isZero(0.0));
  for (Index k = 0; k < source.components(); ++k) {
    CHECK(source.covariance(k) == MatrixXd::Identity(5, 5));
  }
  const VectorXd standard_normal =
      (-0.5 * x.colwise().squaredNorm().array() - 2.5 * std::log(2.0 * std::numbers::pi))
          .transpose();
  CHECK_THAT(max_relative_error(path.log_prob(0.0, x), standard_normal), WithinAbs(0.0, 1e-14));
  CHECK_THAT(max_relative_error(path.score(0.0, x), MatrixXd(-x)), WithinAbs(0.0, 1e-14));
  // At t = 0 the velocity is α̇ E[x₁] + σ̇ x; at t = 1 (CondOT) it is x. At t = 0 the posterior
  // weights equal w_k only up to the rounding of |Q_kᵀx|² (d ε |x|² ≈ 1e-13 for |x|² ≈ 100),
  // which multiplies the means (|μ_k| ≲ 4): hence 1e-12.
  const MatrixXd start = (mixture_mean(path.data()) * Eigen::RowVectorXd::Ones(x.cols()) - x);
  CHECK_THAT(max_relative_error(velocity_of(path, 0.0, x), start), WithinAbs(0.0, 1e-12));
  CHECK_THAT(max_relative_error(velocity_of(path, 1.0, x), x), WithinAbs(0.0, 1e-13));
  // t = 1: the data distribution itself.
  CHECK_THAT(max_relative_error(path.log_prob(1.0, x), path.data().log_prob(x)),
             WithinAbs(0.0, 1e-15));
  CHECK_THAT(max_relative_error(path.score(1.0, x), path.data().score(x)), WithinAbs(0.0, 1e-15));
}

TEST_CASE("a batch larger than a block equals its columns evaluated one by one", "[oracle]") {
  const GaussianMixturePath<CondOT<double>> path(planar_mixture());
  const double t = 0.6;
  const MatrixXd x = probe_points(path, t, 1300, 17);
  const MatrixXd direction = MatrixXd::Ones(2, x.cols());
  const VectorXd log_density = path.log_prob(t, x);
  const MatrixXd score = path.score(t, x);
  const MatrixXd velocity = velocity_of(path, t, x);
  const VectorXd divergence = divergence_of(path, t, x);
  MatrixXd jvp(2, x.cols());
  MatrixXd vjp(2, x.cols());
  path.jvp(t, x, direction, jvp);
  path.vjp(t, x, direction, vjp);
  double largest_error = 0.0;
  for (Index j = 0; j < x.cols(); j += 37) {
    const MatrixXd column = x.col(j);
    const MatrixXd one = direction.col(j);
    MatrixXd single(2, 1);
    largest_error = std::max(largest_error, std::abs(path.log_prob(t, column)(0) - log_density(j)));
    largest_error = std::max(largest_error, (path.score(t, column) - score.col(j)).norm());
    largest_error =
        std::max(largest_error, (velocity_of(path, t, column) - velocity.col(j)).norm());
    largest_error =
        std::max(largest_error, std::abs(divergence_of(path, t, column)(0) - divergence(j)));
    path.jvp(t, column, one, single);
    largest_error = std::max(largest_error, (single - jvp.col(j)).norm());
    path.vjp(t, column, one, single);
    largest_error = std::max(largest_error, (single - vjp.col(j)).norm());
  }
  CHECK_THAT(largest_error, WithinAbs(0.0, 1e-12));
}

TEST_CASE("far-away points give finite, accurate values", "[oracle]") {
  // At |x| = 1e6 every component density underflows (exp(−1e12)); log-sum-exp keeps the
  // posterior finite and the reference (also log-sum-exp, via Cholesky) agrees.
  const GaussianMixturePath<CondOT<double>> path(planar_mixture());
  MatrixXd x(2, 6);
  x << 1e3, -1e3, 0.0, 1e6, -1e6, 7e5,  //
      0.0, 1e3, -1e3, 1e6, 3e5, -1e6;
  for (const double t : {0.0, 0.4, 1.0}) {
    INFO("t = " << t);
    const ReferencePath reference = reference_at(path, t);
    const VectorXd log_density = path.log_prob(t, x);
    const MatrixXd velocity = velocity_of(path, t, x);
    REQUIRE(log_density.allFinite());
    REQUIRE(path.score(t, x).allFinite());
    REQUIRE(divergence_of(path, t, x).allFinite());
    for (Index j = 0; j < x.cols(); ++j) {
      CHECK_THAT(log_density(j), WithinRel(reference.log_prob(x.col(j)), 1e-12));
      CHECK_THAT(max_relative_error(velocity.col(j), reference.velocity(x.col(j))),
                 WithinAbs(0.0, 1e-9));
    }
  }
  // A squared Mahalanobis distance that overflows is a numerical error, not a silent NaN.
  MatrixXd overflow(2, 2);
  overflow << 0.0, 1e200,  //
      0.0, 0.0;
  CHECK_THROWS_AS(path.log_prob(0.5, overflow), flowmatch::numerical_error);
  CHECK_THROWS_WITH(path.log_prob(0.5, overflow), Catch::Contains("sample 1"));
  // The index counts from the start of the batch, across blocks.
  MatrixXd long_batch = MatrixXd::Zero(2, 1300);
  long_batch(0, 1000) = 1e200;
  CHECK_THROWS_WITH(path.score(0.5, long_batch), Catch::Contains("sample 1000"));
  try {
    MatrixXd out(2, 1300);
    path(0.5, long_batch, out);
    FAIL("no exception");
  } catch (const flowmatch::numerical_error& error) {
    CHECK(error.sample() == 1000);
    CHECK(error.time() == 0.5);
  }
}

TEST_CASE("float instantiation agrees with double", "[oracle]") {
  // Float rounding (6e-8) amplified by the conditioning of C_t (≤ 10) and by sums of terms of
  // size ≲ 10 stays below 1e-5; the tolerance is 1e-4 relative.
  const GaussianMixture<double> data = planar_mixture();
  std::vector<Matrix<float>> covariances;
  for (Index k = 0; k < data.components(); ++k) {
    covariances.push_back(data.covariance(k).cast<float>());
  }
  const GaussianMixturePath<CondOT<float>> single(GaussianMixture<float>::with_covariances(
      data.weights().cast<float>(), data.means().cast<float>(), covariances));
  const GaussianMixturePath<CondOT<double>> reference(data);
  const MatrixXd x = probe_points(reference, 0.5, 50, 23);
  const Matrix<float> x_float = x.cast<float>();
  const MatrixXd x_rounded = x_float.cast<double>();
  for (const double t : {0.0, 0.5, 1.0}) {
    INFO("t = " << t);
    const auto t_float = static_cast<float>(t);
    CHECK_THAT(max_relative_error(single.log_prob(t_float, x_float).cast<double>(),
                                  reference.log_prob(t, x_rounded)),
               WithinAbs(0.0, 1e-4));
    CHECK_THAT(max_relative_error(single.score(t_float, x_float).cast<double>(),
                                  reference.score(t, x_rounded)),
               WithinAbs(0.0, 1e-4));
    Matrix<float> velocity(2, x.cols());
    single(t_float, x_float, velocity);
    CHECK_THAT(max_relative_error(velocity.cast<double>(), velocity_of(reference, t, x_rounded)),
               WithinAbs(0.0, 1e-4));
    Vector<float> divergence(x.cols());
    single.divergence(t_float, x_float, divergence);
    CHECK_THAT(
        max_relative_error(divergence.cast<double>(), divergence_of(reference, t, x_rounded)),
        WithinAbs(0.0, 1e-4));
    Matrix<float> jvp(2, x.cols());
    single.jvp(t_float, x_float, x_float, jvp);
    MatrixXd jvp_double(2, x.cols());
    reference.jvp(t, x_rounded, x_rounded, jvp_double);
    CHECK_THAT(max_relative_error(jvp.cast<double>(), jvp_double), WithinAbs(0.0, 1e-4));
  }
  std::mt19937_64 generator(1);
  const Matrix<float> samples = single.data().sample(1000, generator);
  CHECK(samples.allFinite());
  CHECK(std::abs(samples.row(1).mean() - static_cast<float>(mixture_mean(data)(1))) < 0.2f);
}

TEST_CASE("a one-dimensional diagonal mixture", "[oracle]") {
  VectorXd weights(2);
  weights << 1.0, 1.0;
  MatrixXd means(1, 2);
  means << -2.0, 1.0;
  MatrixXd variances(1, 2);
  variances << 0.25, 1.5;
  const GaussianMixturePath<CondOT<double>> path(
      GaussianMixture<double>::with_diagonal_covariances(weights, means, variances));
  CHECK(path.data().covariance(1)(0, 0) == 1.5);
  for (const double t : {0.0, 0.4, 1.0}) {
    check_against_differences_and_reference(path, t, true);
  }
  check_continuity_equation(path, 0.5);
  // Direct 1-D formula: p(x) = ½ N(x; −2α, 0.25α² + σ²) + ½ N(x; α, 1.5α² + σ²).
  const double t = 0.4;
  const double alpha = 0.4;
  const double sigma = 0.6;
  const auto normal_density = [](double x, double mean, double variance) {
    return std::exp(-0.5 * (x - mean) * (x - mean) / variance) /
           std::sqrt(2.0 * std::numbers::pi * variance);
  };
  for (const double x : {-3.0, -0.5, 0.0, 0.8, 2.5}) {
    const double expected =
        0.5 * normal_density(x, -2.0 * alpha, 0.25 * alpha * alpha + sigma * sigma) +
        0.5 * normal_density(x, alpha, 1.5 * alpha * alpha + sigma * sigma);
    const MatrixXd point = MatrixXd::Constant(1, 1, x);
    CHECK_THAT(path.log_prob(t, point)(0), WithinRel(std::log(expected), 1e-13));
  }
}

TEST_CASE("bad inputs throw", "[oracle]") {
  using Mixture = GaussianMixture<double>;
  const GaussianMixture<double> valid = planar_mixture();
  const VectorXd weights = valid.weights();
  const MatrixXd means = valid.means();
  std::vector<MatrixXd> covariances;
  for (Index k = 0; k < valid.components(); ++k) covariances.push_back(valid.covariance(k));
  const MatrixXd variances = MatrixXd::Ones(2, 3);

  SECTION("weights") {
    CHECK_THROWS_AS(Mixture::with_covariances(VectorXd(0), MatrixXd(2, 0), {}),
                    std::invalid_argument);
    VectorXd bad = weights;
    for (const double value : {0.0, -0.1, std::nan(""), std::numeric_limits<double>::infinity()}) {
      bad(1) = value;
      CHECK_THROWS_AS(Mixture::with_covariances(bad, means, covariances), std::invalid_argument);
      CHECK_THROWS_WITH(Mixture::with_diagonal_covariances(bad, means, variances),
                        Catch::Contains("component 1"));
    }
    CHECK_THROWS_WITH(Mixture::with_covariances(weights.head(2), means, covariances),
                      Catch::Contains("means"));
    const VectorXd huge = VectorXd::Constant(3, std::numeric_limits<double>::max());
    CHECK_THROWS_WITH(Mixture::with_covariances(huge, means, covariances),
                      Catch::Contains("finite sum"));
  }
  SECTION("means") {
    MatrixXd bad = means;
    bad(0, 2) = std::nan("");
    CHECK_THROWS_WITH(Mixture::with_covariances(weights, bad, covariances),
                      Catch::Contains("means") && Catch::Contains("column 2"));
    CHECK_THROWS_AS(Mixture::with_diagonal_covariances(weights, MatrixXd(0, 3), MatrixXd(0, 3)),
                    std::invalid_argument);
  }
  SECTION("covariances") {
    CHECK_THROWS_WITH(Mixture::with_covariances(weights, means, {covariances[0], covariances[1]}),
                      Catch::Contains("covariances has 2 entries, expected one per component (3)"));
    std::vector<MatrixXd> bad = covariances;
    bad[1] = MatrixXd::Identity(3, 3);
    CHECK_THROWS_WITH(Mixture::with_covariances(weights, means, bad),
                      Catch::Contains("component 1") && Catch::Contains("3x3"));
    bad[1].resize(2, 2);
    bad[1] << 1.0, 2.0, 2.0, 1.0;  // eigenvalues 3 and −1
    CHECK_THROWS_WITH(Mixture::with_covariances(weights, means, bad),
                      Catch::Contains("component 1") && Catch::Contains("positive definite"));
    bad[1] << 1.0, 1.0, 1.0, 1.0;  // singular
    CHECK_THROWS_WITH(Mixture::with_covariances(weights, means, bad),
                      Catch::Contains("positive definite"));
    bad[1] << 1.0, 0.5, 0.0, 1.0;  // not symmetric
    CHECK_THROWS_WITH(Mixture::with_covariances(weights, means, bad),
                      Catch::Contains("component 1") && Catch::Contains("symmetric"));
    bad[1] << 1.0, 0.0, 0.0, std::nan("");
    CHECK_THROWS_WITH(Mixture::with_covariances(weights, means, bad),
                      Catch::Contains("component 1") && Catch::Contains("non-finite"));
  }
  SECTION("variances") {
    MatrixXd bad = variances;
    bad(1, 2) = 0.0;
    CHECK_THROWS_WITH(Mixture::with_diagonal_covariances(weights, means, bad),
                      Catch::Contains("component 2"));
    bad(1, 2) = std::nan("");
    CHECK_THROWS_AS(Mixture::with_diagonal_covariances(weights, means, bad), std::invalid_argument);
    CHECK_THROWS_AS(Mixture::with_diagonal_covariances(weights, means, MatrixXd::Ones(3, 3)),
                    std::invalid_argument);
  }
  SECTION("mixture members") {
    CHECK_THROWS_AS(valid.covariance(3), std::invalid_argument);
    CHECK_THROWS_AS(valid.eigenvectors(-1), std::invalid_argument);
    std::mt19937_64 generator(1);
    CHECK_THROWS_AS(valid.sample(-1, generator), std::invalid_argument);
    CHECK_THROWS_WITH(valid.log_prob(MatrixXd::Zero(3, 4)), Catch::Contains("3x4"));
    MatrixXd x = MatrixXd::Zero(2, 4);
    x(0, 3) = std::numeric_limits<double>::infinity();
    CHECK_THROWS_WITH(valid.score(x), Catch::Contains("column 3"));
    CHECK_THROWS_AS(valid.scaled_plus_noise(0.0, 0.0), std::invalid_argument);
    CHECK_THROWS_AS(valid.scaled_plus_noise(std::nan(""), 1.0), std::invalid_argument);
  }
  SECTION("a scheduler whose coefficients vanish together") {
    // α_t = σ_t = 0 would make every C_k(t) singular.
    struct Collapsing {
      using scalar_type = double;
      double alpha(double) const { return 0.0; }
      double sigma(double) const { return 0.0; }
      double d_alpha(double) const { return 0.0; }
      double d_sigma(double) const { return 0.0; }
      double snr_inverse(double) const { return 0.0; }
    };
    const GaussianMixturePath<Collapsing> path(valid);
    CHECK_THROWS_WITH(path.log_prob(0.5, MatrixXd::Zero(2, 1)), Catch::Contains("singular"));
    CHECK_THROWS_AS(path.marginal(0.5), std::invalid_argument);
  }
  SECTION("path members") {
    const GaussianMixturePath<CondOT<double>> path(valid);
    const MatrixXd x = MatrixXd::Zero(2, 4);
    MatrixXd out(2, 4);
    VectorXd divergence(4);
    for (const double t : {-0.1, 1.1, std::nan("")}) {
      CHECK_THROWS_AS(path.log_prob(t, x), std::domain_error);
      CHECK_THROWS_AS(path.score(t, x), std::domain_error);
      CHECK_THROWS_AS(path(t, x, out), std::domain_error);
      CHECK_THROWS_AS(path.divergence(t, x, divergence), std::domain_error);
      CHECK_THROWS_AS(path.jvp(t, x, x, out), std::domain_error);
      CHECK_THROWS_AS(path.vjp(t, x, x, out), std::domain_error);
      CHECK_THROWS_AS(path.marginal(t), std::domain_error);
    }
    const MatrixXd wrong_rows = MatrixXd::Zero(3, 4);
    CHECK_THROWS_WITH(path(0.5, wrong_rows, out), Catch::Contains("x has shape 3x4"));
    CHECK_THROWS_AS(path.log_prob(0.5, wrong_rows), std::invalid_argument);
    CHECK_THROWS_AS(path.divergence(0.5, wrong_rows, divergence), std::invalid_argument);
    MatrixXd wrong_out(2, 3);
    CHECK_THROWS_WITH(path(0.5, x, wrong_out), Catch::Contains("out"));
    VectorXd wrong_divergence(3);
    CHECK_THROWS_AS(path.divergence(0.5, x, wrong_divergence), std::invalid_argument);
    CHECK_THROWS_WITH(path.jvp(0.5, x, MatrixXd::Zero(2, 3), out), Catch::Contains("tangent"));
    MatrixXd not_finite = x;
    not_finite(1, 2) = std::nan("");
    CHECK_THROWS_WITH(path.vjp(0.5, x, not_finite, out),
                      Catch::Contains("cotangent") && Catch::Contains("column 2"));
    CHECK_THROWS_WITH(path(0.5, not_finite, out), Catch::Contains("column 2"));
  }
}

}  // namespace test_oracle
