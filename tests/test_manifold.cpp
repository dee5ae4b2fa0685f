// Tests of the manifolds (sphere, flat torus, Euclidean space, products), the geodesic path,
// the manifold integrators, the Riemannian divergence, log-likelihoods and training, against
// independent mathematics: round trips of exp and log, rotations in closed form (Rodrigues),
// central differences of the path in t and of the divergence in spherical coordinates, the
// Laplacian of quadratic forms on spheres, Archimedes' area of the sphere, moments of the
// uniform distributions.
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

#include "flowmatch/core/errors.hpp"
#include "flowmatch/likelihood/divergence.hpp"
#include "flowmatch/manifold/divergence.hpp"
#include "flowmatch/manifold/euclidean.hpp"
#include "flowmatch/manifold/flat_torus.hpp"
#include "flowmatch/manifold/geodesic_path.hpp"
#include "flowmatch/manifold/integrate.hpp"
#include "flowmatch/manifold/log_likelihood.hpp"
#include "flowmatch/manifold/manifold.hpp"
#include "flowmatch/manifold/product.hpp"
#include "flowmatch/manifold/sphere.hpp"
#include "flowmatch/manifold/tangent_field.hpp"
#include "flowmatch/manifold/training.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/scheduler/polynomial.hpp"
#include "flowmatch/solver/integrate.hpp"
#include "flowmatch/train/adam.hpp"

