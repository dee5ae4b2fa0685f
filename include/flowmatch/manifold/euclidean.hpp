/// @file euclidean.hpp
/// @brief Euclidean space R^d as a Manifold: straight lines, the standard normal base.
#pragma once

#include <cmath>
#include <numbers>
#include <random>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/manifold/manifold.hpp"

namespace flowmatch {

/// R^d with the flat metric: exp_x(v) = x + v, log_x(y) = y − x, d(x, y) = |y − x|. The base
/// distribution is the standard normal N(0, I), so a Euclidean factor of a Product behaves as
/// ordinary flow matching with a Gaussian source.
template <class Scalar = double>
class Euclidean {
 public:
  using scalar_type = Scalar;

  /// R^@p dimension (>= 1).
  explicit Euclidean(Index dimension) : dimension_(dimension) {
    detail::require_count<Index>("Euclidean: dimension", dimension, 1);
  }

  /// d, the coordinates of a point.
  [[nodiscard]] Index dimension() const { return dimension_; }

  /// Every point is on R^d: a copy.
  void project_points(const ConstMatrixRef<Scalar>& points, MatrixRef<Scalar> out) const {
    out = points;
  }
  /// Every vector is tangent: a copy.
  void project_tangents(const ConstMatrixRef<Scalar>& /*points*/,
                        const ConstMatrixRef<Scalar>& vectors, MatrixRef<Scalar> out) const {
    out = vectors;
  }
  /// x + v.
  void exp(const ConstMatrixRef<Scalar>& points, const ConstMatrixRef<Scalar>& tangents,
           MatrixRef<Scalar> out) const {
    out = points + tangents;
  }
  /// y − x.
  void log(const ConstMatrixRef<Scalar>& points, const ConstMatrixRef<Scalar>& targets,
           MatrixRef<Scalar> out) const {
    out = targets - points;
  }
  /// |y − x|.
  void distance(const ConstMatrixRef<Scalar>& points, const ConstMatrixRef<Scalar>& targets,
                VectorRef<Scalar> out) const {
    out = (targets - points).colwise().norm().transpose();
  }
  /// x + s·v and its constant velocity v.
  void geodesic(const ConstMatrixRef<Scalar>& points, const ConstMatrixRef<Scalar>& tangents,
                const ConstVectorRef<Scalar>& parameters, MatrixRef<Scalar> positions,
                MatrixRef<Scalar> velocities) const {
    positions = points + tangents * parameters.asDiagonal();
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
  /// Zero: every finite point is on R^d.
  void deviation(const ConstMatrixRef<Scalar>& /*points*/, VectorRef<Scalar> out) const {
    out.setZero();
  }
  /// log N(x; 0, I) = −(d/2)·log 2π − |x|²/2.
  void base_log_density(const ConstMatrixRef<Scalar>& points, VectorRef<Scalar> out) const {
    const Scalar normaliser =
        Scalar(0.5) * Scalar(dimension_) * std::log(Scalar(2) * std::numbers::pi_v<Scalar>);
    out = (Scalar(-0.5) * points.colwise().squaredNorm().array() - normaliser).transpose();
  }
  /// Independent standard normal coordinates from @p generator.
  template <class Generator>
  void sample_base(Generator& generator, MatrixRef<Scalar> out) const {
    std::normal_distribution<Scalar> normal;
    for (Index col = 0; col < out.cols(); ++col) {
      for (Index row = 0; row < out.rows(); ++row) out(row, col) = normal(generator);
    }
  }

 private:
  Index dimension_;
};

}  // namespace flowmatch
