/// @file sphere.hpp
/// @brief The unit sphere S^(n−1) embedded in R^n as a Manifold, with the uniform base.
///
/// A point is a unit column x of n coordinates; a tangent vector at x is a column v with
/// ⟨x, v⟩ = 0. With θ = |v| and sinc θ = sin θ/θ:
///
///     exp_x(v)   = cos θ·x + sinc θ·v
///     log_x(y)   = θ·w/|w|,  w = y − ⟨x, y⟩·x,  θ = atan2(|w|, ⟨x, y⟩)
///     d(x, y)    = atan2(|w|, ⟨x, y⟩)
///     γ(s)       = exp_x(s·v),  γ'(s) = −θ·sin(sθ)·x + cos(sθ)·v
///
/// The angle comes from atan2 rather than acos⟨x, y⟩: acos loses half the digits where
/// ⟨x, y⟩ is near ±1 (acos(1 − δ) ≈ √(2δ)), atan2 keeps full relative accuracy at every angle
/// and needs no clamping of ⟨x, y⟩ into [−1, 1] (its two arguments are the sine and cosine of
/// the angle scaled by |y|). Since θ is accurate to rounding even when |w| is tiny, θ/|w| is
/// too; only |w| = 0 needs a separate branch. exp uses the series
/// sinc θ = 1 − θ²/6 + θ⁴/120 for θ < ε^(1/4), where its truncation is below ε^(3/2).
///
/// Antipodal points (y = −x, |w| = 0 with ⟨x, y⟩ < 0) have a whole sphere of shortest
/// geodesics. Where ⟨x, y⟩ < 0 and |w| <= ε (y is −x to rounding, and the direction of w is
/// rounding noise) log_x(y) returns the one of length π towards the coordinate axis e_k with
/// the smallest |x_k| (first such k), projected onto T_x: a deterministic choice that depends
/// only on x and is never NaN.
#pragma once

#include <cmath>
#include <limits>
#include <numbers>
#include <random>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/manifold/manifold.hpp"

namespace flowmatch {

/// The unit sphere S^(n−1) = {x ∈ R^n : |x| = 1} with the metric of R^n (see the file comment
/// for the formulas and the choice at antipodal points). The base distribution is uniform:
/// log p = −log |S^(n−1)| = −log(2π^(n/2)/Γ(n/2)).
template <class Scalar = double>
class Sphere {
 public:
  using scalar_type = Scalar;

  /// S^(n−1) in R^@p ambient_dimension (n >= 2: S¹ is the circle, S² the usual sphere).
  explicit Sphere(Index ambient_dimension) : dimension_(ambient_dimension) {
    detail::require_count<Index>("Sphere: ambient_dimension", ambient_dimension, 2);
  }

  /// n, the coordinates of a point.
  [[nodiscard]] Index dimension() const { return dimension_; }

  /// x/|x|; a zero column, which has no nearest point, maps to e₁.
  void project_points(const ConstMatrixRef<Scalar>& points, MatrixRef<Scalar> out) const {
    for (Index col = 0; col < points.cols(); ++col) {
      const Scalar norm = points.col(col).norm();
      if (norm > Scalar(0)) {
        out.col(col) = points.col(col) / norm;
      } else {
        out.col(col).setZero();
        out(0, col) = Scalar(1);
      }
    }
  }

  /// v − ⟨x, v⟩·x.
  void project_tangents(const ConstMatrixRef<Scalar>& points, const ConstMatrixRef<Scalar>& vectors,
                        MatrixRef<Scalar> out) const {
    for (Index col = 0; col < points.cols(); ++col) {
      const Scalar radial = points.col(col).dot(vectors.col(col));
      out.col(col) = vectors.col(col) - radial * points.col(col);
    }
  }

  /// cos θ·x + sinc θ·v (θ = |v|), renormalised against rounding; x itself for v = 0.
  void exp(const ConstMatrixRef<Scalar>& points, const ConstMatrixRef<Scalar>& tangents,
           MatrixRef<Scalar> out) const {
    for (Index col = 0; col < points.cols(); ++col) {
      const Scalar angle = tangents.col(col).norm();
      if (angle == Scalar(0)) {
        out.col(col) = points.col(col);
        continue;
      }
      out.col(col) = std::cos(angle) * points.col(col) + sinc(angle) * tangents.col(col);
      out.col(col) /= out.col(col).norm();
    }
  }