namespace test_manifold {

namespace {

using flowmatch::Euclidean;
using flowmatch::FlatTorus;
using flowmatch::GeodesicPath;
using flowmatch::Index;
using flowmatch::ManifoldMethod;
using flowmatch::ManifoldSolverOptions;
using flowmatch::ManifoldStepping;
using flowmatch::Matrix;
using flowmatch::Product;
using flowmatch::Sphere;
using flowmatch::Vector;

constexpr double pi = std::numbers::pi;

// Rounding tolerance of a computation with a few dozen operations in Scalar.
template <class Scalar>
double rounding() {
  return 64 * static_cast<double>(std::numeric_limits<Scalar>::epsilon());
}

// Random tangent vectors at the columns of points with lengths drawn uniformly from
// [0, max_length).
template <class Scalar, class M>
Matrix<Scalar> random_tangents(const M& manifold, const Matrix<Scalar>& points, double max_length,
                               std::mt19937_64& generator) {
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> length(0.0, max_length);
  Matrix<Scalar> ambient(points.rows(), points.cols());
  for (Index col = 0; col < ambient.cols(); ++col) {
    for (Index row = 0; row < ambient.rows(); ++row) ambient(row, col) = Scalar(normal(generator));
  }
  Matrix<Scalar> tangents = flowmatch::project_tangent(manifold, points, ambient);
  for (Index col = 0; col < tangents.cols(); ++col) {
    tangents.col(col) *= Scalar(length(generator)) / tangents.col(col).norm();
  }
  return tangents;
}

// a × b in R³.
Vector<double> cross(const Vector<double>& a, const Vector<double>& b) {
  Vector<double> product(3);
  product << a(1) * b(2) - a(2) * b(1), a(2) * b(0) - a(0) * b(2), a(0) * b(1) - a(1) * b(0);
  return product;
}

// The rotation of x about the unit axis by angle (Rodrigues' formula).
Vector<double> rotate(const Vector<double>& x, const Vector<double>& axis, double angle) {
  return std::cos(angle) * x + std::sin(angle) * cross(axis, x) +
         (1 - std::cos(angle)) * axis.dot(x) * axis;
}

// The rotation field u(x) = ω × x on S² (angular velocity ω, |ω| the speed).
struct RotationField {
  Vector<double> omega;
  void operator()(double /*t*/, const flowmatch::ConstMatrixRef<double>& x,
                  flowmatch::MatrixRef<double> out) const {
    for (Index col = 0; col < x.cols(); ++col) {
      out.col(col) = cross(omega, x.col(col));
    }
  }
};

// Largest column-wise distance in the ambient coordinates.
template <class Scalar>
double max_column_error(const Matrix<Scalar>& a, const Matrix<Scalar>& b) {
  return static_cast<double>((a - b).colwise().norm().maxCoeff());
}

}  // namespace

namespace {

// The manifolds of the contract battery below; one line in Enrolled and one factory enrol a
// new type.
using SphereProduct = Product<Sphere<double>, FlatTorus<double>, Euclidean<double>>;
using FloatProduct = Product<Sphere<float>, FlatTorus<float>>;

template <class M>
M make_manifold();
template <>
Sphere<double> make_manifold() {
  return Sphere<double>(4);
}
template <>
Sphere<float> make_manifold() {
  return Sphere<float>(3);
}
template <>
FlatTorus<double> make_manifold() {
  return FlatTorus<double>(3);
}
template <>
Euclidean<double> make_manifold() {
  return Euclidean<double>(2);
}
template <>
SphereProduct make_manifold() {
  return SphereProduct(Sphere<double>(3), FlatTorus<double>(2), Euclidean<double>(1));
}
template <>
FloatProduct make_manifold() {
  return FloatProduct(Sphere<float>(2), FlatTorus<float>(1));
}

}  // namespace

// A smooth ambient field, 2π-periodic in every coordinate (so continuous on a torus), generic
// over its scalar type: F_i(t, x) = sin(x_{i+1} + t) + cos(x_i)/2, indices cyclic.
const auto periodic_field = [](auto t, const auto& x) {
  using Entry = typename std::decay_t<decltype(x)>::Scalar;
  Matrix<Entry> out(x.rows(), x.cols());
  for (Index col = 0; col < x.cols(); ++col) {
    for (Index row = 0; row < x.rows(); ++row) {
      out(row, col) = std::sin(x((row + 1) % x.rows(), col) + t) + std::cos(x(row, col)) / 2;
    }
  }
  return out;
};

// The contract every manifold meets: base samples lie on it, projections are idempotent,
// exp and log are inverse, the distance is |log|, the geodesic starts at x with velocity v,
// ends at exp_x(v), and its velocity is the derivative of its position; a solve there and
// back returns to the start.
TEMPLATE_TEST_CASE("manifold contract", "[manifold][contract]", Sphere<double>, Sphere<float>,
                   FlatTorus<double>, Euclidean<double>, SphereProduct, FloatProduct) {
  using M = TestType;
  using Scalar = typename M::scalar_type;
  static_assert(flowmatch::Manifold<M>);
  const M manifold = make_manifold<M>();
  const Index count = 200;
  const double tolerance = 16 * rounding<Scalar>();
  std::mt19937_64 generator(31);
  const Matrix<Scalar> x = flowmatch::sample_base(manifold, count, generator);
  const Matrix<Scalar> y = flowmatch::sample_base(manifold, count, generator);
  Vector<Scalar> deviation(count);
  manifold.deviation(x, deviation);
  CHECK(static_cast<double>(deviation.maxCoeff()) <= rounding<Scalar>());
  CHECK(max_column_error<Scalar>(flowmatch::project_point(manifold, x), x) < tolerance);

  // Tangents of length < 2.5 (inside the sphere's injectivity radius π).
  const Matrix<Scalar> v = random_tangents<Scalar>(manifold, x, 2.5, generator);
  CHECK(max_column_error<Scalar>(flowmatch::project_tangent(manifold, x, v), v) < tolerance);
  const Matrix<Scalar> moved = flowmatch::exp_map(manifold, x, v);
  manifold.deviation(moved, deviation);
  CHECK(static_cast<double>(deviation.maxCoeff()) <= rounding<Scalar>());
  CHECK(max_column_error<Scalar>(flowmatch::log_map(manifold, x, moved), v) < tolerance);
  const Matrix<Scalar> log = flowmatch::log_map(manifold, x, y);
  CHECK(max_column_error<Scalar>(
            flowmatch::log_map(manifold, x, flowmatch::exp_map(manifold, x, log)), log) <
        tolerance);
  CHECK(static_cast<double>(
            (flowmatch::geodesic_distance(manifold, x, y) - log.colwise().norm().transpose())
                .cwiseAbs()
                .maxCoeff()) < tolerance);

  // The geodesic at s = 0 and s = 1, and its velocity against a central difference in s
  // (taken through log, which undoes the torus' wrapping).
  Matrix<Scalar> position(x.rows(), count), velocity(x.rows(), count);
  manifold.geodesic(x, v, Vector<Scalar>::Zero(count), position, velocity);
  CHECK(max_column_error<Scalar>(position, x) < tolerance);
  CHECK(max_column_error<Scalar>(velocity, v) < tolerance);
  manifold.geodesic(x, v, Vector<Scalar>::Ones(count), position, velocity);
  CHECK(max_column_error<Scalar>(position, moved) < tolerance);
  const Scalar step = std::is_same_v<Scalar, float> ? Scalar(1e-2) : Scalar(1e-5);
  const Vector<Scalar> middle = Vector<Scalar>::Constant(count, Scalar(0.5));
  Matrix<Scalar> ahead(x.rows(), count), behind(x.rows(), count), unused(x.rows(), count);
  manifold.geodesic(x, v, middle, position, velocity);
  manifold.geodesic(x, v, (middle.array() + step).matrix(), ahead, unused);
  manifold.geodesic(x, v, (middle.array() - step).matrix(), behind, unused);
  Matrix<Scalar> forward(x.rows(), count), backward(x.rows(), count);
  manifold.log(position, ahead, forward);
  manifold.log(position, behind, backward);
  CHECK(max_column_error<Scalar>(Matrix<Scalar>((forward - backward) / (2 * step)), velocity) <
        (std::is_same_v<Scalar, float> ? 2e-3 : 1e-8));

  // The differential of log_x at y = exp_x(v) along tangents at y, against central differences
  // (log is invariant to the length of y on the sphere, so y ± εk need no projection).
  const Matrix<Scalar> along = random_tangents<Scalar>(manifold, moved, 1.0, generator);
  Matrix<Scalar> differential(x.rows(), count), ahead_log(x.rows(), count),
      behind_log(x.rows(), count);
  manifold.log_differential(x, moved, along, differential);
  manifold.log(x, Matrix<Scalar>(moved + step * along), ahead_log);
  manifold.log(x, Matrix<Scalar>(moved - step * along), behind_log);
  CHECK(max_column_error<Scalar>(Matrix<Scalar>((ahead_log - behind_log) / (2 * step)),
                                 differential) < (std::is_same_v<Scalar, float> ? 5e-3 : 1e-7));
  // At y = x it is the tangent projection.
  manifold.log_differential(x, x, along, differential);
  Matrix<Scalar> projected(x.rows(), count);
  manifold.project_tangents(x, along, projected);
  CHECK(max_column_error<Scalar>(differential, projected) < tolerance);

  // Sampling then encoding with RK4 (h = 0.01) returns to the start: in double within the
  // methods' error, O(h⁴) = 1e-8 times a constant of the field, in float within the rounding
  // of 200 steps (a random walk of √200·8ε ≈ 1.3e-5, grown by the flow).
  for (const auto stepping : {ManifoldStepping::projection, ManifoldStepping::exponential}) {
    ManifoldSolverOptions<Scalar> options;
    options.stepping = stepping;
    options.step_size = Scalar(0.01);
    const auto there = flowmatch::integrate_on_manifold(manifold, periodic_field, x,
                                                        {Scalar(0), Scalar(1)}, options);
    manifold.deviation(there.state, deviation);
    CHECK(static_cast<double>(deviation.maxCoeff()) <= rounding<Scalar>());
    const auto back = flowmatch::integrate_on_manifold(manifold, periodic_field, there.state,
                                                       {Scalar(1), Scalar(0)}, options);
    CHECK(static_cast<double>(flowmatch::geodesic_distance(manifold, back.state, x).maxCoeff()) <
          (std::is_same_v<Scalar, float> ? 1e-4 : 1e-7));
  }
}

TEMPLATE_TEST_CASE("sphere: log then exp returns the target, also near antipodal points",
                   "[manifold][sphere]", float, double) {
  using Scalar = TestType;
  const Sphere<Scalar> sphere(3);
  std::mt19937_64 generator(11);
  const Matrix<Scalar> x = flowmatch::sample_base(sphere, 400, generator);
  Matrix<Scalar> y = flowmatch::sample_base(sphere, 400, generator);
  // Near-antipodal targets: −x moved by 1e-3, 1e-6 and 1e-9 of a radian (then normalised).
  const Matrix<Scalar> nudge = random_tangents<Scalar>(sphere, x, 1.0, generator);
  for (Index col = 0; col < 30; ++col) {
    const Scalar offset = Scalar(std::pow(10.0, -3.0 * double(col % 3 + 1)));
    y.col(col) = -x.col(col) + offset * nudge.col(col).normalized();
    y.col(col).normalize();
  }
  // Near-identical targets.
  for (Index col = 30; col < 60; ++col) {
    y.col(col) = x.col(col) + Scalar(1e-7) * nudge.col(col);
    y.col(col).normalize();
  }
  const Matrix<Scalar> log = flowmatch::log_map(sphere, x, y);
  const double error = max_column_error<Scalar>(flowmatch::exp_map(sphere, x, log), y);
  CHECK(error < 4 * rounding<Scalar>());
  // The logs are tangent and no longer than π.
  CHECK(static_cast<double>((x.transpose() * log).diagonal().cwiseAbs().maxCoeff()) <
        4 * rounding<Scalar>());
  CHECK(static_cast<double>(log.colwise().norm().maxCoeff()) <= pi + rounding<Scalar>());
}

TEMPLATE_TEST_CASE("sphere: exp then log returns the tangent, also for tiny tangents",
                   "[manifold][sphere]", float, double) {
  using Scalar = TestType;
  const Sphere<Scalar> sphere(4);
  std::mt19937_64 generator(12);
  const Matrix<Scalar> x = flowmatch::sample_base(sphere, 300, generator);
  Matrix<Scalar> v = random_tangents<Scalar>(sphere, x, 3.0, generator);
  // Tiny tangents, down to 1e-30, and zero.
  for (Index col = 0; col < 20; ++col) {
    v.col(col) *= Scalar(std::pow(10.0, -1.5 * double(col))) / v.col(col).norm();
  }
  v.col(20).setZero();
  const Matrix<Scalar> y = flowmatch::exp_map(sphere, x, v);
  CHECK(static_cast<double>((y.colwise().norm().array() - Scalar(1)).abs().maxCoeff()) <
        rounding<Scalar>());
  const Matrix<Scalar> back = flowmatch::log_map(sphere, x, y);
  // |v| <= 3 keeps log well conditioned (its condition grows like 1/(π − |v|)); tangents
  // below the resolution of the points come back as rounding errors, never NaN.
  CHECK(max_column_error<Scalar>(back, v) < 16 * rounding<Scalar>());
  // A zero tangent: exp gives the point itself and log exactly zero, whatever the rounding of
  // the point's norm.
  CHECK(y.col(20) == x.col(20));
  CHECK(back.col(20).norm() == Scalar(0));
  // Small angles keep their relative accuracy (acos(⟨x, y⟩) would lose half the digits):
  // y = cos δ·x + sin δ·u for a unit tangent u.
  const Scalar angle = std::is_same_v<Scalar, float> ? Scalar(1e-3) : Scalar(1e-6);
  const Matrix<Scalar> unit = v.rightCols(100).colwise().normalized();
  const Matrix<Scalar> near = std::cos(angle) * x.rightCols(100) + std::sin(angle) * unit;
  const Vector<Scalar> length = flowmatch::log_map(sphere, x.rightCols(100), near).colwise().norm();
  const double relative = static_cast<double>((length.array() / angle - 1).abs().maxCoeff());
  CHECK(relative < (std::is_same_v<Scalar, float> ? 1e-3 : 1e-8));
}

TEMPLATE_TEST_CASE("sphere: antipodal points have a finite log of length π", "[manifold][sphere]",
                   float, double) {
  using Scalar = TestType;
  const Sphere<Scalar> sphere(3);
  std::mt19937_64 generator(13);
  Matrix<Scalar> x = flowmatch::sample_base(sphere, 50, generator);
  x.col(0) = Vector<Scalar>::Unit(3, 2);  // on a coordinate axis
  const Matrix<Scalar> log = flowmatch::log_map(sphere, x, Matrix<Scalar>(-x));
  REQUIRE(log.allFinite());
  for (Index col = 0; col < x.cols(); ++col) {
    CHECK_THAT(static_cast<double>(log.col(col).norm()),
               Catch::Matchers::WithinAbs(pi, rounding<Scalar>()));
    CHECK(std::abs(static_cast<double>(x.col(col).dot(log.col(col)))) < rounding<Scalar>());
  }
  // The documented choice: towards the axis with the smallest |x_k| (e_0 for x = e_2).
  CHECK(log(0, 0) > Scalar(3));
  CHECK(max_column_error<Scalar>(flowmatch::exp_map(sphere, x, log), Matrix<Scalar>(-x)) <
        4 * rounding<Scalar>());
  CHECK(static_cast<double>(flowmatch::log_map(sphere, x, x).cwiseAbs().maxCoeff()) <
        rounding<Scalar>());
}

TEST_CASE("sphere: geodesic distance is the length of log and the angle", "[manifold][sphere]") {
  const Sphere<> sphere(3);
  std::mt19937_64 generator(14);
  const Matrix<double> x = flowmatch::sample_base(sphere, 500, generator);
  const Matrix<double> y = flowmatch::sample_base(sphere, 500, generator);
  const Vector<double> distance = flowmatch::geodesic_distance(sphere, x, y);
  const Matrix<double> log = flowmatch::log_map(sphere, x, y);
  CHECK((distance - log.colwise().norm().transpose()).cwiseAbs().maxCoeff() < 1e-14);
  for (Index col = 0; col < x.cols(); ++col) {
    // Away from ±1, acos is accurate enough to serve as the reference.
    const double cosine = x.col(col).dot(y.col(col));
    if (std::abs(cosine) < 0.99)
      CHECK_THAT(distance(col), Catch::Matchers::WithinAbs(std::acos(cosine), 1e-13));
  }
}

TEST_CASE("flat torus: points wrap into 0 to 2π and log takes the short way", "[manifold][torus]") {
  const FlatTorus<> torus(1);
  const double turn = 2 * pi;
  const Matrix<double> raw{{-0.1, turn, 3 * turn + 0.5, -1e-18, -turn, 7.0}};
  const Matrix<double> wrapped = flowmatch::project_point(torus, raw);
  CHECK_THAT(wrapped(0), Catch::Matchers::WithinAbs(turn - 0.1, 1e-15));
  CHECK(wrapped(1) == 0.0);
  CHECK_THAT(wrapped(2), Catch::Matchers::WithinAbs(0.5, 1e-14));
  CHECK(wrapped(3) == 0.0);  // turn − 1e-18 rounds to 2π, which is 0
  CHECK(wrapped(4) == 0.0);
  CHECK_THAT(wrapped(5), Catch::Matchers::WithinAbs(7.0 - turn, 1e-15));
  CHECK(((wrapped.array() >= 0.0) && (wrapped.array() < turn)).all());

  // Across 0/2π: from 0.1 to 2π − 0.1 is −0.2, and back +0.2.
  const Matrix<double> near_zero{{0.1, turn - 0.1}};
  const Matrix<double> near_turn{{turn - 0.1, 0.1}};
  const Matrix<double> log = flowmatch::log_map(torus, near_zero, near_turn);
  CHECK_THAT(log(0), Catch::Matchers::WithinAbs(-0.2, 1e-14));
  CHECK_THAT(log(1), Catch::Matchers::WithinAbs(0.2, 1e-14));
  CHECK_THAT(flowmatch::geodesic_distance(torus, near_zero, near_turn)(0),
             Catch::Matchers::WithinAbs(0.2, 1e-14));
  // exp wraps: 2π − 0.1 + 0.3 = 0.2.
  const Matrix<double> step{{0.3, -0.3}};
  const Matrix<double> moved = flowmatch::exp_map(torus, near_turn, step);
  CHECK_THAT(moved(0), Catch::Matchers::WithinAbs(0.2, 1e-14));
  CHECK_THAT(moved(1), Catch::Matchers::WithinAbs(turn - 0.2, 1e-14));
  // Opposite angles: log takes −π, the left end of [−π, π).
  const Matrix<double> opposite{{pi}};
  CHECK_THAT(flowmatch::log_map(torus, Matrix<double>::Zero(1, 1), opposite)(0),
             Catch::Matchers::WithinAbs(-pi, 1e-15));
  CHECK_THAT(FlatTorus<float>::shortest(-3 * std::numbers::pi_v<float>),
             Catch::Matchers::WithinAbs(-std::numbers::pi_v<float>, 1e-6));
  CHECK(FlatTorus<float>::wrap(-0.25f) == 2 * std::numbers::pi_v<float> - 0.25f);
}

TEMPLATE_TEST_CASE("flat torus: exp and log are inverse and the distance is |log|",
                   "[manifold][torus]", float, double) {
  using Scalar = TestType;
  const FlatTorus<Scalar> torus(3);
  std::mt19937_64 generator(15);
  const Matrix<Scalar> x = flowmatch::sample_base(torus, 500, generator);
  const Matrix<Scalar> y = flowmatch::sample_base(torus, 500, generator);
  const Matrix<Scalar> log = flowmatch::log_map(torus, x, y);
  CHECK(static_cast<double>(log.cwiseAbs().maxCoeff()) <= pi);
  // exp(log) = y up to a whole turn (y near 0 may come back near 2π).
  const Matrix<Scalar> back = flowmatch::exp_map(torus, x, log);
  const Matrix<Scalar> difference =
      back.binaryExpr(y, [](Scalar a, Scalar b) { return FlatTorus<Scalar>::shortest(a - b); });
  CHECK(static_cast<double>(difference.cwiseAbs().maxCoeff()) < 8 * rounding<Scalar>());
  Matrix<Scalar> v = random_tangents<Scalar>(torus, x, 3.0, generator);
  const Matrix<Scalar> recovered = flowmatch::log_map(torus, x, flowmatch::exp_map(torus, x, v));
  // A tangent shorter than 3 can still have an angle beyond π only if all its length is in it;
  // compare through shortest to allow that case.
  const Matrix<Scalar> tangent_error = recovered.binaryExpr(
      v, [](Scalar a, Scalar b) { return FlatTorus<Scalar>::shortest(a - b); });
  CHECK(static_cast<double>(tangent_error.cwiseAbs().maxCoeff()) < 8 * rounding<Scalar>());
  const Vector<Scalar> distance = flowmatch::geodesic_distance(torus, x, y);
  CHECK(static_cast<double>((distance - log.colwise().norm().transpose()).cwiseAbs().maxCoeff()) <
        rounding<Scalar>());
}

TEMPLATE_TEST_CASE("geodesic path: closed-form velocity against central differences",
                   "[manifold][path]", float, double) {
  using Scalar = TestType;
  std::mt19937_64 generator(16);
  // Float needs a larger difference step (rounding/h against h²).
  const Scalar step = std::is_same_v<Scalar, float> ? Scalar(2e-3) : Scalar(1e-5);
  const double tolerance = std::is_same_v<Scalar, float> ? 1e-2 : 5e-8;
  const Vector<Scalar> times = Vector<Scalar>::LinSpaced(50, Scalar(0.05), Scalar(0.95));
  const Vector<Scalar> after = times.array() + step;
  const Vector<Scalar> before = times.array() - step;

  SECTION("sphere, polynomial schedule") {
    const Sphere<Scalar> sphere(3);
    const GeodesicPath path(sphere, flowmatch::Polynomial<Scalar>(Scalar(2)));
    const Matrix<Scalar> x0 = flowmatch::sample_base(sphere, 50, generator);
    const Matrix<Scalar> x1 = flowmatch::sample_base(sphere, 50, generator);
    const auto sample = path.sample(x0, x1, times);
    const auto later = path.sample(x0, x1, after);
    const auto earlier = path.sample(x0, x1, before);
    const Matrix<Scalar> difference =
        (later.x_t - earlier.x_t) * (after - before).cwiseInverse().asDiagonal();
    CHECK(max_column_error<Scalar>(difference, sample.dx_t) < tolerance);
    // On the sphere and tangent.
    CHECK(static_cast<double>((sample.x_t.colwise().norm().array() - 1).abs().maxCoeff()) <
          rounding<Scalar>());
    CHECK(static_cast<double>(
              (sample.x_t.transpose() * sample.dx_t).diagonal().cwiseAbs().maxCoeff()) <
          16 * rounding<Scalar>());
    // The ends: x_0 = x0, x_1 = x1.
    CHECK(max_column_error<Scalar>(path.sample(x0, x1, Scalar(0)).x_t, x0) < rounding<Scalar>());
    CHECK(max_column_error<Scalar>(path.sample(x0, x1, Scalar(1)).x_t, x1) <
          4 * rounding<Scalar>());
  }
  SECTION("torus, across the wrap") {
    const FlatTorus<Scalar> torus(2);
    const GeodesicPath path(torus, flowmatch::CondOT<Scalar>());
    const Matrix<Scalar> x0 = flowmatch::sample_base(torus, 50, generator);
    const Matrix<Scalar> x1 = flowmatch::sample_base(torus, 50, generator);
    const auto sample = path.sample(x0, x1, times);
    const auto later = path.sample(x0, x1, after);
    const auto earlier = path.sample(x0, x1, before);
    const Matrix<Scalar> difference = later.x_t.binaryExpr(earlier.x_t, [](Scalar a, Scalar b) {
      return FlatTorus<Scalar>::shortest(a - b);
    }) * (after - before).cwiseInverse().asDiagonal();
    CHECK(max_column_error<Scalar>(difference, sample.dx_t) < tolerance);
    // CondOT on the torus: the velocity is log_{x0}(x1) itself.
    CHECK(max_column_error<Scalar>(sample.dx_t, flowmatch::log_map(torus, x0, x1)) == 0);
  }
}

TEST_CASE("manifold solver: rotation on S² converges with orders 1, 2, 4 in both steppings",
          "[manifold][solver]") {
  const Sphere<> sphere(3);
  std::mt19937_64 generator(17);
  const Matrix<double> x = flowmatch::sample_base(sphere, 20, generator);
  Vector<double> axis(3);
  axis << 1.0 / 3, 2.0 / 3, 2.0 / 3;
  const double speed = 2.0;
  const RotationField field{speed * axis};
  Matrix<double> exact(3, x.cols());
  for (Index col = 0; col < x.cols(); ++col) exact.col(col) = rotate(x.col(col), axis, speed);

  const auto order = [&](ManifoldMethod method, ManifoldStepping stepping) {
    std::vector<double> errors;
    for (const double step : {1.0 / 16, 1.0 / 32, 1.0 / 64}) {
      ManifoldSolverOptions<double> options;
      options.method = method;
      options.stepping = stepping;
      options.step_size = step;
      const auto result = flowmatch::integrate_on_manifold(sphere, field, x, {0.0, 1.0}, options);
      CHECK(result.stats.accepted == static_cast<std::size_t>(std::lround(1 / step)));
      CHECK((result.state.colwise().norm().array() - 1).abs().maxCoeff() < 1e-15);
      errors.push_back(max_column_error<double>(result.state, exact));
    }
    return std::log2(errors[0] / errors[2]) / 2;
  };
  CHECK_THAT(order(ManifoldMethod::euler, ManifoldStepping::projection),
             Catch::Matchers::WithinAbs(1, 0.3));
  CHECK_THAT(order(ManifoldMethod::midpoint, ManifoldStepping::projection),
             Catch::Matchers::WithinAbs(2, 0.3));
  CHECK_THAT(order(ManifoldMethod::rk4, ManifoldStepping::projection),
             Catch::Matchers::WithinAbs(4, 0.3));
  CHECK_THAT(order(ManifoldMethod::euler, ManifoldStepping::exponential),
             Catch::Matchers::WithinAbs(1, 0.3));
  CHECK_THAT(order(ManifoldMethod::midpoint, ManifoldStepping::exponential),
             Catch::Matchers::WithinAbs(2, 0.3));
  CHECK_THAT(order(ManifoldMethod::rk4, ManifoldStepping::exponential),
             Catch::Matchers::WithinAbs(4, 0.3));
}

TEST_CASE("manifold solver: forward then backward returns to the start", "[manifold][solver]") {
  const Sphere<> sphere(3);
  std::mt19937_64 generator(18);
  const Matrix<double> x = flowmatch::sample_base(sphere, 30, generator);
  // An ambient, time-dependent field made tangent by the adapter.
  const Matrix<double> linear{{0.0, 1.0, 0.5}, {-1.0, 0.2, 0.0}, {0.3, -0.4, 0.1}};
  const auto ambient = [&](double t, const flowmatch::ConstMatrixRef<double>& points) {
    Matrix<double> velocity = linear * points;
    velocity.row(2).array() += std::sin(3 * t);
    return velocity;
  };
  const flowmatch::TangentField tangent(sphere, std::cref(ambient));
  ManifoldSolverOptions<double> options;
  options.step_size = 0.01;
  options.return_trajectory = true;
  const std::vector<double> forward_grid{0.0, 0.3, 1.0};
  const auto forward = flowmatch::integrate_on_manifold(
      sphere, tangent, x, std::span<const double>(forward_grid), options);
  REQUIRE(forward.trajectory.size() == 3);
  CHECK(forward.stats.nfe == 4 * forward.stats.accepted);
  CHECK(forward.stats.accepted == 100);
  const auto backward =
      flowmatch::integrate_on_manifold(sphere, tangent, forward.state, {1.0, 0.3, 0.0}, options);
  CHECK(max_column_error<double>(backward.state, x) < 1e-7);
  CHECK(max_column_error<double>(backward.trajectory[1], forward.trajectory[1]) < 1e-7);
  // The adapter's velocities are tangent.
  const Matrix<double> velocity = flowmatch::evaluate_velocity<double>(tangent, 0.5, x);
  CHECK((x.transpose() * velocity).diagonal().cwiseAbs().maxCoeff() < 1e-15);
}

TEST_CASE("manifold solver: an Mlp made tangent keeps float states on the sphere",
          "[manifold][solver][float]") {
  const Sphere<float> sphere(3);
  std::mt19937_64 generator(19);
  flowmatch::MlpConfig config;
  config.dim = 3;
  config.hidden = {16};
  const flowmatch::Mlp<float> mlp(config, generator);
  const flowmatch::TangentField tangent(sphere, std::cref(mlp));
  const Matrix<float> x = flowmatch::sample_base(sphere, 64, generator);
  for (const auto stepping : {ManifoldStepping::projection, ManifoldStepping::exponential}) {
    ManifoldSolverOptions<float> options;
    options.stepping = stepping;
    options.step_size = 0.05f;
    const auto result = flowmatch::integrate_on_manifold(sphere, tangent, x, {0.0f, 1.0f}, options);
    CHECK((result.state.colwise().norm().array() - 1).abs().maxCoeff() < 5e-7f);
    CHECK(result.stats.nfe == 80);
  }
}

TEST_CASE("geodesic path: the conditional field carries x0 to x1", "[manifold][path][solver]") {
  std::mt19937_64 generator(20);
  const auto check_reaches = [&](const auto& manifold, double exact_tolerance) {
    const GeodesicPath path(manifold, flowmatch::CondOT<>());
    const Matrix<double> x0 = flowmatch::sample_base(manifold, 40, generator);
    const Matrix<double> x1 = flowmatch::sample_base(manifold, 40, generator);
    const auto field = path.conditional_field(x1);
    // Euler with exponential steps follows the geodesic exactly under CondOT: each step goes
    // h/(1 − t) of the remaining way.
    ManifoldSolverOptions<double> options;
    options.method = ManifoldMethod::euler;
    options.stepping = ManifoldStepping::exponential;
    options.step_size = 0.1;
    const auto euler = flowmatch::integrate_on_manifold(manifold, field, x0, {0.0, 1.0}, options);
    CHECK(flowmatch::geodesic_distance(manifold, euler.state, x1).maxCoeff() < exact_tolerance);
    // And it passes through the path's points.
    const auto half = flowmatch::integrate_on_manifold(manifold, field, x0, {0.0, 0.5}, options);
    CHECK(flowmatch::geodesic_distance(manifold, half.state, path.sample(x0, x1, 0.5).x_t)
              .maxCoeff() < exact_tolerance);
    // Midpoint with projected steps (never evaluated at t = 1) converges to x1.
    options.method = ManifoldMethod::midpoint;
    options.stepping = ManifoldStepping::projection;
    options.step_size = 0.01;
    const auto midpoint =
        flowmatch::integrate_on_manifold(manifold, field, x0, {0.0, 1.0}, options);
    CHECK(flowmatch::geodesic_distance(manifold, midpoint.state, x1).maxCoeff() < 1e-3);
    // The field is singular at κ = 1.
    CHECK_THROWS_AS(flowmatch::evaluate_velocity<double>(field, 1.0, x0), std::domain_error);
  };
  SECTION("sphere") {
    check_reaches(Sphere<>(3), 1e-12);
  }
  SECTION("torus") {
    check_reaches(FlatTorus<>(2), 1e-12);
  }
  SECTION("product") {
    check_reaches(Product(Sphere<>(3), FlatTorus<>(2), Euclidean<>(1)), 1e-12);
  }
}

TEST_CASE("product: every operation acts factor by factor", "[manifold][product]") {
  const Sphere<> sphere(3);
  const FlatTorus<> torus(2);
  const Euclidean<> plane(2);
  const Product product(sphere, torus, plane);
  REQUIRE(product.dimension() == 7);
  // Draws come from the factors in order, with one generator.
  std::mt19937_64 generator(21), replay(21);
  const Matrix<double> x = flowmatch::sample_base(product, 30, generator);
  const Matrix<double> y = flowmatch::sample_base(product, 30, generator);
  Matrix<double> factor_x(7, 30), factor_y(7, 30);
  for (Matrix<double>* batch : {&factor_x, &factor_y}) {
    batch->topRows(3) = flowmatch::sample_base(sphere, 30, replay);
    batch->middleRows(3, 2) = flowmatch::sample_base(torus, 30, replay);
    batch->bottomRows(2) = flowmatch::sample_base(plane, 30, replay);
  }
  CHECK(x == factor_x);
  CHECK(y == factor_y);

  const Matrix<double> log = flowmatch::log_map(product, x, y);
  CHECK(log.topRows(3) == flowmatch::log_map(sphere, x.topRows(3), y.topRows(3)));
  CHECK(log.middleRows(3, 2) == flowmatch::log_map(torus, x.middleRows(3, 2), y.middleRows(3, 2)));
  CHECK(log.bottomRows(2) == flowmatch::log_map(plane, x.bottomRows(2), y.bottomRows(2)));
  const Vector<double> distance = flowmatch::geodesic_distance(product, x, y);
  const Vector<double> squares =
      flowmatch::geodesic_distance(sphere, x.topRows(3), y.topRows(3)).cwiseAbs2() +
      flowmatch::geodesic_distance(torus, x.middleRows(3, 2), y.middleRows(3, 2)).cwiseAbs2() +
      flowmatch::geodesic_distance(plane, x.bottomRows(2), y.bottomRows(2)).cwiseAbs2();
  CHECK((distance - squares.cwiseSqrt()).cwiseAbs().maxCoeff() < 1e-14);
  CHECK((distance - log.colwise().norm().transpose()).cwiseAbs().maxCoeff() < 1e-14);
  const Matrix<double> back = flowmatch::exp_map(product, x, log);
  CHECK(back.topRows(3) == flowmatch::exp_map(sphere, x.topRows(3), log.topRows(3)));
  CHECK(back.middleRows(3, 2) ==
        flowmatch::exp_map(torus, x.middleRows(3, 2), log.middleRows(3, 2)));

  const Vector<double> density = flowmatch::base_log_density(product, x);
  const Vector<double> factor_density = flowmatch::base_log_density(sphere, x.topRows(3)) +
                                        flowmatch::base_log_density(torus, x.middleRows(3, 2)) +
                                        flowmatch::base_log_density(plane, x.bottomRows(2));
  CHECK((density - factor_density).cwiseAbs().maxCoeff() < 1e-14);

  // The path of the product is the paths of the factors side by side.
  const Vector<double> times = Vector<double>::LinSpaced(30, 0.0, 1.0);
  const auto sample = GeodesicPath(product, flowmatch::CondOT<>()).sample(x, y, times);
  const auto sphere_sample =
      GeodesicPath(sphere, flowmatch::CondOT<>()).sample(x.topRows(3), y.topRows(3), times);
  const auto torus_sample = GeodesicPath(torus, flowmatch::CondOT<>())
                                .sample(x.middleRows(3, 2), y.middleRows(3, 2), times);
  CHECK(sample.x_t.topRows(3) == sphere_sample.x_t);
  CHECK(sample.dx_t.topRows(3) == sphere_sample.dx_t);
  CHECK(sample.x_t.middleRows(3, 2) == torus_sample.x_t);
  CHECK(sample.dx_t.middleRows(3, 2) == torus_sample.dx_t);

  // A product of products is a product.
  const Product nested(Product(sphere, torus), plane);
  CHECK(flowmatch::log_map(nested, x, y) == log);
  // Off-manifold detection reaches every factor.
  Matrix<double> off = x;
  off(4, 3) = -1.0;
  CHECK_THROWS_AS(flowmatch::log_map(product, off, y), std::invalid_argument);
}

TEMPLATE_TEST_CASE("base distributions: moments and log-densities", "[manifold][base]", float,
                   double) {
  using Scalar = TestType;
  const Index count = 200000;
  std::mt19937_64 generator(22);
  SECTION("sphere S² is uniform: mean 0, E[x xᵀ] = I/3") {
    const Sphere<Scalar> sphere(3);
    const Matrix<double> x =
        flowmatch::sample_base(sphere, count, generator).template cast<double>();
    const Vector<double> mean = x.rowwise().mean();
    const Matrix<double> second = x * x.transpose() / double(count);
    INFO("mean " << mean.transpose() << ", second moment\n" << second);
    CHECK(mean.cwiseAbs().maxCoeff() < 0.006);
    CHECK((second - Matrix<double>::Identity(3, 3) / 3).cwiseAbs().maxCoeff() < 0.005);
    CHECK_THAT(
        static_cast<double>(flowmatch::base_log_density(sphere, x.leftCols(1).cast<Scalar>())(0)),
        Catch::Matchers::WithinRel(-std::log(4 * pi), 1e-6));
    CHECK_THAT(static_cast<double>(
                   flowmatch::base_log_density(Sphere<Scalar>(2), Vector<Scalar>::Unit(2, 0))(0)),
               Catch::Matchers::WithinRel(-std::log(2 * pi), 1e-6));
    // |S³| = 2π².
    CHECK_THAT(static_cast<double>(
                   flowmatch::base_log_density(Sphere<Scalar>(4), Vector<Scalar>::Unit(4, 0))(0)),
               Catch::Matchers::WithinRel(-std::log(2 * pi * pi), 1e-6));
  }
  SECTION("torus T² is uniform: each angle uniform on [0, 2π), the two uncorrelated") {
    const FlatTorus<Scalar> torus(2);
    const Matrix<double> x =
        flowmatch::sample_base(torus, count, generator).template cast<double>();
    CHECK(((x.array() >= 0) && (x.array() < 2 * pi)).all());
    const Vector<double> mean = x.rowwise().mean();
    const Matrix<double> centred = x.colwise() - mean;
    const Matrix<double> covariance = centred * centred.transpose() / double(count);
    INFO("mean " << mean.transpose() << ", covariance\n" << covariance);
    CHECK((mean.array() - pi).abs().maxCoeff() < 0.02);
    CHECK((covariance - Matrix<double>::Identity(2, 2) * (pi * pi / 3)).cwiseAbs().maxCoeff() <
          0.05);
    // Eight equal bins per angle each hold an eighth of the draws.
    for (Index row = 0; row < 2; ++row) {
      std::vector<double> bins(8, 0.0);
      for (Index col = 0; col < count; ++col) {
        bins[static_cast<std::size_t>(std::min(7.0, std::floor(x(row, col) / (pi / 4))))] += 1;
      }
      // Four standard deviations of a bin's share, √(p(1 − p)/N).
      const double spread = 4 * std::sqrt(0.125 * 0.875 / double(count));
      for (const double bin : bins) CHECK(std::abs(bin / double(count) - 0.125) < spread);
    }
    CHECK_THAT(
        static_cast<double>(flowmatch::base_log_density(torus, x.leftCols(1).cast<Scalar>())(0)),
        Catch::Matchers::WithinRel(-2 * std::log(2 * pi), 1e-6));
  }
}

TEST_CASE("projections and base densities in closed form", "[manifold][base]") {
  // The sphere's projection divides by the norm; the zero column, with no nearest point, goes
  // to e₁.
  const Matrix<double> raw{{3.0, 0.0}, {4.0, 0.0}};
  const Matrix<double> projected = flowmatch::project_point(Sphere<>(2), raw);
  CHECK(projected.col(0).isApprox(Vector<double>(raw.col(0)) / 5, 1e-15));
  CHECK(projected.col(1) == Vector<double>::Unit(2, 0));
  // R²: log N(x; 0, I) = −log 2π − |x|²/2.
  const Matrix<double> points{{0.0, 1.0}, {0.0, 2.0}};
  const Vector<double> density = flowmatch::base_log_density(Euclidean<>(2), points);
  CHECK_THAT(density(0), Catch::Matchers::WithinAbs(-std::log(2 * pi), 1e-15));
  CHECK_THAT(density(1), Catch::Matchers::WithinAbs(-std::log(2 * pi) - 2.5, 1e-15));
}

TEST_CASE("manifolds reject bad input", "[manifold][errors]") {
  const Sphere<> sphere(3);
  std::mt19937_64 generator(23);
  const Matrix<double> x = flowmatch::sample_base(sphere, 4, generator);
  CHECK_THROWS_AS(Sphere<>(1), std::invalid_argument);
  CHECK_THROWS_AS(FlatTorus<>(0), std::invalid_argument);
  CHECK_THROWS_AS(Euclidean<>(0), std::invalid_argument);
  // Wrong dimension.
  CHECK_THROWS_WITH(flowmatch::log_map(sphere, Matrix<double>(x.topRows(2)), x.topRows(2)),
                    Catch::Contains("log_map: points has shape 2x4, expected 3xany"));
  CHECK_THROWS_AS(flowmatch::log_map(sphere, x, Matrix<double>(x.leftCols(3))),
                  std::invalid_argument);
  // Non-finite.
  Matrix<double> bad = x;
  bad(1, 2) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(flowmatch::exp_map(sphere, x, bad),
                    Catch::Contains("exp_map: tangents has a non-finite entry in column 2"));
  CHECK_THROWS_AS(flowmatch::project_point(sphere, bad), std::invalid_argument);
  // Off the sphere.
  Matrix<double> off = x;
  off.col(1) *= 1.01;
  CHECK_THROWS_WITH(flowmatch::geodesic_distance(sphere, x, off),
                    Catch::Contains("geodesic_distance: targets has column 1 at distance"));
  CHECK_THROWS_AS(GeodesicPath(sphere, flowmatch::CondOT<>()).sample(off, x, 0.5),
                  std::invalid_argument);
  CHECK_THROWS_AS(GeodesicPath(sphere, flowmatch::CondOT<>()).sample(x, x, 1.5), std::domain_error);
  const RotationField rotation{Vector<double>::Unit(3, 2)};
  CHECK_THROWS_AS(flowmatch::integrate_on_manifold(sphere, rotation, off, {0.0, 1.0}),
                  std::invalid_argument);
  // Off the torus' range of angles.
  CHECK_THROWS_AS(flowmatch::base_log_density(FlatTorus<>(1), Matrix<double>::Constant(1, 1, 7.0)),
                  std::invalid_argument);
  // Bad grids and options.
  CHECK_THROWS_AS(flowmatch::integrate_on_manifold(sphere, rotation, x, {0.0, 0.5, 0.2}),
                  std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::integrate_on_manifold(sphere, rotation, x, {0.0, 1.5}),
                  std::domain_error);
  ManifoldSolverOptions<double> options;
  options.step_size = -0.1;
  CHECK_THROWS_AS(flowmatch::integrate_on_manifold(sphere, rotation, x, {0.0, 1.0}, options),
                  std::invalid_argument);
  // A velocity that turns non-finite in one column: numerical_error with time and column.
  const auto exploding = [](double t, const flowmatch::ConstMatrixRef<double>& points) {
    Matrix<double> velocity = Matrix<double>::Zero(points.rows(), points.cols());
    if (t > 0.5) velocity(0, 2) = std::numeric_limits<double>::infinity();
    return velocity;
  };
  options.step_size = 0.25;
  try {
    flowmatch::integrate_on_manifold(sphere, exploding, x, {0.0, 1.0}, options);
    FAIL("expected numerical_error");
  } catch (const flowmatch::numerical_error& error) {
    CHECK(error.sample() == 2);
    CHECK(error.time() > 0.5);
    CHECK(error.time() <= 0.75);
  }
}

namespace {

// F(x) = A·x with its Jacobian-vector product A·v.
struct LinearField {
  Matrix<double> matrix;
  void operator()(double /*t*/, const flowmatch::ConstMatrixRef<double>& x,
                  flowmatch::MatrixRef<double> out) const {
    out = matrix * x;
  }
  void jvp(double /*t*/, const flowmatch::ConstMatrixRef<double>& /*x*/,
           const flowmatch::ConstMatrixRef<double>& tangent,
           flowmatch::MatrixRef<double> out) const {
    out = matrix * tangent;
  }
};

// A nonlinear ambient field on R³, generic over its scalar type (forward mode derives its
// Jacobian-vector products).
const auto nonlinear_field = [](auto t, const auto& x) {
  using std::cos;
  using std::sin;
  using Entry = typename std::decay_t<decltype(x)>::Scalar;
  Matrix<Entry> out(3, x.cols());
  for (Index col = 0; col < x.cols(); ++col) {
    out(0, col) = sin(x(1, col)) + x(2, col) * x(2, col) * t;
    out(1, col) = x(0, col) * x(2, col);
    out(2, col) = cos(x(0, col) + x(1, col)) + x(1, col);
  }
  return out;
};

// The point of S² at polar angle θ and azimuth φ.
Vector<double> spherical_point(double polar, double azimuth) {
  Vector<double> point(3);
  point << std::sin(polar) * std::cos(azimuth), std::sin(polar) * std::sin(azimuth),
      std::cos(polar);
  return point;
}

// The divergence of u = P F on S² in spherical coordinates, by central differences:
// div u = (1/sin θ)·∂_θ(sin θ·u^θ) + ∂_φ u^φ, with u^θ = ⟨u, e_θ⟩ and u^φ = ⟨u, e_φ⟩/sin θ the
// components in the coordinate basis (√g = sin θ).
double spherical_divergence(double t, double polar, double azimuth) {
  const auto components = [&](double theta, double phi) {
    const Vector<double> point = spherical_point(theta, phi);
    const Matrix<double> ambient = nonlinear_field(t, Matrix<double>(point));
    const Vector<double> tangent = ambient.col(0) - point.dot(ambient.col(0)) * point;
    Vector<double> polar_axis(3), azimuth_axis(3);
    polar_axis << std::cos(theta) * std::cos(phi), std::cos(theta) * std::sin(phi),
        -std::sin(theta);
    azimuth_axis << -std::sin(phi), std::cos(phi), 0.0;
    return std::pair{tangent.dot(polar_axis), tangent.dot(azimuth_axis) / std::sin(theta)};
  };
  const double step = 1e-4;
  const double polar_flux = (std::sin(polar + step) * components(polar + step, azimuth).first -
                             std::sin(polar - step) * components(polar - step, azimuth).first) /
                            (2 * step * std::sin(polar));
  const double azimuth_flux =
      (components(polar, azimuth + step).second - components(polar, azimuth - step).second) /
      (2 * step);
  return polar_flux + azimuth_flux;
}

}  // namespace

TEST_CASE("riemannian divergence: a linear field on spheres in closed form",
          "[manifold][divergence]") {
  // For F = A·x, P F is the gradient of ½xᵀA_s x (A_s the symmetric part) plus a rotation;
  // the rotation has no divergence and the Laplacian of the quadratic form on S^(n−1) is
  // tr A − n·xᵀA x.
  std::mt19937_64 generator(41);
  std::normal_distribution<double> normal;
  for (const Index dim : {Index(2), Index(3), Index(5)}) {
    const Sphere<> sphere(dim);
    LinearField field{Matrix<double>(dim, dim)};
    for (Index entry = 0; entry < field.matrix.size(); ++entry)
      field.matrix(entry) = normal(generator);
    const Matrix<double> x = flowmatch::sample_base(sphere, 50, generator);
    const Vector<double> divergence = flowmatch::riemannian_divergence(sphere, field, 0.5, x);
    const Vector<double> expected =
        (field.matrix.trace() - double(dim) * (x.transpose() * field.matrix * x).diagonal().array())
            .matrix();
    INFO("n = " << dim);
    CHECK((divergence - expected).cwiseAbs().maxCoeff() < 1e-13);
  }
}

TEST_CASE("riemannian divergence: a nonlinear field on S² against spherical coordinates",
          "[manifold][divergence]") {
  const Sphere<> sphere(3);
  Matrix<double> x(3, 40);
  std::vector<std::pair<double, double>> angles;
  for (Index col = 0; col < x.cols(); ++col) {
    const double polar = 0.2 + 2.7 * double(col) / double(x.cols());
    const double azimuth = 0.37 + 0.61 * double(col);
    angles.emplace_back(polar, azimuth);
    x.col(col) = spherical_point(polar, azimuth);
  }
  const Vector<double> divergence =
      flowmatch::riemannian_divergence(sphere, nonlinear_field, 0.7, x);
  for (Index col = 0; col < x.cols(); ++col) {
    const auto [polar, azimuth] = angles[static_cast<std::size_t>(col)];
    INFO("θ = " << polar << ", φ = " << azimuth);
    CHECK_THAT(divergence(col),
               Catch::Matchers::WithinAbs(spherical_divergence(0.7, polar, azimuth), 1e-6));
  }
}

TEST_CASE("riemannian divergence: integrates to zero over the sphere", "[manifold][divergence]") {
  // The divergence theorem on a closed manifold: the mean of div u under the uniform
  // distribution is 0 (to the Monte Carlo error, five standard errors).
  const Sphere<> sphere(3);
  std::mt19937_64 generator(44);
  const Index count = 100000;
  const Matrix<double> x = flowmatch::sample_base(sphere, count, generator);
  const Vector<double> divergence =
      flowmatch::riemannian_divergence(sphere, nonlinear_field, 0.9, x);
  const double mean = divergence.mean();
  const double spread = std::sqrt((divergence.array() - mean).square().mean() / double(count));
  INFO("mean " << mean << ", standard error " << spread);
  CHECK(std::abs(mean) < 5 * spread);
}

TEST_CASE("riemannian divergence: flat torus and products", "[manifold][divergence]") {
  std::mt19937_64 generator(42);
  // On the flat torus the divergence is the ordinary one: F = sin θ per angle has Σ cos θ_i.
  const FlatTorus<> torus(2);
  const auto waves = [](auto /*t*/, const auto& x) {
    using std::sin;
    return x.unaryExpr([](auto angle) { return sin(angle); }).eval();
  };
  const Matrix<double> angles = flowmatch::sample_base(torus, 30, generator);
  const Vector<double> flat = flowmatch::riemannian_divergence(torus, waves, 0.0, angles);
  CHECK((flat - angles.array().cos().colwise().sum().transpose().matrix()).cwiseAbs().maxCoeff() <
        1e-14);
  // A product adds its factors' divergences when the field acts factor by factor.
  const Sphere<> sphere(3);
  LinearField linear{Matrix<double>(3, 3)};
  linear.matrix << 0.3, -1.0, 0.5, 0.2, 0.1, -0.7, 1.1, 0.4, -0.2;
  const auto blockwise = [&](double t, const flowmatch::ConstMatrixRef<double>& x) {
    Matrix<double> out(5, x.cols());
    out.topRows(3) = linear.matrix * x.topRows(3);
    out.bottomRows(2) = waves(t, Matrix<double>(x.bottomRows(2)));
    return out;
  };
  const auto blockwise_jvp = [&](double /*t*/, const flowmatch::ConstMatrixRef<double>& x,
                                 const flowmatch::ConstMatrixRef<double>& tangent,
                                 flowmatch::MatrixRef<double> out) {
    out.topRows(3) = linear.matrix * tangent.topRows(3);
    out.bottomRows(2) = x.bottomRows(2).array().cos() * tangent.bottomRows(2).array();
  };
  struct ProductField {
    decltype(blockwise) velocity;
    decltype(blockwise_jvp) tangent_map;
    Matrix<double> operator()(double t, const flowmatch::ConstMatrixRef<double>& x) const {
      return velocity(t, x);
    }
    void jvp(double t, const flowmatch::ConstMatrixRef<double>& x,
             const flowmatch::ConstMatrixRef<double>& tangent,
             flowmatch::MatrixRef<double> out) const {
      tangent_map(t, x, tangent, out);
    }
  };
  const ProductField field{blockwise, blockwise_jvp};
  const Product product(sphere, torus);
  Matrix<double> x(5, 30);
  x.topRows(3) = flowmatch::sample_base(sphere, 30, generator);
  x.bottomRows(2) = angles;
  const Vector<double> divergence = flowmatch::riemannian_divergence(product, field, 0.0, x);
  const Vector<double> factors =
      flowmatch::riemannian_divergence(sphere, linear, 0.0, x.topRows(3)) + flat;
  CHECK((divergence - factors).cwiseAbs().maxCoeff() < 1e-13);
}

TEST_CASE("riemannian divergence: Hutchinson's tangent probes are unbiased",
          "[manifold][divergence]") {
  const Sphere<> sphere(3);
  std::mt19937_64 generator(43);
  const Matrix<double> x = flowmatch::sample_base(sphere, 4, generator);
  const Vector<double> exact = flowmatch::riemannian_divergence(sphere, nonlinear_field, 0.3, x);
  const Index probes = 40000;
  for (const auto law :
       {flowmatch::ProbeDistribution::gaussian, flowmatch::ProbeDistribution::rademacher}) {
    const Matrix<double> ambient = flowmatch::draw_probes<double>(3, 4, probes, law, generator);
    const Vector<double> estimate =
        flowmatch::riemannian_hutchinson_divergence(sphere, nonlinear_field, 0.3, x, ambient);
    INFO("exact " << exact.transpose() << ", estimate " << estimate.transpose());
    // Each probe's term has a standard deviation below 2 here: 5σ/√K = 0.05.
    CHECK((estimate - exact).cwiseAbs().maxCoeff() < 0.05);
  }
  // Bad input.
  Matrix<double> off = x;
  off.col(0) *= 2.0;
  CHECK_THROWS_AS(flowmatch::riemannian_divergence(sphere, nonlinear_field, 0.3, off),
                  std::invalid_argument);
  CHECK_THROWS_WITH(
      flowmatch::riemannian_hutchinson_divergence(sphere, nonlinear_field, 0.3, x,
                                                  Matrix<double>::Ones(3, 6)),
      Catch::Contains("riemannian_hutchinson_divergence: probes has shape 3x6, expected 3x(K·4)"));
}

namespace {

// The constant ambient field e = e_n (the last axis), whose projection u = e − ⟨e, x⟩x on
// S^(n−1) moves every point towards the pole e along its great circle through e: the height
// z = ⟨e, x⟩ obeys dz/dt = ⟨e, u⟩ = 1 − z², so z_t = tanh(atanh z₀ + t).
template <class Scalar = double>
struct Upward {
  void operator()(Scalar /*t*/, const flowmatch::ConstMatrixRef<Scalar>& x,
                  flowmatch::MatrixRef<Scalar> out) const {
    out.setZero();
    out.row(x.rows() - 1).setOnes();
  }
  void jvp(Scalar /*t*/, const flowmatch::ConstMatrixRef<Scalar>& /*x*/,
           const flowmatch::ConstMatrixRef<Scalar>& /*tangent*/,
           flowmatch::MatrixRef<Scalar> out) const {
    out.setZero();
  }
};

}  // namespace

TEST_CASE("log-likelihood on S²: the flow towards a pole in closed form",
          "[manifold][likelihood]") {
  // Archimedes: the area of S² is dz·dφ, so the uniform base has density 1/2 in z, and the map
  // z₀ ↦ z₁ = tanh(atanh z₀ + 1) (φ unchanged) gives p₁ = (1/4π)·(1 − z₀²)/(1 − z₁²).
  const Sphere<> sphere(3);
  std::mt19937_64 generator(51);
  Matrix<double> x = flowmatch::sample_base(sphere, 200, generator);
  const Vector<double> height = x.row(2).transpose();
  Vector<double> start_height(x.cols()), expected(x.cols());
  for (Index col = 0; col < x.cols(); ++col) {
    start_height(col) = std::tanh(std::atanh(height(col)) - 1);
    expected(col) = -std::log(4 * pi) + std::log1p(-start_height(col) * start_height(col)) -
                    std::log1p(-height(col) * height(col));
  }
  ManifoldSolverOptions<double> options;
  options.step_size = 0.01;
  const auto result = flowmatch::log_likelihood_on_manifold(sphere, Upward<>{}, x, options);
  CHECK((result.log_prob - expected).cwiseAbs().maxCoeff() < 1e-8);
  CHECK((result.noise.row(2).transpose() - start_height).cwiseAbs().maxCoeff() < 1e-9);
  CHECK(result.stats.accepted == 100);
  CHECK(result.stats.nfe == 400);
  // Hutchinson's estimate is exact here: the Jacobian is zero and the projection term exact.
  const Matrix<double> probes = flowmatch::draw_probes<double>(
      3, x.cols(), 2, flowmatch::ProbeDistribution::rademacher, generator);
  const auto estimated =
      flowmatch::log_likelihood_on_manifold(sphere, Upward<>{}, x, probes, options);
  CHECK((estimated.log_prob - result.log_prob).cwiseAbs().maxCoeff() < 1e-14);
  // Without a step size, or with points off the sphere: invalid_argument.
  CHECK_THROWS_WITH(flowmatch::log_likelihood_on_manifold(sphere, Upward<>{}, x, {}),
                    Catch::Contains("ManifoldSolverOptions: step_size is unset"));
  x.col(0) *= 1.5;
  CHECK_THROWS_AS(flowmatch::log_likelihood_on_manifold(sphere, Upward<>{}, x, options),
                  std::invalid_argument);
}

// u(x) = ω × x with its Jacobian-vector product ω × v: a rotation, divergence-free on S².
struct SpinningField {
  Vector<double> omega;
  void operator()(double /*t*/, const flowmatch::ConstMatrixRef<double>& x,
                  flowmatch::MatrixRef<double> out) const {
    for (Index col = 0; col < x.cols(); ++col) out.col(col) = cross(omega, x.col(col));
  }
  void jvp(double /*t*/, const flowmatch::ConstMatrixRef<double>& /*x*/,
           const flowmatch::ConstMatrixRef<double>& tangent,
           flowmatch::MatrixRef<double> out) const {
    for (Index col = 0; col < tangent.cols(); ++col) out.col(col) = cross(omega, tangent.col(col));
  }
};

TEST_CASE("log-likelihood on S²: a rotation keeps the uniform density over thousands of steps",
          "[manifold][likelihood]") {
  // A rotation preserves area, so p_1 = p_0 = 1/4π everywhere; 4000 RK4 steps must also leave
  // every point on the sphere to rounding.
  const Sphere<> sphere(3);
  std::mt19937_64 generator(61);
  const Matrix<double> x = flowmatch::sample_base(sphere, 100, generator);
  Vector<double> omega(3);
  omega << 0.6, -1.2, 2.0;
  ManifoldSolverOptions<double> options;
  options.step_size = 1.0 / 4000;
  const auto result =
      flowmatch::log_likelihood_on_manifold(sphere, SpinningField{omega}, x, options);
  CHECK(result.stats.accepted == 4000);
  CHECK((result.log_prob.array() + std::log(4 * pi)).abs().maxCoeff() < 1e-12);
  CHECK((result.noise.colwise().norm().array() - 1).abs().maxCoeff() < 1e-14);
}

// θ̇_i = a·sin θ_i on every angle of a torus, with divergence Σ_i a·cos θ_i.
struct SineFlow {
  double rate;
  void operator()(double /*t*/, const flowmatch::ConstMatrixRef<double>& x,
                  flowmatch::MatrixRef<double> out) const {
    out = rate * x.array().sin().matrix();
  }
  void jvp(double /*t*/, const flowmatch::ConstMatrixRef<double>& x,
           const flowmatch::ConstMatrixRef<double>& tangent,
           flowmatch::MatrixRef<double> out) const {
    out = (rate * x.array().cos() * tangent.array()).matrix();
  }
};

TEST_CASE("log-likelihood on a torus: a flow with known divergence in closed form",
          "[manifold][likelihood][torus]") {
  // θ̇ = a sin θ solves tan(θ_t/2) = e^{a t} tan(θ_0/2), and the derivative of a 1-D flow map
  // is f(θ_1)/f(θ_0) = sin θ_1 / sin θ_0, so log p_1(θ_1) = −n log 2π − Σ_i log(sin θ_1i/sin θ_0i).
  const FlatTorus<> torus(2);
  std::mt19937_64 generator(67);
  const Matrix<double> x = flowmatch::sample_base(torus, 100, generator);
  const double rate = 1.0;
  Matrix<double> start(2, x.cols());
  Vector<double> expected = Vector<double>::Constant(x.cols(), -2 * std::log(2 * pi));
  for (Index col = 0; col < x.cols(); ++col) {
    for (Index i = 0; i < 2; ++i) {
      const double angle = x(i, col);
      start(i, col) = 2 * std::atan2(std::exp(-rate) * std::sin(angle / 2), std::cos(angle / 2));
      expected(col) -= std::log(std::sin(angle) / std::sin(start(i, col)));
    }
  }
  ManifoldSolverOptions<double> options;
  options.step_size = 1.0 / 1000;
  const auto result = flowmatch::log_likelihood_on_manifold(torus, SineFlow{rate}, x, options);
  CHECK((result.log_prob - expected).cwiseAbs().maxCoeff() < 1e-10);
  CHECK((result.noise - start).cwiseAbs().maxCoeff() < 1e-10);
}

TEST_CASE("log-likelihood on S²: a nonlinear flow's density integrates to one",
          "[manifold][likelihood]") {
  // E_uniform[4π·p₁(x)] = ∫ p₁ dA = 1, by Monte Carlo over uniform points.
  const Sphere<> sphere(3);
  std::mt19937_64 generator(52);
  const Index count = 20000;
  const Matrix<double> x = flowmatch::sample_base(sphere, count, generator);
  ManifoldSolverOptions<double> options;
  options.step_size = 0.05;
  const auto result = flowmatch::log_likelihood_on_manifold(sphere, nonlinear_field, x, options);
  const Vector<double> ratio = (result.log_prob.array() + std::log(4 * pi)).exp().matrix();
  const double mean = ratio.mean();
  const double spread = std::sqrt((ratio.array() - mean).square().mean() / double(count));
  INFO("mean " << mean << ", standard error " << spread);
  CHECK(std::abs(mean - 1) < 5 * spread);
  CHECK(spread < 0.05);
  // Hutchinson's log-likelihoods are unbiased: their mean difference from the exact ones is
  // within five standard errors of zero.
  const Matrix<double> probes = flowmatch::draw_probes<double>(
      3, count, 1, flowmatch::ProbeDistribution::gaussian, generator);
  const auto estimated =
      flowmatch::log_likelihood_on_manifold(sphere, nonlinear_field, x, probes, options);
  const Vector<double> difference = estimated.log_prob - result.log_prob;
  const double bias = difference.mean();
  const double bias_spread = std::sqrt((difference.array() - bias).square().mean() / double(count));
  INFO("mean difference " << bias << ", standard error " << bias_spread);
  CHECK(std::abs(bias) < 5 * bias_spread);
}

TEST_CASE("riemannian flow-matching loss: the projected error and its gradient",
          "[manifold][training]") {
  const Sphere<> sphere(3);
  std::mt19937_64 generator(61);
  const Matrix<double> x = flowmatch::sample_base(sphere, 6, generator);
  const Matrix<double> target = random_tangents<double>(sphere, x, 1.0, generator);
  Matrix<double> prediction = random_tangents<double>(sphere, x, 1.0, generator);
  prediction += x * Vector<double>::LinSpaced(6, -2.0, 3.0).asDiagonal();  // normal parts
  Matrix<double> gradient(3, 6);
  const double loss = flowmatch::riemannian_flow_matching_loss_and_gradient(sphere, x, prediction,
                                                                            target, gradient);
  // Normal parts cost nothing: a prediction equal to the target plus λ·x has zero loss.
  Matrix<double> unused(3, 6);
  const Matrix<double> normal_only = target + 5.0 * x;
  CHECK(flowmatch::riemannian_flow_matching_loss_and_gradient(sphere, x, normal_only, target,
                                                              unused) < 1e-30);
  // The gradient against central differences of the loss.
  const double step = 1e-6;
  for (Index entry = 0; entry < prediction.size(); ++entry) {
    Matrix<double> ahead = prediction, behind = prediction;
    ahead(entry) += step;
    behind(entry) -= step;
    const double difference =
        (flowmatch::riemannian_flow_matching_loss_and_gradient(sphere, x, ahead, target, unused) -
         flowmatch::riemannian_flow_matching_loss_and_gradient(sphere, x, behind, target, unused)) /
        (2 * step);
    CHECK_THAT(gradient(entry), Catch::Matchers::WithinAbs(difference, 1e-9));
  }
  CHECK(loss > 0);
  CHECK_THROWS_AS(flowmatch::riemannian_flow_matching_loss_and_gradient(
                      sphere, x, Matrix<double>(prediction.leftCols(5)), target, gradient),
                  std::invalid_argument);
}

TEST_CASE("riemannian flow matching: an Mlp learns to carry the uniform sphere to a cap",
          "[manifold][training]") {
  // Data: normalise(e_z + 0.3·N(0, I)), concentrated around the north pole (E[z] ≈ 0.93).
  const Sphere<> sphere(3);
  std::mt19937_64 generator(62);
  std::normal_distribution<double> normal;
  const auto draw_data = [&](Index count) {
    Matrix<double> data(3, count);
    for (Index col = 0; col < count; ++col) {
      for (Index row = 0; row < 3; ++row) data(row, col) = 0.3 * normal(generator);
      data(2, col) += 1.0;
      data.col(col).normalize();
    }
    return data;
  };
  flowmatch::MlpConfig config;
  config.dim = 3;
  config.hidden = {64, 64};
  flowmatch::Mlp<double> model(config, generator);
  flowmatch::MlpWorkspace<double> workspace;
  flowmatch::MlpGradient<double> gradient = model.zero_gradient();
  flowmatch::Adam<double> adam(model.parameters().size());
  const GeodesicPath path(sphere, flowmatch::CondOT<>());
  double first_losses = 0, last_losses = 0;
  const int steps = 1500;
  for (int step = 0; step < steps; ++step) {
    const auto batch = flowmatch::riemannian_flow_matching_batch(path, draw_data(256), generator);
    const double loss =
        flowmatch::mlp_riemannian_flow_matching_loss(sphere, model, workspace, batch, gradient);
    if (step < 100) first_losses += loss;
    if (step >= steps - 100) last_losses += loss;
    adam.step(model.parameters(), gradient.flat(), 3e-3);
  }
  INFO("mean loss of the first 100 steps " << first_losses / 100 << ", of the last 100 "
                                           << last_losses / 100);
  CHECK(last_losses < 0.9 * first_losses);  // the conditional loss keeps its variance floor
  // Sampling with the learned field: the points gather around the pole like the data.
  const flowmatch::TangentField field(sphere, std::cref(model));
  ManifoldSolverOptions<double> options;
  options.step_size = 0.05;
  const Matrix<double> x0 = flowmatch::sample_base(sphere, 2000, generator);
  const auto result = flowmatch::integrate_on_manifold(sphere, field, x0, {0.0, 1.0}, options);
  const double mean_height = result.state.row(2).mean();
  const double data_height = draw_data(2000).row(2).mean();
  INFO("mean height of the samples " << mean_height << ", of the data " << data_height);
  CHECK(std::abs(mean_height - data_height) < 0.05);
  CHECK((result.state.colwise().norm().array() - 1).abs().maxCoeff() < 1e-15);
}

// --- Observers, statistics, products against their factors, the pole flow on S^(n−1) --------

namespace {

// The manifold methods with their stages (evaluations of the field per step) and the Euclidean
// method of the same tableau.
struct MethodStages {
  ManifoldMethod method;
  std::size_t stages;
  flowmatch::Method euclidean;
};
const std::array<MethodStages, 3> method_stages{
    {{ManifoldMethod::euler, 1, flowmatch::Method::euler},
     {ManifoldMethod::midpoint, 2, flowmatch::Method::midpoint},
     {ManifoldMethod::rk4, 4, flowmatch::Method::rk4}}};

// Calls run(options, stages) with the options of every method and stepping at the step size
// @p step.
template <class Run>
void for_each_method_and_stepping(double step, Run&& run) {
  for (const auto& [method, stages, euclidean] : method_stages) {
    for (const auto stepping : {ManifoldStepping::projection, ManifoldStepping::exponential}) {
      INFO("stages " << stages << ", exponential " << (stepping == ManifoldStepping::exponential));
      ManifoldSolverOptions<double> options;
      options.method = method;
      options.stepping = stepping;
      options.step_size = step;
      run(options, stages);
    }
  }
}

// A rotation field on S² that counts its evaluations and its Jacobian-vector product calls.
struct CountingField {
  SpinningField field;
  std::size_t* velocities;
  std::size_t* products;
  void operator()(double t, const flowmatch::ConstMatrixRef<double>& x,
                  flowmatch::MatrixRef<double> out) const {
    ++*velocities;
    field(t, x, out);
  }
  void jvp(double t, const flowmatch::ConstMatrixRef<double>& x,
           const flowmatch::ConstMatrixRef<double>& tangent,
           flowmatch::MatrixRef<double> out) const {
    ++*products;
    field.jvp(t, x, tangent, out);
  }
};

Vector<double> test_axis() {
  Vector<double> omega(3);
  omega << 0.6, -1.2, 2.0;
  return omega;
}

// Thrown by the observers that end a solve.
struct StopSolve {};

}  // namespace

TEST_CASE("manifold solver: the observer sees every step in order, on the manifold",
          "[manifold][solver][observer]") {
  const Sphere<> sphere(3);
  std::mt19937_64 generator(71);
  const Matrix<double> x = flowmatch::sample_base(sphere, 10, generator);
  for_each_method_and_stepping(0.1, [&](ManifoldSolverOptions<double> options, std::size_t stages) {
    for (const auto& grid : {std::vector<double>{0.0, 0.5, 1.0}, std::vector<double>{1.0, 0.0}}) {
      INFO("from " << grid.front());
      std::vector<double> times;
      std::vector<Matrix<double>> states;
      std::vector<flowmatch::SolverStats> seen;
      options.observer = [&](double t, const Matrix<double>& state,
                             const flowmatch::SolverStats& stats) {
        times.push_back(t);
        states.push_back(state);
        seen.push_back(stats);
      };
      const auto result = flowmatch::integrate_on_manifold(sphere, nonlinear_field, x,
                                                           std::span<const double>(grid), options);
      REQUIRE(result.stats.accepted == 10);
      REQUIRE(times.size() == 10);
      const double direction = grid.back() > grid.front() ? 1.0 : -1.0;
      for (std::size_t k = 0; k < times.size(); ++k) {
        // Step k + 1 of 0.1 ends at t_0 ± 0.1·(k + 1), with the statistics of k + 1 steps.
        CHECK_THAT(times[k], Catch::Matchers::WithinAbs(
                                 grid.front() + direction * 0.1 * double(k + 1), 1e-15));
        CHECK(seen[k].accepted == k + 1);
        CHECK(seen[k].nfe == stages * (k + 1));
        CHECK((states[k].colwise().norm().array() - 1).abs().maxCoeff() < rounding<double>());
      }
      // Grid times are reached exactly, and the last observation is the result.
      for (const double t : grid) {
        if (t != grid.front()) CHECK(std::find(times.begin(), times.end(), t) != times.end());
      }
      CHECK(states.back() == result.state);
      // The state observed after three steps is that of a solve stopped there.
      ManifoldSolverOptions<double> unobserved = options;
      unobserved.observer = nullptr;
      const auto stopped = flowmatch::integrate_on_manifold(sphere, nonlinear_field, x,
                                                            {grid.front(), times[2]}, unobserved);
      CHECK(stopped.stats.accepted == 3);
      CHECK(max_column_error<double>(stopped.state, states[2]) < rounding<double>());
    }
  });
}

TEST_CASE("manifold solver: an observer that throws ends the solve as in the Euclidean one",
          "[manifold][solver][observer]") {
  const Sphere<> sphere(3);
  std::mt19937_64 generator(72);
  const Matrix<double> x = flowmatch::sample_base(sphere, 5, generator);
  std::size_t velocities = 0, products = 0;
  const CountingField field{SpinningField{test_axis()}, &velocities, &products};
  const auto stop_after_three = [](double, const Matrix<double>&,
                                   const flowmatch::SolverStats& stats) {
    if (stats.accepted == 3) throw StopSolve{};
  };
  for (const auto& [method, stages, euclidean] : method_stages) {
    INFO("stages " << stages);
    flowmatch::SolverOptions<double> euclidean_options;
    euclidean_options.method = euclidean;
    euclidean_options.step_size = 0.1;
    euclidean_options.observer = stop_after_three;
    velocities = 0;
    CHECK_THROWS_AS(flowmatch::integrate(field, x, {0.0, 1.0}, euclidean_options), StopSolve);
    CHECK(velocities == 3 * stages);
    ManifoldSolverOptions<double> options;
    options.method = method;
    options.step_size = 0.1;
    options.observer = stop_after_three;
    velocities = 0;
    CHECK_THROWS_AS(flowmatch::integrate_on_manifold(sphere, field, x, {0.0, 1.0}, options),
                    StopSolve);
    CHECK(velocities == 3 * stages);
    velocities = products = 0;
    CHECK_THROWS_AS(flowmatch::log_likelihood_on_manifold(sphere, field, x, options), StopSolve);
    CHECK(velocities == 3 * stages);
    CHECK(products == 3 * stages);
  }
}

TEST_CASE("manifold solver: nfe counts every evaluation of the field, likelihoods included",
          "[manifold][solver][stats]") {
  // Each stage evaluates the field once; a likelihood's stage adds one batched Jacobian-vector
  // product for the divergence and reuses the stage's velocity for the projection term.
  const Sphere<> sphere(3);
  std::mt19937_64 generator(73);
  const Matrix<double> x = flowmatch::sample_base(sphere, 6, generator);
  const Matrix<double> probes = flowmatch::draw_probes<double>(
      3, x.cols(), 2, flowmatch::ProbeDistribution::rademacher, generator);
  std::size_t velocities = 0, products = 0;
  const CountingField field{SpinningField{test_axis()}, &velocities, &products};
  for_each_method_and_stepping(1.0 / 8, [&](const ManifoldSolverOptions<double>& options,
                                            std::size_t stages) {
    const std::size_t expected = 8 * stages;
    velocities = products = 0;
    const auto solve = flowmatch::integrate_on_manifold(sphere, field, x, {0.0, 1.0}, options);
    CHECK(solve.stats.nfe == expected);
    CHECK(velocities == expected);
    CHECK(products == 0);
    velocities = products = 0;
    const auto exact = flowmatch::log_likelihood_on_manifold(sphere, field, x, options);
    CHECK(exact.stats.nfe == expected);
    CHECK(exact.stats.accepted == 8);
    CHECK(velocities == expected);
    CHECK(products == expected);
    velocities = products = 0;
    const auto estimated = flowmatch::log_likelihood_on_manifold(sphere, field, x, probes, options);
    CHECK(estimated.stats.nfe == expected);
    CHECK(velocities == expected);
    CHECK(products == expected);
  });
}

TEST_CASE("log-likelihood on a manifold: the observer sees (x_t, ℓ_t) in closed form",
          "[manifold][likelihood][observer]") {
  // Upward on S³ (n = 4): with z₁ the height of the data point and a = atanh z₁ − 1, the height
  // is z_t = tanh(a + t) and the divergence −(n − 1)·z_t, so ℓ_t = ∫₁ᵗ div ds =
  // (n − 1)·(log cosh(a + 1) − log cosh(a + t)).
  const Index n = 4;
  const Sphere<> sphere(n);
  std::mt19937_64 generator(74);
  const Matrix<double> x = flowmatch::sample_base(sphere, 50, generator);
  ManifoldSolverOptions<double> options;
  options.step_size = 0.01;
  std::size_t observed = 0;
  double largest_height_error = 0, largest_change_error = 0, largest_deviation = 0;
  options.observer = [&](double t, const Matrix<double>& state,
                         const flowmatch::SolverStats& stats) {
    ++observed;
    CHECK(stats.accepted == observed);
    CHECK_THAT(t, Catch::Matchers::WithinAbs(1 - 0.01 * double(observed), 1e-14));
    REQUIRE(state.rows() == n + 1);
    for (Index col = 0; col < x.cols(); ++col) {
      const double shift = std::atanh(x(n - 1, col)) - 1;
      largest_height_error =
          std::max(largest_height_error, std::abs(state(n - 1, col) - std::tanh(shift + t)));
      const double change =
          double(n - 1) * (std::log(std::cosh(shift + 1)) - std::log(std::cosh(shift + t)));
      largest_change_error = std::max(largest_change_error, std::abs(state(n, col) - change));
      largest_deviation = std::max(largest_deviation, std::abs(state.col(col).head(n).norm() - 1));
    }
  };
  const auto result = flowmatch::log_likelihood_on_manifold(sphere, Upward<>{}, x, options);
  CHECK(observed == 100);
  CHECK(largest_height_error < 1e-9);
  CHECK(largest_change_error < 1e-8);
  CHECK(largest_deviation < rounding<double>());
}

namespace {

// The pole flow of Upward on S^(n−1) reduced to the angle θ to the pole e (z = cos θ): the
// uniform law has density ∝ sin^(n−2) θ in θ, and the flow moves θ alone, θ̇ = −sin θ (from
// ż = 1 − z² = sin² θ), so tan(θ_t/2) = e^(−t)·tan(θ₀/2). The 1-D flow map has derivative
// dθ₁/dθ₀ = sin θ₁/sin θ₀, and the density on the sphere is the angle's over the area
// |S^(n−2)|·sin^(n−2) θ of its level set, so
//
//     log p₁(x₁) = −log |S^(n−1)| + (n − 1)·log(sin θ₀/sin θ₁).
//
// The exact Riemannian divergence of the flow is −(n − 1)·⟨e, x⟩.
template <class Scalar>
void check_pole_flow(Index n, double divergence_tolerance, double density_tolerance) {
  INFO("n = " << n);
  const Sphere<Scalar> sphere(n);
  std::mt19937_64 generator(75 + static_cast<std::uint64_t>(n));
  const Matrix<Scalar> x = flowmatch::sample_base(sphere, 200, generator);
  const Vector<Scalar> divergence =
      flowmatch::riemannian_divergence(sphere, Upward<Scalar>{}, Scalar(0), x);
  const Vector<Scalar> height = x.row(n - 1).transpose();
  CHECK(static_cast<double>((divergence + Scalar(n - 1) * height).cwiseAbs().maxCoeff()) <
        divergence_tolerance);

  ManifoldSolverOptions<Scalar> options;
  options.step_size = Scalar(0.01);
  const auto result = flowmatch::log_likelihood_on_manifold(sphere, Upward<Scalar>{}, x, options);
  const double half = 0.5 * double(n);
  const double log_area = std::log(2.0) + half * std::log(pi) - std::lgamma(half);
  double largest = 0;
  for (Index col = 0; col < x.cols(); ++col) {
    const double end_angle = std::acos(static_cast<double>(height(col)));
    const double start_angle = 2 * std::atan(std::exp(1.0) * std::tan(end_angle / 2));
    const double expected =
        -log_area + double(n - 1) * std::log(std::sin(start_angle) / std::sin(end_angle));
    largest = std::max(largest, std::abs(static_cast<double>(result.log_prob(col)) - expected));
  }
  CHECK(largest < density_tolerance);
}

}  // namespace

TEST_CASE("log-likelihood on S^(n−1): the flow towards a pole against its angle",
          "[manifold][likelihood]") {
  // Double: RK4 at h = 0.01 leaves ~1e-10 per unit of (n − 1); float: 100 steps of rounding of
  // O(1) quantities, 100·16·ε ≈ 2e-4.
  for (const Index n : {Index(2), Index(3), Index(4), Index(6)}) {
    check_pole_flow<double>(n, rounding<double>() * double(n), 1e-8 * double(n - 1));
  }
  check_pole_flow<float>(3, rounding<float>() * 3, 1600 * std::numeric_limits<float>::epsilon());
}

namespace {

// F(x) = A·x + sin(3t)·b with its Jacobian-vector product A·v.
struct AffineField {
  Matrix<double> matrix;
  Vector<double> offset;
  void operator()(double t, const flowmatch::ConstMatrixRef<double>& x,
                  flowmatch::MatrixRef<double> out) const {
    out.noalias() = matrix * x;
    out.colwise() += std::sin(3 * t) * offset;
  }
  void jvp(double /*t*/, const flowmatch::ConstMatrixRef<double>& /*x*/,
           const flowmatch::ConstMatrixRef<double>& tangent,
           flowmatch::MatrixRef<double> out) const {
    out.noalias() = matrix * tangent;
  }
};

// A field on S² × T² × R² that acts factor by factor: each block of rows sees only its own.
struct FactorwiseField {
  AffineField sphere;
  SineFlow torus;
  AffineField plane;
  void operator()(double t, const flowmatch::ConstMatrixRef<double>& x,
                  flowmatch::MatrixRef<double> out) const {
    sphere(t, x.topRows(3), out.topRows(3));
    torus(t, x.middleRows(3, 2), out.middleRows(3, 2));
    plane(t, x.bottomRows(2), out.bottomRows(2));
  }
  void jvp(double t, const flowmatch::ConstMatrixRef<double>& x,
           const flowmatch::ConstMatrixRef<double>& tangent,
           flowmatch::MatrixRef<double> out) const {
    sphere.jvp(t, x.topRows(3), tangent.topRows(3), out.topRows(3));
    torus.jvp(t, x.middleRows(3, 2), tangent.middleRows(3, 2), out.middleRows(3, 2));
    plane.jvp(t, x.bottomRows(2), tangent.bottomRows(2), out.bottomRows(2));
  }
};

}  // namespace

TEST_CASE("product: a solve equals its factors solved separately", "[manifold][product][solver]") {
  // Sampling and encoding do the same arithmetic on each block as on the factor alone, so the
  // states agree bit for bit; the product's log-density is the sum of its factors', up to the
  // order of a few hundred additions (steps × stages): 1e-12 against |log p| ≈ 10.
  const Sphere<> sphere(3);
  const FlatTorus<> torus(2);
  const Euclidean<> plane(2);
  const Product product(sphere, torus, plane);
  const FactorwiseField field{
      {Matrix<double>{{0.3, -1.0, 0.5}, {0.2, 0.1, -0.7}, {1.1, 0.4, -0.2}},
       Vector<double>::LinSpaced(3, -1.0, 1.0)},
      SineFlow{0.8},
      {Matrix<double>{{-0.5, 1.0}, {-1.0, -0.3}}, Vector<double>::Constant(2, 0.4)}};
  std::mt19937_64 generator(76);
  const Matrix<double> x = flowmatch::sample_base(product, 40, generator);
  const Matrix<double> probes = flowmatch::draw_probes<double>(
      7, x.cols(), 2, flowmatch::ProbeDistribution::gaussian, generator);
  // The K·N probe columns hold every factor's rows, so each factor's probes are its block.
  const auto factors_of = [](const Matrix<double>& whole) {
    return std::array<Matrix<double>, 3>{whole.topRows(3), whole.middleRows(3, 2),
                                         whole.bottomRows(2)};
  };
  const auto parts = factors_of(x);
  const auto part_probes = factors_of(probes);
  for_each_method_and_stepping(
      0.05, [&](const ManifoldSolverOptions<double>& options, std::size_t /*stages*/) {
        for (const auto& grid : {std::vector<double>{0.0, 1.0}, std::vector<double>{1.0, 0.0}}) {
          const std::span<const double> times(grid);
          const auto whole = flowmatch::integrate_on_manifold(product, field, x, times, options);
          const auto on_sphere =
              flowmatch::integrate_on_manifold(sphere, field.sphere, parts[0], times, options);
          const auto on_torus =
              flowmatch::integrate_on_manifold(torus, field.torus, parts[1], times, options);
          const auto on_plane =
              flowmatch::integrate_on_manifold(plane, field.plane, parts[2], times, options);
          const auto blocks = factors_of(whole.state);
          CHECK(blocks[0] == on_sphere.state);
          CHECK(blocks[1] == on_torus.state);
          CHECK(blocks[2] == on_plane.state);
          CHECK(whole.stats.nfe == on_sphere.stats.nfe);
          CHECK(whole.stats.accepted == on_torus.stats.accepted);
        }
        // Log-likelihoods, exact and with Hutchinson's estimate from the same probes.
        const auto check_sum = [&](const auto& whole, const auto& s, const auto& t, const auto& p) {
          const auto blocks = factors_of(whole.noise);
          CHECK(blocks[0] == s.noise);
          CHECK(blocks[1] == t.noise);
          CHECK(blocks[2] == p.noise);
          CHECK((whole.log_prob - (s.log_prob + t.log_prob + p.log_prob)).cwiseAbs().maxCoeff() <
                1e-12);
          CHECK(whole.stats.nfe == s.stats.nfe);
        };
        check_sum(flowmatch::log_likelihood_on_manifold(product, field, x, options),
                  flowmatch::log_likelihood_on_manifold(sphere, field.sphere, parts[0], options),
                  flowmatch::log_likelihood_on_manifold(torus, field.torus, parts[1], options),
                  flowmatch::log_likelihood_on_manifold(plane, field.plane, parts[2], options));
        check_sum(flowmatch::log_likelihood_on_manifold(product, field, x, probes, options),
                  flowmatch::log_likelihood_on_manifold(sphere, field.sphere, parts[0],
                                                        part_probes[0], options),
                  flowmatch::log_likelihood_on_manifold(torus, field.torus, parts[1],
                                                        part_probes[1], options),
                  flowmatch::log_likelihood_on_manifold(plane, field.plane, parts[2],
                                                        part_probes[2], options));
      });
}

}  // namespace test_manifold
