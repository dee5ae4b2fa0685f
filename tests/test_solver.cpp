// Tests of the ODE integration layer against closed-form flows, measured convergence orders,
// round trips and every failure the solver reports.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include <boost/array.hpp>
#include <boost/fusion/container/generation/make_vector.hpp>
#include <boost/numeric/odeint/stepper/euler.hpp>
#include <boost/numeric/odeint/stepper/explicit_generic_rk.hpp>
#include <boost/numeric/odeint/stepper/runge_kutta4.hpp>
#include <boost/numeric/odeint/stepper/runge_kutta_fehlberg78.hpp>

#include "flowmatch/core/errors.hpp"
#include "flowmatch/oracle/gaussian_mixture_path.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/solver/integrate.hpp"

namespace test_solver {

namespace {

using Catch::Matchers::WithinAbs;
using flowmatch::ConstMatrixRef;
using flowmatch::ErrorNorm;
using flowmatch::Matrix;
using flowmatch::MatrixRef;
using flowmatch::Method;
using flowmatch::SolverOptions;
using flowmatch::Vector;

constexpr Method fixed_methods[] = {Method::euler, Method::midpoint, Method::heun2,
                                    Method::heun3, Method::rk4,      Method::rk38};
constexpr Method adaptive_methods[] = {Method::dopri5, Method::rkf78, Method::tsit5};
constexpr Method all_methods[] = {Method::euler,  Method::midpoint, Method::heun2,
                                  Method::heun3,  Method::rk4,      Method::rk38,
                                  Method::dopri5, Method::rkf78,    Method::tsit5};

// Rotation x' = A x, A = [[0, −1], [1, 0]]: x(t) = R(t − t0) x(t0).
struct Rotation {
  template <class Scalar>
  void operator()(Scalar, const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> out) const {
    out.row(0) = -x.row(1);
    out.row(1) = x.row(0);
  }
  static Matrix<double> exact(const Matrix<double>& x, double elapsed) {
    Matrix<double> rotated(2, x.cols());
    rotated.row(0) = std::cos(elapsed) * x.row(0) - std::sin(elapsed) * x.row(1);
    rotated.row(1) = std::sin(elapsed) * x.row(0) + std::cos(elapsed) * x.row(1);
    return rotated;
  }
};

// Non-autonomous x' = cos(t)·x: x(t) = x(t0)·exp(sin t − sin t0).
struct CosineGrowth {
  void operator()(double t, const ConstMatrixRef<double>& x, MatrixRef<double> out) const {
    out = std::cos(t) * x;
  }
  static Matrix<double> exact(const Matrix<double>& x, double t0, double t) {
    return x * std::exp(std::sin(t) - std::sin(t0));
  }
};

// The marginal velocity of the CondOT path x_t = t·x1 + (1 − t)·x0 from N(0, I) to
// N(μ, s²I). The flow is the affine map x_t = t·μ + σ_t·x0 with σ_t² = t²s² + (1 − t)²,
// so u_t(x) = μ + (σ̇_t/σ_t)(x − tμ) with σ̇_t/σ_t = (t s² − (1 − t))/σ_t²; at t = 1 it maps
// x0 to μ + s·x0.
template <class Scalar = double>
struct GaussianFlow {
  Vector<Scalar> mu;
  Scalar s;