  /// θ·w/|w| with w = y − ⟨x, y⟩·x and θ = atan2(|w|, ⟨x, y⟩); exactly 0 for y = x (w would
  /// be a rounding error of x wherever |x| is not exactly 1), the documented choice of length
  /// π where y = −x to rounding. @p out may alias @p targets, not @p points.
  void log(const ConstMatrixRef<Scalar>& points, const ConstMatrixRef<Scalar>& targets,
           MatrixRef<Scalar> out) const {
    for (Index col = 0; col < points.cols(); ++col) {
      if (targets.col(col) == points.col(col)) {
        out.col(col).setZero();
        continue;
      }
      const Scalar cosine = points.col(col).dot(targets.col(col));
      const Scalar sine = tangent_part(points.col(col), targets.col(col), cosine, out.col(col));
      if (cosine < Scalar(0) && sine <= std::numeric_limits<Scalar>::epsilon()) {
        antipodal_log(points.col(col), out.col(col));
      } else if (sine > Scalar(0)) {
        out.col(col) *= std::atan2(sine, cosine) / sine;
      }
    }
  }

  /// D(log_x)(y)[k], the derivative of log_x(y) = (θ/s)·w along k (c = ⟨x, y⟩, s = |w|):
  /// with dc = ⟨x, k⟩, ds = ⟨w, k⟩/s and dθ = (c·ds − s·dc)/(s² + c²),
  ///     D log = d(θ/s)·w + (θ/s)·(k − dc·x),   d(θ/s) = (dθ − (θ/s)·ds)/s;
  /// at y = x (s = 0) the tangent projection k − ⟨x, k⟩·x. Defined where log is smooth, away
  /// from y = −x. @p out may alias @p vectors.
  void log_differential(const ConstMatrixRef<Scalar>& points, const ConstMatrixRef<Scalar>& targets,
                        const ConstMatrixRef<Scalar>& vectors, MatrixRef<Scalar> out) const {
    Vector<Scalar> tangent(points.rows());
    for (Index col = 0; col < points.cols(); ++col) {
      const Scalar cosine = points.col(col).dot(targets.col(col));
      const Scalar sine = tangent_part(points.col(col), targets.col(col), cosine, tangent);
      const Scalar radial = points.col(col).dot(vectors.col(col));
      if (!(sine > Scalar(0))) {
        out.col(col) = vectors.col(col) - radial * points.col(col);
        continue;
      }
      const Scalar d_sine = tangent.dot(vectors.col(col)) / sine;
      const Scalar ratio = std::atan2(sine, cosine) / sine;
      const Scalar d_angle = (cosine * d_sine - sine * radial) / (sine * sine + cosine * cosine);
      const Scalar d_ratio = (d_angle - ratio * d_sine) / sine;
      out.col(col) = d_ratio * tangent + ratio * (vectors.col(col) - radial * points.col(col));
    }
  }

  /// atan2(|w|, ⟨x, y⟩) with w = y − ⟨x, y⟩·x: the angle between x and y, |log_x(y)|.
  void distance(const ConstMatrixRef<Scalar>& points, const ConstMatrixRef<Scalar>& targets,
                VectorRef<Scalar> out) const {
    Vector<Scalar> tangent(points.rows());
    for (Index col = 0; col < points.cols(); ++col) {
      const Scalar cosine = points.col(col).dot(targets.col(col));
      const Scalar sine = tangent_part(points.col(col), targets.col(col), cosine, tangent);
      out(col) = cosine < Scalar(0) && sine <= std::numeric_limits<Scalar>::epsilon()
                     ? std::numbers::pi_v<Scalar>
                     : std::atan2(sine, cosine);
    }
  }

