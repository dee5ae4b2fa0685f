/// @file flat_torus.hpp
/// @brief The flat torus T^n = (R/2πZ)^n as a Manifold: n angles, the uniform base.
///
/// A point is a column of n angles in [0, 2π); a tangent vector is any column of n angular
/// velocities. With wrap(a) = a − 2π·⌊a/2π⌋ in [0, 2π) (a floored modulo: std::fmod keeps the
/// sign of a, so fmod(−0.1, 2π) = −0.1 would leave the range) and
/// shortest(d) = d − 2π·⌊(d + π)/2π⌋ in [−π, π):
///
///     exp_x(v) = wrap(x + v),  log_x(y) = shortest(y − x),  d(x, y) = |shortest(y − x)|
///
/// Each angle is a circle of its own, so geodesics are straight in the angles:
/// γ(s) = wrap(x + s·v), γ'(s) = v. At exactly opposite angles (y − x = π mod 2π) log takes
/// −π, the left end of [−π, π).
#pragma once

#include <algorithm>
#include <cmath>
#include <numbers>
#include <random>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/manifold/manifold.hpp"

namespace flowmatch {

/// The flat torus T^n of n angles in [0, 2π) (see the file comment for the formulas). The
/// base distribution is uniform: log p = −n·log 2π.
template <class Scalar = double>
class FlatTorus {
 public:
  using scalar_type = Scalar;

  /// T^@p angles (>= 1; T¹ is the circle).
  explicit FlatTorus(Index angles) : dimension_(angles) {
    detail::require_count<Index>("FlatTorus: angles", angles, 1);
  }

  /// n, the angles of a point.
  [[nodiscard]] Index dimension() const { return dimension_; }

  /// Every angle wrapped into [0, 2π).
  void project_points(const ConstMatrixRef<Scalar>& points, MatrixRef<Scalar> out) const {
    out = points.unaryExpr([](Scalar angle) { return wrap(angle); });
  }
  /// Every vector is tangent: a copy.
  void project_tangents(const ConstMatrixRef<Scalar>& /*points*/,
                        const ConstMatrixRef<Scalar>& vectors, MatrixRef<Scalar> out) const {
    out = vectors;
  }
  /// wrap(x + v).
  void exp(const ConstMatrixRef<Scalar>& points, const ConstMatrixRef<Scalar>& tangents,
           MatrixRef<Scalar> out) const {
    out = points.binaryExpr(tangents, [](Scalar angle, Scalar step) { return wrap(angle + step); });
  }
  /// shortest(y − x), each angle in [−π, π).
  void log(const ConstMatrixRef<Scalar>& points, const ConstMatrixRef<Scalar>& targets,
           MatrixRef<Scalar> out) const {
    out = targets.binaryExpr(points, [](Scalar to, Scalar from) { return shortest(to - from); });
  }
  /// |shortest(y − x)|.
  void distance(const ConstMatrixRef<Scalar>& points, const ConstMatrixRef<Scalar>& targets,
                VectorRef<Scalar> out) const {
    out = targets.binaryExpr(points, [](Scalar to, Scalar from) { return shortest(to - from); })
              .colwise()
              .norm()
              .transpose();
  }
  /// wrap(x + s·v) and its constant velocity v.
  void geodesic(const ConstMatrixRef<Scalar>& points, const ConstMatrixRef<Scalar>& tangents,
                const ConstVectorRef<Scalar>& parameters, MatrixRef<Scalar> positions,
                MatrixRef<Scalar> velocities) const {
    positions = (points + tangents * parameters.asDiagonal()).unaryExpr([](Scalar angle) {
      return wrap(angle);
    });
    velocities = tangents;
  }
  /// k: log_x(y) is y − x (modulo whole turns on the torus) and its derivative the identity.
  void log_differential(const ConstMatrixRef<Scalar>& /*points*/,
                        const ConstMatrixRef<Scalar>& /*targets*/,
                        const ConstMatrixRef<Scalar>& vectors, MatrixRef<Scalar> out) const {
    out = vectors;
  }
  /// Zero: the tangent projection is the identity.
  void projection_divergence(const ConstMatrixRef<Scalar>& /*points*/,
                             const ConstMatrixRef<Scalar>& /*vectors*/,
                             VectorRef<Scalar> out) const {
    out.setZero();
  }
  /// How far the angles of each column reach outside [0, 2π] (2π is 0 on the circle).
  void deviation(const ConstMatrixRef<Scalar>& points, VectorRef<Scalar> out) const {
    const Scalar full_turn = Scalar(2) * std::numbers::pi_v<Scalar>;
    out = points
              .unaryExpr([full_turn](Scalar angle) {
                return std::max({Scalar(0), -angle, angle - full_turn});
              })
              .colwise()
              .maxCoeff()
              .transpose();
  }
  /// −n·log 2π at every point.
  void base_log_density(const ConstMatrixRef<Scalar>& /*points*/, VectorRef<Scalar> out) const {
    out.setConstant(-Scalar(dimension_) * std::log(Scalar(2) * std::numbers::pi_v<Scalar>));
  }
  /// Independent uniform angles in [0, 2π) from @p generator.
  template <class Generator>
  void sample_base(Generator& generator, MatrixRef<Scalar> out) const {
    std::uniform_real_distribution<Scalar> uniform(Scalar(0),
                                                   Scalar(2) * std::numbers::pi_v<Scalar>);
    for (Index col = 0; col < out.cols(); ++col) {
      // uniform_real_distribution may return its upper bound after rounding: wrap it to 0.
      for (Index row = 0; row < out.rows(); ++row) out(row, col) = wrap(uniform(generator));
    }
  }

  /// a − 2π·⌊a/2π⌋, in [0, 2π). Near a multiple of 2π rounding can give 2π or a tiny negative
  /// value; both become 0.
  static Scalar wrap(Scalar angle) {
    const Scalar full_turn = Scalar(2) * std::numbers::pi_v<Scalar>;
    const Scalar wrapped = angle - full_turn * std::floor(angle / full_turn);
    return wrapped >= full_turn || wrapped < Scalar(0) ? Scalar(0) : wrapped;
  }

  /// d − 2π·⌊(d + π)/2π⌋, the signed angle in [−π, π) congruent to d.
  static Scalar shortest(Scalar difference) {
    const Scalar half_turn = std::numbers::pi_v<Scalar>;
    const Scalar signed_angle =
        difference - Scalar(2) * half_turn * std::floor((difference + half_turn) / (2 * half_turn));
    return signed_angle >= half_turn   ? signed_angle - Scalar(2) * half_turn
           : signed_angle < -half_turn ? signed_angle + Scalar(2) * half_turn
                                       : signed_angle;
  }

 private:
  Index dimension_;
};

}  // namespace flowmatch