  void operator()(Scalar t, const ConstMatrixRef<Scalar>& x, MatrixRef<Scalar> out) const {
    const Scalar variance = t * t * s * s + (1 - t) * (1 - t);
    const Scalar rate = (t * s * s - (1 - t)) / variance;
    out = rate * (x.colwise() - t * mu);
    out.colwise() += mu;
  }
  // The state at time t of the trajectory through x0 at t = 0.
  Matrix<Scalar> at(const Matrix<Scalar>& x0, Scalar t) const {
    const Scalar sigma = std::sqrt(t * t * s * s + (1 - t) * (1 - t));
    Matrix<Scalar> x = sigma * x0;
    x.colwise() += t * mu;
    return x;
  }
  // The noise x0 that the flow maps to x1 at t = 1.
  Matrix<Scalar> noise_of(const Matrix<Scalar>& x1) const { return (x1.colwise() - mu) / s; }
};

GaussianFlow<double> make_gaussian_flow() {
  Vector<double> mu(3);
  mu << 1.5, -0.5, 2.0;
  return {mu, 0.6};
}

Matrix<double> test_batch(Eigen::Index rows, Eigen::Index cols, unsigned seed) {
  std::mt19937_64 generator(seed);
  std::normal_distribution<double> normal;
  Matrix<double> x(rows, cols);
  for (Eigen::Index j = 0; j < cols; ++j) {
    for (Eigen::Index i = 0; i < rows; ++i) x(i, j) = normal(generator);
  }
  return x;
}

double max_error(const Matrix<double>& a, const Matrix<double>& b) {
  return (a - b).cwiseAbs().maxCoeff();
}

// Least-squares slope of log(error) against log(step).
double fitted_order(const std::vector<double>& steps, const std::vector<double>& errors) {
  double mean_x = 0, mean_y = 0;
  for (std::size_t k = 0; k < steps.size(); ++k) {
    mean_x += std::log(steps[k]) / steps.size();
    mean_y += std::log(errors[k]) / steps.size();
  }
  double covariance = 0, variance = 0;
  for (std::size_t k = 0; k < steps.size(); ++k) {
    const double dx = std::log(steps[k]) - mean_x;
    covariance += dx * (std::log(errors[k]) - mean_y);
    variance += dx * dx;
  }
  return covariance / variance;
}

int expected_order(Method method) {
  switch (method) {
    case Method::euler:
      return 1;
    case Method::midpoint:
    case Method::heun2:
      return 2;
    case Method::heun3:
      return 3;
    default:
      return 4;
  }
}

std::size_t stages(Method method) {
  return static_cast<std::size_t>(expected_order(method));
}

const std::vector<double> unit_grid{0.0, 1.0};

}  // namespace

TEST_CASE("method names round-trip and unknown names list the valid ones", "[solver][method]") {
  for (const Method method : all_methods) {
    CHECK(flowmatch::method_from_name(flowmatch::method_name(method)) == method);
  }
  CHECK(flowmatch::method_name(Method::rk38) == "rk38");
  CHECK(flowmatch::is_adaptive(Method::dopri5));
  CHECK(flowmatch::is_adaptive(Method::rkf78));
  CHECK(flowmatch::is_adaptive(Method::tsit5));
  CHECK_FALSE(flowmatch::is_adaptive(Method::rk4));
  CHECK_FALSE(flowmatch::is_adaptive(Method::euler));
  CHECK_THROWS_AS(flowmatch::method_from_name("rk5"), std::invalid_argument);
  CHECK_THROWS_WITH(flowmatch::method_from_name("RK4"),
                    Catch::Contains("'RK4'") && Catch::Contains("euler") &&
                        Catch::Contains("tsit5") && Catch::Contains("rk38"));
  CHECK_THROWS_AS(flowmatch::method_name(static_cast<Method>(42)), std::invalid_argument);
}

TEST_CASE("error norms reduce the scaled error as documented", "[solver][norm]") {
  Matrix<double> error(2, 2);
  error << 1, -2, 3, 4;
  const Matrix<double> reference = Matrix<double>::Constant(2, 2, 1.0);
  // scale = atol + rtol·|x| = 0.5 + 0.5·1 = 1.
  CHECK(flowmatch::scaled_error_norm(ErrorNorm::max, error, reference, 0.5, 0.5) == 4.0);
  CHECK_THAT(flowmatch::scaled_error_norm(ErrorNorm::rms, error, reference, 0.5, 0.5),
             WithinAbs(std::sqrt((1.0 + 4.0 + 9.0 + 16.0) / 4.0), 1e-15));
}

TEST_CASE("fixed-step methods converge at their order", "[solver][order]") {
  const Matrix<double> x0 = test_batch(2, 3, 1);
  const Matrix<double> scalar_x0 = (Matrix<double>(1, 2) << 1.0, -0.5).finished();
  // Steps small enough for the asymptotic regime of every method on both problems.
  const std::vector<double> steps{1.0 / 10, 1.0 / 20, 1.0 / 40, 1.0 / 80};
  for (const Method method : fixed_methods) {
    std::vector<double> rotation_errors, growth_errors;
    for (const double step : steps) {
      SolverOptions<double> options;
      options.method = method;
      options.step_size = step;
      rotation_errors.push_back(
          max_error(flowmatch::sample(Rotation{}, x0, options).state, Rotation::exact(x0, 1.0)));
      growth_errors.push_back(max_error(flowmatch::sample(CosineGrowth{}, scalar_x0, options).state,
                                        CosineGrowth::exact(scalar_x0, 0.0, 1.0)));
    }
    INFO(flowmatch::method_name(method));
    CHECK_THAT(fitted_order(steps, rotation_errors), WithinAbs(expected_order(method), 0.2));
    CHECK_THAT(fitted_order(steps, growth_errors), WithinAbs(expected_order(method), 0.2));
  }
}

namespace {

// Odeint-style rotation x' = A x for driving error steppers directly.
void rotation_odeint(const Matrix<double>& x, Matrix<double>& dxdt, double t) {
  Rotation{}.operator()<double>(t, x, dxdt);
}

// Global error at t = 8 of fixed steps h of an odeint stepper (no error control) on the
// rotation, and the size of its error estimate for a single step h.
template <class Stepper>
void measure_error_stepper(const std::vector<double>& steps, double& order,
                           double& estimate_order) {
  const double t_end = 8.0;
  const Matrix<double> x0 = (Matrix<double>(2, 2) << 1.0, -0.5, 0.5, 2.0).finished();
  std::vector<double> errors, estimates;
  for (const double step : steps) {
    Stepper stepper;
    Matrix<double> x = x0;
    const int count = static_cast<int>(std::lround(t_end / step));
    for (int k = 0; k < count; ++k) stepper.do_step(rotation_odeint, x, k * step, step);
    errors.push_back(max_error(x, Rotation::exact(x0, t_end)));

    Stepper single;
    Matrix<double> y = x0;
    Matrix<double> estimate(2, 2);
    single.do_step(rotation_odeint, y, 0.0, step, estimate);
    estimates.push_back(estimate.cwiseAbs().maxCoeff());
  }
  order = fitted_order(steps, errors);
  estimate_order = fitted_order(steps, estimates);
}

}  // namespace

TEST_CASE("the adaptive pairs have their orders when stepped with fixed steps", "[solver][order]") {
  namespace odeint = boost::numeric::odeint;
  using State = Matrix<double>;
  using algebra = flowmatch::detail::odeint_algebra;
  using operations = flowmatch::detail::odeint_operations;
  double order = 0, estimate_order = 0;

  // A 5(4) pair: global error O(h^5); its error estimate (5th minus 4th order) is O(h^5).
  const std::vector<double> steps_54{1.0 / 8, 1.0 / 16, 1.0 / 32};
  measure_error_stepper<flowmatch::Tsit5Stepper<State, double>>(steps_54, order, estimate_order);
  CHECK_THAT(order, WithinAbs(5.0, 0.2));
  CHECK_THAT(estimate_order, WithinAbs(5.0, 0.2));

  measure_error_stepper<
      odeint::runge_kutta_dopri5<State, double, State, double, algebra, operations>>(
      steps_54, order, estimate_order);
  CHECK_THAT(order, WithinAbs(5.0, 0.2));
  CHECK_THAT(estimate_order, WithinAbs(5.0, 0.2));

  // Fehlberg 7(8) propagates the 8th-order solution; its estimate (8th minus 7th) is O(h^8).
  measure_error_stepper<flowmatch::Rkf78Stepper<State, double>>({1.0, 1.0 / 2, 1.0 / 4, 1.0 / 8},
                                                                order, estimate_order);
  CHECK_THAT(order, WithinAbs(8.0, 0.2));
  CHECK_THAT(estimate_order, WithinAbs(8.0, 0.2));
}

TEST_CASE("rkf78 takes the steps and error estimates of odeint's runge_kutta_fehlberg78",
          "[solver][order]") {
  namespace odeint = boost::numeric::odeint;
  using State = Matrix<double>;
  // Van der Pol (μ = 1) on a batch: nonlinear, so every stage enters the step.
  const auto van_der_pol = [](const State& x, State& dxdt, double) {
    dxdt.row(0) = x.row(1);
    dxdt.row(1) = (1.0 - x.row(0).array().square()).matrix().cwiseProduct(x.row(1)) - x.row(0);
  };
  flowmatch::Rkf78Stepper<State, double> ours;
  odeint::runge_kutta_fehlberg78<State, double, State, double, flowmatch::detail::odeint_algebra,
                                 flowmatch::detail::odeint_operations>
      theirs;
  State x = test_batch(2, 5, 30), y = x, x_error(2, 5), y_error(2, 5);
  double t = 0;
  for (const double step : {0.3, 0.1, 0.25, 0.05, 0.4}) {
    ours.do_step(van_der_pol, x, t, step, x_error);
    theirs.do_step(van_der_pol, y, t, step, y_error);
    t += step;
    CHECK(x == y);
    CHECK(x_error == y_error);
  }
}

TEST_CASE("tsit5's continuous extension is consistent with its step", "[solver][dense]") {
  using Tableau = flowmatch::Tsit5Tableau<double>;
  const auto end = Tableau::dense_weights(1.0);
  const double weights[7] = {Tableau::b1, Tableau::b2, Tableau::b3, Tableau::b4,
                             Tableau::b5, Tableau::b6, 0.0};
  for (std::size_t i = 0; i < 7; ++i) CHECK_THAT(end[i], WithinAbs(weights[i], 1e-14));
  // Σ b_i(θ) = θ: a constant field moves the state by θ·h·f.
  for (const double theta : {0.0, 0.1, 0.37, 0.5, 0.9}) {
    const auto at = Tableau::dense_weights(theta);
    double sum = 0;
    for (const double weight : at) sum += weight;
    CHECK_THAT(sum, WithinAbs(theta, 1e-14));
  }
}

namespace {

// A rooted tree as the list of the subtrees at its root.
struct Tree {
  std::vector<Tree> children;
};

std::size_t vertices(const Tree& tree) {
  std::size_t count = 1;
  for (const Tree& child : tree.children) count += vertices(child);
  return count;
}

// γ(τ) = |τ|·Π γ(children).
double density(const Tree& tree) {
  double gamma = static_cast<double>(vertices(tree));
  for (const Tree& child : tree.children) gamma *= density(child);
  return gamma;
}

// Φ_i(τ) = Π over the children of Σ_j a_ij·Φ_j(child), Φ_i(•) = 1, for the stages of a square
// tableau a.
std::vector<double> elementary_weights(const Tree& tree,
                                       const std::vector<std::vector<double>>& a) {
  std::vector<double> phi(a.size(), 1.0);
  for (const Tree& child : tree.children) {
    const std::vector<double> inner = elementary_weights(child, a);
    for (std::size_t i = 0; i < a.size(); ++i) {
      double sum = 0;
      for (std::size_t j = 0; j < a.size(); ++j) sum += a[i][j] * inner[j];
      phi[i] *= sum;
    }
  }
  return phi;
}

// Every rooted tree with at most max_vertices vertices, once each: a tree's children are
// earlier trees of the list, in non-increasing order of their place in it.
std::vector<Tree> trees_up_to(std::size_t max_vertices) {
  std::vector<Tree> trees{Tree{}};
  std::vector<std::size_t> sizes{1};
  std::vector<std::size_t> children;  // places in the list
  for (std::size_t n = 2; n <= max_vertices; ++n) {
    const std::size_t known = trees.size();
    // Children of sizes summing to rest, each at a place up to last.
    const auto add = [&](const auto& self, std::size_t rest, std::size_t last) -> void {
      if (rest == 0) {
        Tree tree;
        for (const std::size_t place : children) tree.children.push_back(trees[place]);
        trees.push_back(tree);
        sizes.push_back(n);
        return;
      }
      for (std::size_t place = 0; place <= last; ++place) {
        if (sizes[place] > rest) continue;
        children.push_back(place);
        self(self, rest - sizes[place], place);
        children.pop_back();
      }
    };
    add(add, n - 1, known - 1);
  }
  return trees;
}

// The tableau of rkf78 with its dense output as one square matrix over k₁..k₁₇: Fehlberg's 13
// stages, k₁₄ = f(t + h, x_new) (its row the step's weights) and the dense output's three.
std::vector<std::vector<double>> rkf78_dense_tableau() {
  using Tableau = flowmatch::Rkf78Tableau<double>;
  constexpr std::size_t stages = Tableau::stages + 1 + Tableau::dense_stages;
  std::vector<std::vector<double>> a(stages, std::vector<double>(stages, 0.0));
  for (std::size_t i = 0; i < Tableau::stages; ++i) {
    for (std::size_t j = 0; j + 1 < Tableau::stages; ++j) a[i][j] = Tableau::a[i][j];
    a[Tableau::stages][i] = Tableau::b[i];
  }
  for (std::size_t s = 0; s < Tableau::dense_stages; ++s) {
    for (std::size_t j = 0; j < Tableau::dense_a[s].size(); ++j) {
      a[Tableau::stages + 1 + s][j] = Tableau::dense_a[s][j];
    }
  }
  return a;
}

// Σ_i w_i·Φ_i(τ) − θ^|τ|/γ(τ): the defect of the order condition for τ.
double order_defect(const Tree& tree, const std::vector<std::vector<double>>& a,
                    std::span<const double> weights, double theta) {
  const std::vector<double> phi = elementary_weights(tree, a);
  double sum = 0;
  for (std::size_t i = 0; i < weights.size(); ++i) sum += weights[i] * phi[i];
  return sum - std::pow(theta, static_cast<double>(vertices(tree))) / density(tree);
}

}  // namespace

TEST_CASE("rkf78's continuous extension has order 7 and is consistent with its step",
          "[solver][dense]") {
  using Tableau = flowmatch::Rkf78Tableau<double>;
  const std::vector<std::vector<double>> a = rkf78_dense_tableau();
  const std::size_t stages = a.size();  // k₁..k₁₇
  const std::vector<Tree> trees = trees_up_to(7);
  REQUIRE(trees.size() == 85);  // 1 + 1 + 2 + 4 + 9 + 20 + 48
  // Each stage is evaluated at the time its row reaches: c_i = Σ_j a_ij.
  for (std::size_t i = 0; i < stages; ++i) {
    double row_sum = 0;
    for (const double entry : a[i]) row_sum += entry;
    const double c = i < Tableau::stages    ? Tableau::c[i]
                     : i == Tableau::stages ? 1.0
                                            : Tableau::dense_c[i - Tableau::stages - 1];
    INFO("stage " << i + 1);
    CHECK_THAT(c, WithinAbs(row_sum, 1e-14));
  }
  // The dense output's stages are evaluated on states of stage order 6, 6 and 7:
  // Σ_j a_sj·Φ_j(τ) = c_s^|τ|/γ(τ) for |τ| up to that order.
  const std::size_t stage_orders[Tableau::dense_stages] = {6, 6, 7};
  for (std::size_t s = 0; s < Tableau::dense_stages; ++s) {
    for (const Tree& tree : trees) {
      if (vertices(tree) > stage_orders[s]) continue;
      INFO("stage " << Tableau::stages + 2 + s << ", tree of order " << vertices(tree));
      CHECK_THAT(order_defect(tree, a, a[Tableau::stages + 1 + s], Tableau::dense_c[s]),
                 WithinAbs(0.0, 1e-14));
    }
  }
  // The interpolant ends on the step, and its derivative is f at both ends (b'(0) = e₁,
  // b'(1) = e₁₄, by differences over δ).
  const auto end = Tableau::dense_weights(1.0);
  const double delta = 1e-7;
  const auto near_start = Tableau::dense_weights(delta);
  const auto near_end = Tableau::dense_weights(1.0 - delta);
  for (std::size_t i = 0; i < stages; ++i) {
    INFO("stage " << i + 1);
    CHECK_THAT(end[i], WithinAbs(i < Tableau::stages ? Tableau::b[i] : 0.0, 1e-13));
    CHECK_THAT(near_start[i] / delta, WithinAbs(i == 0 ? 1.0 : 0.0, 1e-5));
    CHECK_THAT((end[i] - near_end[i]) / delta, WithinAbs(i == Tableau::stages ? 1.0 : 0.0, 1e-5));
  }
  // Order 7: Σ_i b_i(θ)·Φ_i(τ) = θ^|τ|/γ(τ) for every tree with |τ| ≤ 7 (for τ = • this is
  // Σ_i b_i(θ) = θ: a constant field moves the state by θ·h·f).
  for (const double theta : {0.0, 0.1, 0.37, 0.5, 0.9, 1.0}) {
    const auto weights = Tableau::dense_weights(theta);
    for (const Tree& tree : trees) {
      INFO("θ = " << theta << ", tree of order " << vertices(tree));
      CHECK_THAT(order_defect(tree, a, weights, theta), WithinAbs(0.0, 1e-13));
    }
  }
}

TEST_CASE("rkf78's dense output within one step has local order 8", "[solver][dense]") {
  // The two-body problem q'' = −q/|q|³ on an eccentric orbit, as a first-order system in
  // (q, q'). The error of the interpolated state at θh, against 200 steps of θh/200, falls like
  // h^(q+1) for an extension of order q = 7. (On a scalar field such as x' = x² the apparent
  // order is higher: its elementary differentials are too few to show the error's structure.)
  using State = Matrix<double>;
  const auto two_body = [](const State& x, State& dxdt, double) {
    const double cube = std::pow(x(0) * x(0) + x(1) * x(1), 1.5);
    dxdt << x(2), x(3), -x(0) / cube, -x(1) / cube;
  };
  const State x0 = (State(4, 1) << 0.5, 0.0, 0.0, 1.7).finished();
  const std::vector<double> steps{0.1, 0.05, 0.025};
  for (const double theta : {0.3, 0.5, 0.8}) {
    std::vector<double> errors;
    for (const double step : steps) {
      flowmatch::Rkf78Stepper<State, double> stepper;
      State start_derivative(4, 1), end(4, 1), end_derivative(4, 1), interpolated(4, 1);
      two_body(x0, start_derivative, 0.0);
      stepper.do_step(two_body, x0, start_derivative, 0.0, end, step);
      two_body(end, end_derivative, step);
      stepper.prepare_dense_output(two_body, x0, start_derivative, 0.0, end_derivative, step);
      stepper.calc_state(theta * step, interpolated, x0, start_derivative, 0.0, end, end_derivative,
                         step);
      State reference = x0;
      flowmatch::Rkf78Stepper<State, double> reference_stepper;
      constexpr int substeps = 200;
      for (int n = 0; n < substeps; ++n) {
        reference_stepper.do_step(two_body, reference, n * theta * step / substeps,
                                  theta * step / substeps);
      }
      errors.push_back(max_error(interpolated, reference));
    }
    INFO("θ = " << theta);
    CHECK_THAT(fitted_order(steps, errors), WithinAbs(8.0, 0.3));
  }
}

TEST_CASE("dense output: a trajectory agrees with stopped solves and costs only extra stages",
          "[solver][dense]") {
  const auto flow = make_gaussian_flow();
  const Matrix<double> x = test_batch(3, 6, 26);
  std::vector<double> grid(101);
  for (std::size_t k = 0; k < grid.size(); ++k) grid[k] = static_cast<double>(k) / 100;
  for (const Method method : {Method::dopri5, Method::tsit5, Method::rkf78}) {
    INFO(flowmatch::method_name(method));
    SolverOptions<double> options;
    options.method = method;
    options.rtol = options.atol = 1e-7;
    const auto plain = flowmatch::sample(flow, x, options);
    options.return_trajectory = true;
    const auto dense = flowmatch::integrate(flow, x, grid, options);
    // The same steps; dopri5 and tsit5 interpolate for free, rkf78 evaluates its 3 dense-output
    // stages in each step holding a grid time to interpolate: every step here, each being
    // longer than the grid's spacing.
    CHECK(dense.state == plain.state);
    CHECK(dense.stats.accepted == plain.stats.accepted);
    REQUIRE(dense.stats.min_step > 0.01);
    const std::size_t extra_stages = method == Method::rkf78 ? 3 : 0;
    CHECK(dense.stats.nfe == plain.stats.nfe + extra_stages * dense.stats.accepted);
    options.return_trajectory = false;
    for (std::size_t k = 1; k < grid.size(); k += 9) {
      const auto stopped =
          flowmatch::integrate(flow, x, std::vector<double>{0.0, grid[k]}, options);
      INFO("t = " << grid[k]);
      // Both are within the tolerance of the exact flow; so is their difference.
      CHECK((dense.trajectory[k] - stopped.state).cwiseAbs().maxCoeff() <=
            10 * options.rtol * (1 + stopped.state.cwiseAbs().maxCoeff()));
      CHECK((dense.trajectory[k] - flow.at(x, grid[k])).cwiseAbs().maxCoeff() <=
            10 * options.rtol * (1 + stopped.state.cwiseAbs().maxCoeff()));
    }
  }
}

TEST_CASE("tsit5 steps in place exactly as out of place", "[solver][order]") {
  const Matrix<double> x0 = (Matrix<double>(2, 2) << 1.0, -0.5, 0.5, 2.0).finished();
  Matrix<double> derivative(2, 2);
  rotation_odeint(x0, derivative, 0.0);

  flowmatch::Tsit5Stepper<Matrix<double>, double> in_place_stepper, stepper;
  Matrix<double> x = x0, x_derivative = derivative, in_place_error(2, 2);
  in_place_stepper.do_step(rotation_odeint, x, x_derivative, 0.0, 0.1, in_place_error);
  Matrix<double> out(2, 2), out_derivative(2, 2), error(2, 2);
  stepper.do_step(rotation_odeint, x0, derivative, 0.0, out, out_derivative, 0.1, error);

  CHECK(x == out);
  CHECK(x_derivative == out_derivative);
  CHECK(in_place_error == error);
  CHECK(error.cwiseAbs().maxCoeff() > 0);
  CHECK(max_error(out, Rotation::exact(x0, 0.1)) < 1e-6);
}

TEST_CASE("adaptive methods reach the requested accuracy, shrinking with the tolerance",
          "[solver][adaptive]") {
  const auto flow = make_gaussian_flow();
  const Matrix<double> gaussian_x0 = test_batch(3, 8, 2);
  const Matrix<double> gaussian_x1 = flow.at(gaussian_x0, 1.0);
  const Matrix<double> rotation_x0 = test_batch(2, 8, 3);
  const Matrix<double> rotation_x1 = Rotation::exact(rotation_x0, 1.0);
  const std::pair<flowmatch::StepController, flowmatch::PidCoefficients> controllers[] = {
      {flowmatch::StepController::integral, flowmatch::PidCoefficients::integral()},
      {flowmatch::StepController::pid, flowmatch::PidCoefficients::pi34()},
      {flowmatch::StepController::pid, flowmatch::PidCoefficients::h211pi()},
      {flowmatch::StepController::pid, flowmatch::PidCoefficients::h312pid()},
      {flowmatch::StepController::pid, flowmatch::PidCoefficients::kennedy_carpenter()}};
  for (const Method method : adaptive_methods) {
    for (const auto& [controller, coefficients] : controllers) {
      for (const ErrorNorm norm : {ErrorNorm::rms, ErrorNorm::max}) {
        std::vector<double> gaussian_errors, rotation_errors;
        for (const double tolerance : {1e-4, 1e-6, 1e-8}) {
          SolverOptions<double> options;
          options.method = method;
          options.controller = controller;
          options.pid_coefficients = coefficients;
          options.error_norm = norm;
          options.rtol = options.atol = tolerance;
          gaussian_errors.push_back(
              max_error(flowmatch::sample(flow, gaussian_x0, options).state, gaussian_x1));
          rotation_errors.push_back(
              max_error(flowmatch::sample(Rotation{}, rotation_x0, options).state, rotation_x1));
          INFO(flowmatch::method_name(method)
               << " tol " << tolerance << " rms " << (norm == ErrorNorm::rms) << " beta "
               << coefficients.beta1 << ", " << coefficients.beta2 << ", " << coefficients.beta3);
          // Each entry is controlled to atol + rtol·|x| per step; over a unit interval the
          // global error stays within a small multiple of that scale.
          CHECK(gaussian_errors.back() <= 10 * tolerance * (1 + gaussian_x1.cwiseAbs().maxCoeff()));
          CHECK(rotation_errors.back() <= 10 * tolerance * (1 + rotation_x1.cwiseAbs().maxCoeff()));
        }
        // The tightest tolerance gives the smallest error. (At loose tolerances a high-order
        // pair takes a handful of steps whose error is far below the tolerance and need not
        // decrease monotonically, so no ratio between the loose ones is asserted.)
        INFO(flowmatch::method_name(method));
        CHECK(gaussian_errors[2] < std::min(gaussian_errors[0], gaussian_errors[1]));
        CHECK(rotation_errors[2] < std::min(rotation_errors[0], rotation_errors[1]));
      }
    }
  }
}

TEST_CASE("the integral controller is the PID controller with coefficients (1, 0, 0)",
          "[solver][controller]") {
  const Matrix<double> x = test_batch(2, 8, 31);
  for (const Method method : adaptive_methods) {
    SolverOptions<double> integral;
    integral.method = method;
    integral.controller = flowmatch::StepController::integral;
    SolverOptions<double> pid = integral;
    pid.controller = flowmatch::StepController::pid;
    pid.pid_coefficients = flowmatch::PidCoefficients::integral();
    const auto first = flowmatch::sample(Rotation{}, x, integral);
    const auto second = flowmatch::sample(Rotation{}, x, pid);
    INFO(flowmatch::method_name(method));
    CHECK(first.state == second.state);
    CHECK(first.stats.nfe == second.stats.nfe);
    // A controller with memory takes a different step sequence.
    pid.pid_coefficients = flowmatch::PidCoefficients::pi34();
    CHECK(flowmatch::sample(Rotation{}, x, pid).stats.nfe != first.stats.nfe);
  }
}

TEST_CASE("controller names round-trip and unknown names list the valid ones",
          "[solver][controller]") {
  for (const auto controller :
       {flowmatch::StepController::integral, flowmatch::StepController::pid}) {
    CHECK(flowmatch::controller_from_name(flowmatch::controller_name(controller)) == controller);
  }
  CHECK_THROWS_WITH(flowmatch::controller_from_name("pi"), Catch::Contains("integral, pid"));
  CHECK(flowmatch::pid_coefficients_from_name("h312pid").beta2 == 1.0 / 9);
  CHECK_THROWS_WITH(flowmatch::pid_coefficients_from_name("h999"),
                    Catch::Contains("h211pi") && Catch::Contains("kennedy-carpenter"));
}

TEST_CASE("backward integration equals forward integration of the time-reversed field",
          "[solver][direction]") {
  const auto flow = make_gaussian_flow();
  const auto reversed = [&flow](double t, const ConstMatrixRef<double>& x, MatrixRef<double> out) {
    flow(1 - t, x, out);
    out = -out;
  };
  const Matrix<double> x1 = test_batch(3, 5, 4);
  for (const Method method : all_methods) {
    SolverOptions<double> options;
    options.method = method;
    if (!flowmatch::is_adaptive(method)) options.step_size = 0.05;
    options.rtol = options.atol = 1e-8;
    const Matrix<double> backward = flowmatch::encode(flow, x1, options).state;
    const Matrix<double> forward = flowmatch::sample(reversed, x1, options).state;
    INFO(flowmatch::method_name(method));
    // Same arithmetic up to the rounding of 1 − t.
    CHECK(max_error(backward, forward) < 1e-12);
  }
}

TEST_CASE("encoding then sampling returns the input", "[solver][round-trip]") {
  const auto flow = make_gaussian_flow();
  const Matrix<double> x1 = flow.at(test_batch(3, 16, 5), 1.0);
  const Matrix<double> input = x1;
  for (const Method method : adaptive_methods) {
    SolverOptions<double> options;
    options.method = method;
    options.rtol = options.atol = 1e-9;
    const Matrix<double> noise = flowmatch::encode(flow, x1, options).state;
    CHECK(max_error(noise, flow.noise_of(x1)) < 1e-7);
    const Matrix<double> back = flowmatch::sample(flow, noise, options).state;
    INFO(flowmatch::method_name(method));
    CHECK(max_error(back, x1) < 1e-6);
    CHECK(x1 == input);
  }
}

TEST_CASE("trajectories on non-uniform and descending grids follow the closed form",
          "[solver][grid]") {
  const auto flow = make_gaussian_flow();
  const Matrix<double> x0 = test_batch(3, 6, 6);
  const Matrix<double> x1 = flow.at(x0, 1.0);
  const std::vector<double> ascending{0.0, 0.1, 0.15, 0.5, 0.9, 1.0};
  const std::vector<double> descending{1.0, 0.7, 0.65, 0.2, 0.0};
  for (const Method method : all_methods) {
    SolverOptions<double> options;
    options.method = method;
    if (!flowmatch::is_adaptive(method)) options.step_size = 1e-3;
    options.rtol = options.atol = 1e-9;
    options.return_trajectory = true;
    INFO(flowmatch::method_name(method));
    // rk4-class methods with h = 1e-3 and the adaptive ones at 1e-9 are far below 1e-6;
    // euler is first order (error ~ h) and the second- and third-order ones are in between.
    const double tolerance = method == Method::euler ? 1e-2 : 1e-5;

    const auto forward = flowmatch::integrate(flow, x0, ascending, options);
    REQUIRE(forward.trajectory.size() == ascending.size());
    REQUIRE(forward.times == ascending);
    for (std::size_t k = 0; k < ascending.size(); ++k) {
      CHECK(max_error(forward.trajectory[k], flow.at(x0, ascending[k])) < tolerance);
    }
    CHECK(forward.trajectory.back() == forward.state);

    const auto backward = flowmatch::integrate(flow, x1, descending, options);
    REQUIRE(backward.trajectory.size() == descending.size());
    for (std::size_t k = 0; k < descending.size(); ++k) {
      CHECK(max_error(backward.trajectory[k], flow.at(x0, descending[k])) < tolerance);
    }
    CHECK(max_error(backward.state, x0) < tolerance);
  }
}

TEST_CASE("without return_trajectory no trajectory is kept", "[solver][grid]") {
  const auto result =
      flowmatch::integrate(Rotation{}, test_batch(2, 2, 7), std::vector<double>{0.0, 0.5, 1.0});
  CHECK(result.trajectory.empty());
  CHECK(result.times == std::vector<double>{0.0, 0.5, 1.0});
}

TEST_CASE("a braced list of times is a grid, as the same times in a vector", "[solver][grid]") {
  const Matrix<double> x = test_batch(2, 3, 21);
  const std::vector<double> grid{0.0, 0.5, 1.0};
  for (const Method method : {Method::rk4, Method::dopri5}) {
    INFO(flowmatch::method_name(method));
    SolverOptions<double> options;
    options.method = method;
    if (!flowmatch::is_adaptive(method)) options.step_size = 0.05;
    options.return_trajectory = true;
    const auto listed = flowmatch::integrate(Rotation{}, x, {0.0, 0.5, 1.0}, options);
    const auto from_vector = flowmatch::integrate(Rotation{}, x, grid, options);
    CHECK(listed.state == from_vector.state);
    CHECK(listed.trajectory == from_vector.trajectory);
    CHECK(listed.times == grid);
    CHECK(listed.stats.nfe == from_vector.stats.nfe);
    CHECK(max_error(listed.state, Rotation::exact(x, 1.0)) < 1e-4);
  }
  const Rotation rotation;
  const auto system = [&rotation](double t, const ConstMatrixRef<double>& state,
                                  MatrixRef<double> out) { rotation(t, state, out); };
  CHECK(flowmatch::integrate_system(system, x, {1.0, 0.25}).state ==
        flowmatch::integrate_system(system, x, std::vector<double>{1.0, 0.25}).state);
  const Matrix<float> x_float = x.cast<float>();
  CHECK(flowmatch::integrate(Rotation{}, x_float, {0.0, 0.5, 1.0}).state ==
        flowmatch::integrate(Rotation{}, x_float, std::vector<float>{0.0f, 0.5f, 1.0f}).state);
  // A listed grid is checked as any other.
  CHECK_THROWS_AS(flowmatch::integrate(Rotation{}, x, {0.5}), std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::integrate(Rotation{}, x, {0.0, 1.5}), std::domain_error);
}

TEST_CASE("the field is never evaluated outside the grid's range", "[solver][grid]") {
  const auto flow = make_gaussian_flow();
  const Matrix<double> x = test_batch(3, 4, 8);
  for (const Method method : all_methods) {
    for (const auto& grid : {std::vector<double>{0.2, 0.45, 0.7}, std::vector<double>{0.9, 0.3},
                             std::vector<double>{0.0, 1.0}, std::vector<double>{1.0, 0.0}}) {
      std::vector<double> seen;
      const auto recording = [&](double t, const ConstMatrixRef<double>& state,
                                 MatrixRef<double> out) {
        seen.push_back(t);
        flow(t, state, out);
      };
      SolverOptions<double> options;
      options.method = method;
      if (!flowmatch::is_adaptive(method)) options.step_size = 0.07;
      flowmatch::integrate(recording, x, grid, options);
      const auto [low, high] = std::minmax(grid.front(), grid.back());
      INFO(flowmatch::method_name(method) << " grid " << grid.front() << " → " << grid.back());
      REQUIRE_FALSE(seen.empty());
      CHECK(*std::min_element(seen.begin(), seen.end()) >= low);
      CHECK(*std::max_element(seen.begin(), seen.end()) <= high);
    }
  }
}

TEST_CASE("the observer sees monotone accepted times and the final statistics",
          "[solver][observer]") {
  const auto flow = make_gaussian_flow();
  const Matrix<double> x = test_batch(3, 4, 9);
  for (const Method method : all_methods) {
    for (const auto& grid : {std::vector<double>{0.0, 0.5, 1.0}, std::vector<double>{1.0, 0.0}}) {
      std::vector<double> times;
      flowmatch::SolverStats last;
      Matrix<double> last_state;
      SolverOptions<double> options;
      options.method = method;
      if (!flowmatch::is_adaptive(method)) options.step_size = 0.1;
      options.observer = [&](double t, const Matrix<double>& state,
                             const flowmatch::SolverStats& stats) {
        times.push_back(t);
        last = stats;
        last_state = state;
      };
      const auto result = flowmatch::integrate(flow, x, grid, options);
      const double direction = grid.back() > grid.front() ? 1.0 : -1.0;
      INFO(flowmatch::method_name(method));
      REQUIRE(times.size() == result.stats.accepted);
      for (std::size_t k = 1; k < times.size(); ++k) {
        CHECK(direction * (times[k] - times[k - 1]) > 0);
      }
      CHECK(times.back() == grid.back());
      CHECK(last.nfe == result.stats.nfe);
      CHECK(last.accepted == result.stats.accepted);
      CHECK(last.rejected == result.stats.rejected);
      CHECK(last_state == result.state);
    }
  }
}

TEST_CASE("fixed-step statistics count steps and evaluations exactly", "[solver][stats]") {
  const Matrix<double> x = test_batch(2, 3, 10);
  struct Case {
    std::vector<double> grid;
    double step;
    std::size_t steps;
  };
  // 1/0.1, 0.7/0.1 and 0.3/0.1 are within rounding of integers and must not gain a step.
  const std::vector<Case> cases{{{0.0, 1.0}, 0.1, 10},     {{0.0, 0.7}, 0.1, 7},
                                {{1.0, 0.7}, 0.1, 3},      {{0.0, 1.0}, 0.3, 4},
                                {{0.0, 0.5, 1.0}, 0.2, 6}, {{0.0, 0.5, 1.0}, 1.0, 2}};
  for (const Method method : fixed_methods) {
    for (const auto& [grid, step, steps] : cases) {
      SolverOptions<double> options;
      options.method = method;
      options.step_size = step;
      const auto stats = flowmatch::integrate(Rotation{}, x, grid, options).stats;
      INFO(flowmatch::method_name(method) << " step " << step);
      CHECK(stats.accepted == steps);
      CHECK(stats.rejected == 0);
      CHECK(stats.nfe == stages(method) * steps);
      CHECK(stats.max_step <= step * (1 + 1e-12));
      CHECK(stats.min_step > 0);
    }
    SolverOptions<double> options;
    options.method = method;
    const auto stats =
        flowmatch::integrate(Rotation{}, x, std::vector<double>{0.0, 0.25, 1.0}, options).stats;
    CHECK(stats.accepted == 2);  // one step per interval without a step size
    CHECK(stats.min_step == 0.25);
    CHECK(stats.max_step == 0.75);
  }
}

TEST_CASE("adaptive statistics are consistent with the stages of each pair", "[solver][stats]") {
  const auto flow = make_gaussian_flow();
  const Matrix<double> x = test_batch(3, 4, 11);
  for (const Method method : adaptive_methods) {
    for (const bool given_initial_step : {false, true}) {
      SolverOptions<double> options;
      options.method = method;
      options.rtol = options.atol = 1e-7;
      if (given_initial_step) options.initial_step = 0.5;  // large: provokes rejections
      const auto stats = flowmatch::sample(flow, x, options).stats;
      const std::size_t tries = stats.accepted + stats.rejected;
      // One evaluation at the start, one more for the automatic first step; then per try:
      // 6 new stages for the FSAL 5(4) pairs, 12 for Fehlberg 7(8) plus one evaluation at
      // each accepted point.
      const std::size_t start = given_initial_step ? 1 : 2;
      const std::size_t expected =
          method == Method::rkf78 ? start + 12 * tries + stats.accepted : start + 6 * tries;
      INFO(flowmatch::method_name(method) << " initial step given " << given_initial_step);
      CHECK(stats.nfe == expected);
      CHECK(stats.accepted > 0);
      if (given_initial_step) CHECK(stats.rejected > 0);
      CHECK(stats.min_step <= stats.max_step);
      CHECK(stats.max_step <= 1.0);
    }
  }
}

TEST_CASE("per-sample data carried by a field stays aligned with its columns",
          "[solver][conditioning]") {
  // u(t, x)_j = −rate_j·x_j: each column decays with its own rate, x_j(1) = x_j(0)·e^(−rate_j).
  Vector<double> rates(5);
  rates << 0.0, 0.5, 1.0, 2.0, 4.0;
  const auto decay = [&rates](double, const ConstMatrixRef<double>& x, MatrixRef<double> out) {
    out = -(x.array().rowwise() * rates.transpose().array()).matrix();
  };
  const Matrix<double> x0 = test_batch(2, 5, 12);
  for (const Method method : {Method::rk4, Method::dopri5, Method::tsit5}) {
    SolverOptions<double> options;
    options.method = method;
    if (!flowmatch::is_adaptive(method)) options.step_size = 0.01;
    options.rtol = options.atol = 1e-9;
    const Matrix<double> x1 = flowmatch::sample(decay, x0, options).state;
    for (Eigen::Index j = 0; j < 5; ++j) {
      const Vector<double> expected = x0.col(j) * std::exp(-rates(j));
      CHECK(max_error(x1.col(j), expected) < 1e-7);
    }
  }
}

TEST_CASE("an augmented state is integrated with error control on every row", "[solver][system]") {
  // Rows 0–1: rotation; row 2: ℓ' = |x|² which is constant along the rotation, so ℓ(1) =
  // ℓ(0) + |x(0)|².
  const auto system = [](double, const ConstMatrixRef<double>& state, MatrixRef<double> out) {
    out.row(0) = -state.row(1);
    out.row(1) = state.row(0);
    out.row(2) = state.topRows(2).colwise().squaredNorm();
  };
  Matrix<double> state = test_batch(3, 4, 13);
  const auto result = flowmatch::integrate_system(system, state, std::vector<double>{0.0, 1.0},
                                                  SolverOptions<double>{});
  CHECK(max_error(result.state.topRows(2), Rotation::exact(state.topRows(2), 1.0)) < 1e-4);
  const Matrix<double> expected_log = state.row(2) + state.topRows(2).colwise().squaredNorm();
  CHECK(max_error(result.state.row(2), expected_log) < 1e-4);
}

TEST_CASE("float states work", "[solver][float]") {
  Vector<float> mu(2);
  mu << 1.0f, -2.0f;
  const GaussianFlow<float> flow{mu, 0.5f};
  const Matrix<float> x0 = test_batch(2, 8, 14).cast<float>();
  const Matrix<float> x1 = flow.at(x0, 1.0f);
  for (const Method method : all_methods) {
    SolverOptions<float> options;
    options.method = method;
    if (!flowmatch::is_adaptive(method)) options.step_size = 0.01f;
    options.rtol = options.atol = 1e-4f;
    const Matrix<float> result = flowmatch::sample(flow, x0, options).state;
    INFO(flowmatch::method_name(method));
    // euler's global error is O(h) = O(0.01); the others are limited by the tolerance.
    const float tolerance = method == Method::euler ? 0.05f : 5e-3f;
    CHECK((result - x1).cwiseAbs().maxCoeff() < tolerance);
  }
}

TEST_CASE("a non-finite velocity throws numerical_error naming time and sample",
          "[solver][failure]") {
  const auto poisoned = [](double t, const ConstMatrixRef<double>& x, MatrixRef<double> out) {
    out = -x;
    if (t > 0.5) out(1, 2) = std::numeric_limits<double>::quiet_NaN();
  };
  const Matrix<double> x = test_batch(2, 4, 15);
  const Matrix<double> input = x;
  for (const Method method : all_methods) {
    SolverOptions<double> options;
    options.method = method;
    if (!flowmatch::is_adaptive(method)) options.step_size = 0.1;
    INFO(flowmatch::method_name(method));
    try {
      flowmatch::sample(poisoned, x, options);
      FAIL("no exception");
    } catch (const flowmatch::numerical_error& error) {
      CHECK(error.sample() == 2);
      CHECK(error.time() > 0.5);
      CHECK(error.time() <= 1.0);
      CHECK_THAT(error.what(), Catch::Contains("non-finite") && Catch::Contains("column 2"));
    }
    CHECK(x == input);
  }
}

#ifndef NDEBUG
// Builds with assertions fill the output with NaN before an in-place field writes it.
TEST_CASE("an in-place field that leaves entries unwritten is caught", "[solver][failure]") {
  const auto lazy = [](double /*t*/, const ConstMatrixRef<double>& x, MatrixRef<double> out) {
    out.leftCols(2) = -x.leftCols(2);  // columns 2 and 3 are never written
  };
  const Matrix<double> x = test_batch(2, 4, 16);
  SolverOptions<double> options;
  options.method = Method::rk4;
  options.step_size = 0.25;
  try {
    flowmatch::sample(lazy, x, options);
    FAIL("no exception");
  } catch (const flowmatch::numerical_error& error) {
    CHECK(error.sample() == 2);
  }
}
#endif

TEST_CASE("an overflowing state throws numerical_error", "[solver][failure]") {
  // x' = 1e300·x overflows to infinity within one Euler step of the whole interval.
  const auto explosive = [](double, const ConstMatrixRef<double>& x, MatrixRef<double> out) {
    out = 1e300 * x;
  };
  const Matrix<double> x = Matrix<double>::Constant(1, 3, 1e10);
  SolverOptions<double> options;
  options.method = Method::euler;
  CHECK_THROWS_AS(flowmatch::sample(explosive, x, options), flowmatch::numerical_error);
}

TEST_CASE("exceeding max_steps throws numerical_error", "[solver][failure]") {
  const Matrix<double> x = test_batch(2, 3, 16);
  const Matrix<double> input = x;
  SolverOptions<double> options;
  options.max_steps = 3;
  options.rtol = options.atol = 1e-10;
  for (const Method method : adaptive_methods) {
    options.method = method;
    CHECK_THROWS_AS(flowmatch::sample(Rotation{}, x, options), flowmatch::numerical_error);
  }
  options.method = Method::rk4;
  options.step_size = 0.1;
  CHECK_THROWS_WITH(flowmatch::sample(Rotation{}, x, options), Catch::Contains("max_steps"));
  options.max_steps = 10;
  CHECK_NOTHROW(flowmatch::sample(Rotation{}, x, options));
  CHECK(x == input);
}

TEST_CASE("step-size underflow throws numerical_error", "[solver][failure]") {
  // x' = x² from x(0) = 4 blows up at t = 1/4 (x = 4/(1 − 4t)): the steps shrink to nothing
  // (or the state overflows) on the way there.
  const auto pole = [](double, const ConstMatrixRef<double>& x, MatrixRef<double> out) {
    out = x.cwiseAbs2();
  };
  const Matrix<double> x = Matrix<double>::Constant(1, 2, 4.0);
  for (const Method method : adaptive_methods) {
    SolverOptions<double> options;
    options.method = method;
    INFO(flowmatch::method_name(method));
    CHECK_THROWS_AS(flowmatch::sample(pole, x, options), flowmatch::numerical_error);
    options.min_step = 1e-3;
    CHECK_THROWS_WITH(flowmatch::sample(pole, x, options),
                      Catch::Contains("underflow") && Catch::Contains("below min_step = 0.001"));
  }
}

namespace {

// u_t(x) = 1 for t < 1/2 and 3 from t = 1/2 on, whatever x: the flow from 0 to 1 adds 2.
struct JumpAtHalf {
  void operator()(double t, const ConstMatrixRef<double>&, MatrixRef<double> out) const {
    out.setConstant(t < 0.5 ? 1.0 : 3.0);
  }
};

}  // namespace

// u_t(x) = 1 for t < 1/2 and 101 from t = 1/2 on: the flow from 0 to 1 adds 51.
struct LargeJumpAtHalf {
  void operator()(double t, const ConstMatrixRef<double>&, MatrixRef<double> out) const {
    out.setConstant(t < 0.5 ? 1.0 : 101.0);
  }
};

TEST_CASE("below min_step the solve names the bound, or steps at it with force_min_step",
          "[solver][step-bounds]") {
  // A step across the jump has an error estimate proportional to the step and the jump (100),
  // so the error control shrinks the steps there far below a min_step of 1e-3.
  const Matrix<double> x = test_batch(2, 3, 21);
  const Matrix<double> exact = (x.array() + 51.0).matrix();
  // rkf78 is left out: its error estimate 41/840·h·(k₁ + k₁₁ − k₁₂ − k₁₃) compares stages at
  // t (1 and 12) with stages at t + h (11 and 13), so it vanishes for a field of t alone and
  // the method steps across the jump unaware. Its min_step message is checked on the pole.
  for (const Method method : {Method::dopri5, Method::tsit5}) {
    INFO(flowmatch::method_name(method));
    SolverOptions<double> options;
    options.method = method;
    options.min_step = 1e-3;
    CHECK_THROWS_WITH(flowmatch::sample(LargeJumpAtHalf{}, x, options),
                      Catch::Contains("min_step = 0.001") && Catch::Contains("t = 0.4"));
    options.force_min_step = true;
    const auto result = flowmatch::sample(LargeJumpAtHalf{}, x, options);
    CHECK(result.stats.forced > 0);
    CHECK(result.stats.min_step >= 1e-3 * (1 - 1e-12));
    // One forced step straddles the jump: its error is at most the jump times the step.
    CHECK((result.state - exact).cwiseAbs().maxCoeff() <= 100.0 * 1e-3);
    options.force_min_step = false;
    options.min_step = 0;
    const auto unbounded = flowmatch::sample(LargeJumpAtHalf{}, x, options);
    CHECK(unbounded.stats.forced == 0);
    CHECK(unbounded.stats.min_step < 1e-3);
  }
}

TEST_CASE("max_step bounds every adaptive step, first_step is the first one",
          "[solver][step-bounds]") {
  const Matrix<double> x = test_batch(2, 3, 22);
  for (const Method method : adaptive_methods) {
    INFO(flowmatch::method_name(method));
    SolverOptions<double> options;
    options.method = method;
    const auto free = flowmatch::integrate(Rotation{}, x, std::vector<double>{0.0, 1.0}, options);
    REQUIRE(free.stats.max_step > 0.05);
    options.max_step = 0.05;
    std::vector<double> times;
    options.observer = [&times](double t, const Matrix<double>&, const flowmatch::SolverStats&) {
      times.push_back(t);
    };
    const auto bounded =
        flowmatch::integrate(Rotation{}, x, std::vector<double>{0.0, 1.0}, options);
    CHECK(bounded.stats.max_step <= 0.05 * (1 + 1e-12));
    CHECK(bounded.stats.accepted >= 20);
    CHECK((bounded.state - Rotation::exact(x, 1.0)).cwiseAbs().maxCoeff() < 1e-4);
    times.clear();
    options.first_step = 1e-4;
    flowmatch::integrate(Rotation{}, x, std::vector<double>{0.0, 1.0}, options);
    REQUIRE_FALSE(times.empty());
    CHECK(times.front() == 1e-4);
    // The former name is the same option.
    options.first_step.reset();
    options.initial_step = 1e-4;
    times.clear();
    flowmatch::integrate(Rotation{}, x, std::vector<double>{0.0, 1.0}, options);
    CHECK(times.front() == 1e-4);
  }
}

TEST_CASE("every method lands on tstops and each side of a stop sees its own field",
          "[solver][tstops]") {
  const Matrix<double> x = test_batch(2, 3, 23);
  for (const Method method : all_methods) {
    for (const bool forward : {true, false}) {
      INFO(flowmatch::method_name(method) << (forward ? " forward" : " backward"));
      const std::vector<double> grid =
          forward ? std::vector<double>{0.0, 1.0} : std::vector<double>{1.0, 0.0};
      SolverOptions<double> options;
      options.method = method;
      if (!flowmatch::is_adaptive(method)) options.step_size = 0.1;
      options.tstops = {0.5};
      std::vector<double> times;
      options.observer = [&times](double t, const Matrix<double>&, const flowmatch::SolverStats&) {
        times.push_back(t);
      };
      const auto result = flowmatch::integrate(JumpAtHalf{}, x, grid, options);
      CHECK(std::find(times.begin(), times.end(), 0.5) != times.end());
      // The field is piecewise constant in t: every method integrates each side exactly.
      const Matrix<double> exact = (x.array() + (forward ? 2.0 : -2.0)).matrix();
      CHECK((result.state - exact).cwiseAbs().maxCoeff() <= 1e-12);
      CHECK(result.stats.rejected == 0);
      if (method == Method::rk4) {
        // Without the stop, rk4's last stage of the step ending at 1/2 sees the other side.
        options.tstops.clear();
        const auto across = flowmatch::integrate(JumpAtHalf{}, x, grid, options);
        CHECK((across.state - exact).cwiseAbs().maxCoeff() > 1e-3);
      }
    }
  }
}

TEST_CASE("an adaptive method restarts its step selection after a stop", "[solver][tstops]") {
  const Matrix<double> x = test_batch(2, 3, 24);
  for (const Method method : adaptive_methods) {
    INFO(flowmatch::method_name(method));
    SolverOptions<double> options;
    options.method = method;
    options.first_step = 1e-4;
    options.tstops = {0.5};
    std::vector<double> times;
    options.observer = [&times](double t, const Matrix<double>&, const flowmatch::SolverStats&) {
      times.push_back(t);
    };
    const auto result = flowmatch::integrate(Rotation{}, x, std::vector<double>{0.0, 1.0}, options);
    const auto stop = std::find(times.begin(), times.end(), 0.5);
    REQUIRE(stop != times.end());
    REQUIRE(stop + 1 != times.end());
    CHECK(*(stop + 1) == 0.5 + 1e-4);
    CHECK((result.state - Rotation::exact(x, 1.0)).cwiseAbs().maxCoeff() < 1e-4);
  }
}

TEST_CASE("tstops outside the range or on grid times change nothing", "[solver][tstops]") {
  const Matrix<double> x = test_batch(2, 3, 25);
  const std::vector<double> grid{0.1, 0.5, 0.9};
  for (const Method method : all_methods) {
    INFO(flowmatch::method_name(method));
    SolverOptions<double> options;
    options.method = method;
    options.return_trajectory = true;
    if (!flowmatch::is_adaptive(method)) options.step_size = 0.05;
    const auto plain = flowmatch::integrate(Rotation{}, x, grid, options);
    options.tstops = {0.0, 0.1, 0.5, 0.95, 1.0, 0.5};
    const auto stopped = flowmatch::integrate(Rotation{}, x, grid, options);
    CHECK(stopped.state == plain.state);
    CHECK(stopped.trajectory == plain.trajectory);
    CHECK(stopped.stats.nfe == plain.stats.nfe);
  }
}

TEST_CASE("invalid grids, options and batches are rejected with typed exceptions",
          "[solver][failure]") {
  const Matrix<double> x = test_batch(2, 3, 17);
  const auto integrate_on = [&x](const std::vector<double>& grid) {
    return flowmatch::integrate(Rotation{}, x, grid);
  };
  CHECK_THROWS_AS(integrate_on({0.5}), std::invalid_argument);
  CHECK_THROWS_AS(integrate_on({}), std::invalid_argument);
  CHECK_THROWS_AS(integrate_on({0.0, 0.5, 0.4, 1.0}), std::invalid_argument);
  CHECK_THROWS_WITH(integrate_on({1.0, 0.5, 0.6}),
                    Catch::Contains("decreasing") && Catch::Contains("times[2]"));
  CHECK_THROWS_AS(integrate_on({0.0, 0.5, 0.5, 1.0}), std::invalid_argument);
  CHECK_THROWS_AS(integrate_on({0.0, 1.5}), std::domain_error);
  CHECK_THROWS_AS(integrate_on({-0.1, 1.0}), std::domain_error);
  CHECK_THROWS_AS(integrate_on({0.0, std::nan("")}), std::domain_error);

  const auto with = [&x](auto change) {
    SolverOptions<double> options;
    change(options);
    return flowmatch::sample(Rotation{}, x, options);
  };
  using Options = SolverOptions<double>;
  CHECK_THROWS_AS(with([](Options& o) { o.rtol = 0; }), std::invalid_argument);
  CHECK_THROWS_WITH(with([](Options& o) { o.atol = -1e-6; }), Catch::Contains("atol"));
  CHECK_THROWS_AS(with([](Options& o) { o.atol = std::nan(""); }), std::invalid_argument);
  CHECK_THROWS_AS(with([](Options& o) { o.rtol = std::numeric_limits<double>::infinity(); }),
                  std::invalid_argument);
  CHECK_THROWS_WITH(with([](Options& o) {
                      o.method = Method::rk4;
                      o.step_size = 0.0;
                    }),
                    Catch::Contains("step_size"));
  CHECK_THROWS_WITH(with([](Options& o) {
                      o.method = Method::rk4;
                      o.step_size = -0.1;
                    }),
                    Catch::Contains("step_size") && Catch::Contains("> 0"));
  // step_size is not the first step of an adaptive method: that is first_step.
  for (const Method method : adaptive_methods) {
    INFO(flowmatch::method_name(method));
    const std::string name(flowmatch::method_name(method));
    CHECK_THROWS_AS(with([method](Options& o) {
                      o.method = method;
                      o.step_size = 0.01;
                    }),
                    std::invalid_argument);
    CHECK_THROWS_WITH(with([method](Options& o) {
                        o.method = method;
                        o.step_size = 0.01;
                      }),
                      Catch::Contains("step_size") && Catch::Contains("fixed-step") &&
                          Catch::Contains(name) && Catch::Contains("first_step"));
    CHECK_NOTHROW(with([method](Options& o) {
      o.method = method;
      o.first_step = 0.01;
    }));
  }
  CHECK_THROWS_AS(with([](Options& o) { o.initial_step = 0.0; }), std::invalid_argument);
  CHECK_THROWS_AS(with([](Options& o) { o.max_steps = 0; }), std::invalid_argument);
  CHECK_THROWS_AS(with([](Options& o) { o.min_step = -1.0; }), std::invalid_argument);
  CHECK_THROWS_WITH(with([](Options& o) { o.max_step = 0.0; }), Catch::Contains("max_step"));
  CHECK_THROWS_WITH(with([](Options& o) { o.first_step = -1e-3; }), Catch::Contains("first_step"));
  CHECK_THROWS_WITH(with([](Options& o) {
                      o.first_step = 1e-3;
                      o.initial_step = 2e-3;
                    }),
                    Catch::Contains("SolverOptions: first_step is 0.001 and its former name "
                                    "initial_step is 0.002"));
  CHECK_THROWS_WITH(with([](Options& o) {
                      o.min_step = 0.5;
                      o.max_step = 0.25;
                    }),
                    Catch::Contains("min_step is 0.5, expected <= max_step (0.25)"));
  CHECK_THROWS_WITH(
      with([](Options& o) { o.force_min_step = true; }),
      Catch::Contains("force_min_step is true with min_step 0, expected min_step > 0"));
  CHECK_THROWS_WITH(with([](Options& o) {
                      o.tstops = {0.5, std::nan("")};
                    }),
                    Catch::Contains("tstops[1]"));
  CHECK_THROWS_AS(with([](Options& o) { o.tstops = {1.5}; }), std::invalid_argument);
  CHECK_THROWS_AS(
      with([](Options& o) { o.controller = static_cast<flowmatch::StepController>(5); }),
      std::invalid_argument);
  CHECK_THROWS_WITH(with([](Options& o) { o.pid_coefficients.beta2 = std::nan(""); }),
                    Catch::Contains("pid_coefficients"));
  CHECK_THROWS_AS(with([](Options& o) { o.method = static_cast<Method>(99); }),
                  std::invalid_argument);
  CHECK_THROWS_AS(with([](Options& o) { o.error_norm = static_cast<ErrorNorm>(7); }),
                  std::invalid_argument);

  CHECK_THROWS_AS(flowmatch::sample(Rotation{}, Matrix<double>(2, 0)), std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::sample(Rotation{}, Matrix<double>(0, 3)), std::invalid_argument);
  Matrix<double> bad = x;
  bad(0, 1) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(flowmatch::sample(Rotation{}, bad), Catch::Contains("column 1"));

  const auto wrong_shape = [](double, const auto& state) {
    return Matrix<double>::Zero(state.rows() + 1, state.cols()).eval();
  };
  const Matrix<double> input = x;
  for (const Method method : {Method::euler, Method::dopri5}) {
    SolverOptions<double> options;
    options.method = method;
    CHECK_THROWS_AS(flowmatch::sample(wrong_shape, x, options), std::invalid_argument);
  }
  CHECK(x == input);
}

namespace {

// A 2-D mixture of three components with full covariances, under the CondOT path.
flowmatch::GaussianMixturePath<flowmatch::CondOT<double>> make_mixture_path() {
  Vector<double> weights(3);
  weights << 0.5, 0.3, 0.2;
  Matrix<double> means(2, 3);
  means << -2.0, 1.5, 0.5,  //
      0.5, 1.0, -2.5;
  std::vector<Matrix<double>> covariances(3, Matrix<double>(2, 2));
  covariances[0] << 0.30, 0.10, 0.10, 0.20;
  covariances[1] << 0.15, -0.05, -0.05, 0.40;
  covariances[2] << 0.50, 0.00, 0.00, 0.05;
  return flowmatch::GaussianMixturePath<flowmatch::CondOT<double>>(
      flowmatch::GaussianMixture<double>::with_covariances(weights, means, covariances));
}

}  // namespace

TEST_CASE("noise pushed through the mixture's exact velocity has the mixture's moments",
          "[solver][oracle]") {
  const auto path = make_mixture_path();
  const auto& mixture = path.data();
  // Exact moments: mean m = Σ w_k μ_k, covariance Σ w_k (Σ_k + μ_k μ_kᵀ) − m mᵀ.
  const Vector<double> mean = mixture.means() * mixture.weights();
  Matrix<double> covariance = -mean * mean.transpose();
  for (Eigen::Index k = 0; k < 3; ++k) {
    covariance +=
        mixture.weights()(k) *
        (mixture.covariance(k) + mixture.means().col(k) * mixture.means().col(k).transpose());
  }

  const Eigen::Index n = 2000;
  SolverOptions<double> options;
  options.rtol = options.atol = 1e-7;
  const Matrix<double> pushed = flowmatch::sample(path, test_batch(2, n, 18), options).state;

  const Vector<double> sample_mean = pushed.rowwise().mean();
  const Matrix<double> centred = pushed.colwise() - sample_mean;
  const Matrix<double> sample_covariance = centred * centred.transpose() / double(n - 1);
  // Standard errors from the samples: sd/√N for the mean; for the covariance entry (i, j),
  // sd((x_i − m_i)(x_j − m_j))/√N. Five standard errors: the solver error (~1e-6) is far
  // below them, a wrong flow is far above them.
  for (Eigen::Index i = 0; i < 2; ++i) {
    const double mean_error = std::sqrt(sample_covariance(i, i) / n);
    CHECK(std::abs(sample_mean(i) - mean(i)) < 5 * mean_error);
    for (Eigen::Index j = 0; j < 2; ++j) {
      const Eigen::ArrayXd products = centred.row(i).array() * centred.row(j).array();
      const double spread = std::sqrt((products - products.mean()).square().mean());
      INFO("covariance entry " << i << ", " << j);
      CHECK(std::abs(sample_covariance(i, j) - covariance(i, j)) < 5 * spread / std::sqrt(n));
    }
  }
}

TEST_CASE("mixture samples encoded to noise and sampled back return to themselves",
          "[solver][oracle][round-trip]") {
  const auto path = make_mixture_path();
  std::mt19937_64 generator(19);
  const Matrix<double> data = path.data().sample(200, generator);
  SolverOptions<double> options;
  options.method = Method::dopri5;
  options.rtol = options.atol = 1e-9;
  const Matrix<double> noise = flowmatch::encode(path, data, options).state;
  const Matrix<double> back = flowmatch::sample(path, noise, options).state;
  CHECK(max_error(back, data) < 1e-6);
  // The encoded points are distributed as N(0, I): mean near 0 and variance near 1.
  CHECK(noise.cwiseAbs().maxCoeff() < 6.0);
  CHECK(std::abs(noise.mean()) < 5 * std::sqrt(1.0 / noise.size()));
}

namespace {

// Van der Pol (μ = 1) with a small forcing in t, on a batch of three starting points, in odeint's
// (x, dxdt, t) form.
struct VanDerPolBatch {
  template <class Scalar>
  void operator()(const Matrix<Scalar>& x, Matrix<Scalar>& dxdt, Scalar t) const {
    dxdt.resizeLike(x);
    dxdt.row(0) = x.row(1);
    dxdt.row(1) = ((Scalar(1) - x.row(0).array().square()) * x.row(1).array() - x.row(0).array() +
                   Scalar(0.1) * t)
                      .matrix();
  }
};

namespace odeint = boost::numeric::odeint;

template <class Scalar, std::size_t Stages, std::size_t Order>
using OdeintGenericRk =
    odeint::explicit_generic_rk<Stages, Order, Matrix<Scalar>, Scalar, Matrix<Scalar>, Scalar,
                                flowmatch::detail::odeint_algebra,
                                flowmatch::detail::odeint_operations,
                                flowmatch::detail::odeint_resizer>;

template <class Scalar, std::size_t Size>
using Row = boost::array<Scalar, Size>;

// Ten steps of @p stepper and of odeint's @p reference from the same start agree bit for bit.
template <class Scalar, class Stepper, class Reference>
void check_same_steps(Stepper stepper, Reference reference) {
  Matrix<Scalar> x(2, 3);
  x << Scalar(2), Scalar(-1), Scalar(0.5), Scalar(0), Scalar(0.3), Scalar(-1.5);
  Matrix<Scalar> y = x;
  Matrix<Scalar> x_next(2, 3);
  Matrix<Scalar> y_next(2, 3);
  const VanDerPolBatch system;
  Scalar t(0);
  const Scalar step(0.137);
  for (int k = 0; k < 10; ++k) {
    stepper.do_step(std::cref(system), x, t, x_next, step);
    reference.do_step(std::cref(system), y, t, y_next, step);
    x.swap(x_next);
    y.swap(y_next);
    t += step;
  }
  CHECK(x.allFinite());
  CHECK(x == y);
}

template <class Scalar>
void check_fixed_steppers_against_odeint() {
  namespace detail = flowmatch::detail;
  using State = Matrix<Scalar>;
  const Scalar half = Scalar(1) / Scalar(2);
  const Scalar third = Scalar(1) / Scalar(3);
  check_same_steps<Scalar>(detail::make_euler_stepper<Scalar>(),
                           odeint::euler<State, Scalar, State, Scalar, detail::odeint_algebra,
                                         detail::odeint_operations, detail::odeint_resizer>());
  check_same_steps<Scalar>(
      detail::make_rk4_stepper<Scalar>(),
      odeint::runge_kutta4<State, Scalar, State, Scalar, detail::odeint_algebra,
                           detail::odeint_operations, detail::odeint_resizer>());
  check_same_steps<Scalar>(
      detail::make_midpoint_stepper<Scalar>(),
      OdeintGenericRk<Scalar, 2, 2>(boost::fusion::make_vector(Row<Scalar, 1>{{half}}),
                                    Row<Scalar, 2>{{Scalar(0), Scalar(1)}},
                                    Row<Scalar, 2>{{Scalar(0), half}}));
  check_same_steps<Scalar>(
      detail::make_heun2_stepper<Scalar>(),
      OdeintGenericRk<Scalar, 2, 2>(boost::fusion::make_vector(Row<Scalar, 1>{{Scalar(1)}}),
                                    Row<Scalar, 2>{{half, half}},
                                    Row<Scalar, 2>{{Scalar(0), Scalar(1)}}));
  check_same_steps<Scalar>(
      detail::make_heun3_stepper<Scalar>(),
      OdeintGenericRk<Scalar, 3, 3>(
          boost::fusion::make_vector(Row<Scalar, 1>{{third}},
                                     Row<Scalar, 2>{{Scalar(0), Scalar(2) / Scalar(3)}}),
          Row<Scalar, 3>{{Scalar(1) / Scalar(4), Scalar(0), Scalar(3) / Scalar(4)}},
          Row<Scalar, 3>{{Scalar(0), third, Scalar(2) / Scalar(3)}}));
  check_same_steps<Scalar>(
      detail::make_rk38_stepper<Scalar>(),
      OdeintGenericRk<Scalar, 4, 4>(
          boost::fusion::make_vector(Row<Scalar, 1>{{third}}, Row<Scalar, 2>{{-third, Scalar(1)}},
                                     Row<Scalar, 3>{{Scalar(1), Scalar(-1), Scalar(1)}}),
          Row<Scalar, 4>{{Scalar(1) / Scalar(8), Scalar(3) / Scalar(8), Scalar(3) / Scalar(8),
                          Scalar(1) / Scalar(8)}},
          Row<Scalar, 4>{{Scalar(0), third, Scalar(2) / Scalar(3), Scalar(1)}}));
}

}  // namespace

// The fixed-step methods' own stepper does odeint's generic Runge–Kutta arithmetic: the same
// states bit for bit, so moving off odeint's steppers changed no result.
TEST_CASE("fixed-step steppers give odeint's explicit Runge-Kutta steps bit for bit", "[solver]") {
  check_fixed_steppers_against_odeint<double>();
  check_fixed_steppers_against_odeint<float>();
}

}  // namespace test_solver