  /// γ(s) = cos(sθ)·x + s·sinc(sθ)·v and γ'(s) = −θ·sin(sθ)·x + cos(sθ)·v, θ = |v|.
  void geodesic(const ConstMatrixRef<Scalar>& points, const ConstMatrixRef<Scalar>& tangents,
                const ConstVectorRef<Scalar>& parameters, MatrixRef<Scalar> positions,
                MatrixRef<Scalar> velocities) const {
    for (Index col = 0; col < points.cols(); ++col) {
      const Scalar speed = tangents.col(col).norm();
      const Scalar parameter = parameters(col);
      const Scalar angle = parameter * speed;
      positions.col(col) =
          std::cos(angle) * points.col(col) + parameter * sinc(angle) * tangents.col(col);
      positions.col(col) /= positions.col(col).norm();
      velocities.col(col) =
          -speed * std::sin(angle) * points.col(col) + std::cos(angle) * tangents.col(col);
    }
  }

  /// −(n − 1)·⟨x, F⟩: for u = F − ⟨x, F⟩·x and an orthonormal basis e_i of T_x,
  /// Σᵢ ⟨e_i, D_{e_i}u⟩ = tr(P·DF) − ⟨x, F⟩·Σᵢ |e_i|², the derivative of the projection.
  void projection_divergence(const ConstMatrixRef<Scalar>& points,
                             const ConstMatrixRef<Scalar>& vectors, VectorRef<Scalar> out) const {
    out = -Scalar(dimension_ - 1) * points.cwiseProduct(vectors).colwise().sum().transpose();
  }
  /// ||x| − 1|.
  void deviation(const ConstMatrixRef<Scalar>& points, VectorRef<Scalar> out) const {
    out = (points.colwise().norm().array() - Scalar(1)).abs().transpose();
  }

  /// −log |S^(n−1)| = −(log 2 + (n/2)·log π − log Γ(n/2)) at every point.
  void base_log_density(const ConstMatrixRef<Scalar>& /*points*/, VectorRef<Scalar> out) const {
    const double half = 0.5 * static_cast<double>(dimension_);
    const double log_area = std::log(2.0) + half * std::log(std::numbers::pi) - std::lgamma(half);
    out.setConstant(static_cast<Scalar>(-log_area));
  }

  /// Uniform points: standard normal columns divided by their norms (a zero draw is redrawn).
  template <class Generator>
  void sample_base(Generator& generator, MatrixRef<Scalar> out) const {
    std::normal_distribution<Scalar> normal;
    for (Index col = 0; col < out.cols(); ++col) {
      Scalar norm = 0;
      while (!(norm > Scalar(0))) {
        for (Index row = 0; row < out.rows(); ++row) out(row, col) = normal(generator);
        norm = out.col(col).norm();
      }
      out.col(col) /= norm;
    }
  }

 private:
  /// sin θ/θ, by its series 1 − θ²/6 + θ⁴/120 below ε^(1/4).
  static Scalar sinc(Scalar angle) {
    static const Scalar series_bound = std::sqrt(std::sqrt(std::numeric_limits<Scalar>::epsilon()));
    if (std::abs(angle) < series_bound) {
      const Scalar square = angle * angle;
      return Scalar(1) - square / Scalar(6) + square * square / Scalar(120);
    }
    return std::sin(angle) / angle;
  }

  /// w = y − ⟨x, y⟩·x into @p tangent, returning |w|. A second pass w ← w − ⟨x, w⟩·x removes
  /// the radial part that rounding leaves in the first (of order ε, which would otherwise
  /// dominate w near y = ±x and point log along x).
  template <class Point, class Target, class Tangent>
  static Scalar tangent_part(const Point& point, const Target& target, Scalar cosine,
                             Tangent&& tangent) {
    tangent = target - cosine * point;
    tangent -= point.dot(tangent) * point;
    return tangent.norm();
  }

  /// log_x(−x): π times the unit tangent towards e_k, k the first index of the smallest |x_k|.
  template <class Point, class Out>
  static void antipodal_log(const Point& point, Out&& out) {
    Index axis = 0;
    point.cwiseAbs().minCoeff(&axis);
    const Scalar along_axis = point(axis);
    // e_k − x_k·x, of norm √(1 − x_k²) > 0 since |x_k| <= 1/√n < 1.
    out = -along_axis * point;
    out(axis) += Scalar(1);
    out *= std::numbers::pi_v<Scalar> / out.norm();
  }

  Index dimension_;
};

}  // namespace flowmatch
