/// @file manifold.hpp
/// @brief The Manifold concept (Riemannian flow matching) and its checked batch operations.
///
/// A manifold M is represented by coordinates in R^D (D = `dimension()`): a point is a column
/// of D entries, a batch of N points is a D×N matrix, and a tangent vector at a point is a
/// column of D entries in the same coordinates (for an embedded manifold such as the sphere,
/// an ambient vector orthogonal to the normal space). To write a manifold, give a type a member
/// `scalar_type` and the const members
///
///     Index dimension();                                      // D, rows of a point
///     void project_points(points, out);                       // nearest point of M
///     void project_tangents(points, vectors, out);            // onto T_x M
///     void exp(points, tangents, out);                        // exp_x(v)
///     void log(points, targets, out);                         // log_x(y), |log_x(y)| = d(x, y)
///     void distance(points, targets, VectorRef out);          // geodesic distance d(x, y)
///     void log_differential(points, targets, vectors, out);   // D(log_x)(y)[k], d/dε log_x(y +
///     εk) void geodesic(points, tangents, ConstVectorRef s, positions, velocities);
///                                                             // exp_x(s·v) and d/ds of it
///     void deviation(points, VectorRef out);                  // how far each column is off M
///     void projection_divergence(points, vectors, VectorRef out);
///                                                             // div_M(P F) − tr(P·DF) at F = v
///     void base_log_density(points, VectorRef out);           // log p_base(x) (Riemannian volume)
///     template <class G> void sample_base(G& generator, out); // draws from p_base
///
/// with D×N inputs `ConstMatrixRef<scalar_type>` and outputs `MatrixRef<scalar_type>` (D×N)
/// or `VectorRef<scalar_type>` (length N), sized by the caller. The members work column by
/// column, check nothing (the integrators call them at every stage) and assume their points
/// on M; the free functions below are the checked entry points. An output may alias the
/// last input of project_tangents, exp, log and log_differential (vectors, tangents, targets),
/// never the points, and the two outputs of `geodesic` alias no input.
#pragma once

#include <cmath>
#include <concepts>
#include <limits>
#include <random>
#include <string>
#include <string_view>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"

namespace flowmatch {

/// A manifold whose points and tangent vectors are columns of `dimension()` coordinates (see
/// the file comment for what each member computes).
template <class M>
concept Manifold = std::floating_point<typename M::scalar_type> &&
    requires(const M& manifold, const ConstMatrixRef<typename M::scalar_type>& points,
             MatrixRef<typename M::scalar_type> out, VectorRef<typename M::scalar_type> values,
             const ConstVectorRef<typename M::scalar_type>& parameters,
             std::mt19937_64& generator) {
  { manifold.dimension() } -> std::convertible_to<Index>;
  manifold.project_points(points, out);
  manifold.project_tangents(points, points, out);
  manifold.exp(points, points, out);
  manifold.log(points, points, out);
  manifold.distance(points, points, values);
  manifold.log_differential(points, points, points, out);
  manifold.geodesic(points, points, parameters, out, out);
  manifold.deviation(points, values);
  manifold.projection_divergence(points, points, values);
  manifold.base_log_density(points, values);
  manifold.sample_base(generator, out);
};

/// A Manifold whose scalar type is @p Scalar.
template <class M, class Scalar>
concept ManifoldOf = Manifold<M> && std::same_as<typename M::scalar_type, Scalar>;

namespace detail {

/// The largest deviation from the manifold (`deviation()`) a checked function accepts:
/// √ε (1.5e-8 in double, 3.5e-4 in float), loose enough for data rounded to float and
/// normalised in another precision.
template <class Scalar>
Scalar manifold_tolerance() {
  return std::sqrt(std::numeric_limits<Scalar>::epsilon());
}

/// Throws std::invalid_argument unless @p points is a finite dimension()×N batch (@p name is
/// "<function>: <argument>").
template <Manifold M>
void require_manifold_batch(std::string_view name, const M& manifold,
                            const ConstMatrixRef<typename M::scalar_type>& points) {
  require_shape(name, points, manifold.dimension(), -1);
  require_finite(name, points);
}

/// Throws std::invalid_argument unless @p points is a finite dimension()×N batch whose
/// columns lie on the manifold within manifold_tolerance().
template <Manifold M>
void require_on_manifold(std::string_view name, const M& manifold,
                         const ConstMatrixRef<typename M::scalar_type>& points) {
  using Scalar = typename M::scalar_type;
  require_manifold_batch(name, manifold, points);
  Vector<Scalar> deviation(points.cols());
  manifold.deviation(points, deviation);
  const Scalar tolerance = manifold_tolerance<Scalar>();
  for (Index col = 0; col < points.cols(); ++col) {
    if (!(deviation(col) <= tolerance)) {
      reject_argument(name,
                      "has column " + to_text(col) + " at distance " + to_text(deviation(col)) +
                          " from the manifold",
                      "points on the manifold within " + to_text(tolerance) +
                          " (project_point maps a batch onto it)");
    }
  }
}

}  // namespace detail

/// The nearest point of the manifold to each column of @p points (finite, dimension()×N).
template <Manifold M>
Matrix<typename M::scalar_type> project_point(
    const M& manifold, const ConstMatrixRef<typename M::scalar_type>& points) {
  detail::require_manifold_batch("project_point: points", manifold, points);
  Matrix<typename M::scalar_type> out(points.rows(), points.cols());
  manifold.project_points(points, out);
  return out;
}

/// The projection of each column of the ambient @p vectors onto the tangent space at the
/// matching column of @p points (on the manifold).
template <Manifold M>
Matrix<typename M::scalar_type> project_tangent(
    const M& manifold, const ConstMatrixRef<typename M::scalar_type>& points,
    const ConstMatrixRef<typename M::scalar_type>& vectors) {
  detail::require_on_manifold("project_tangent: points", manifold, points);
  detail::require_shape("project_tangent: vectors", vectors, points.rows(), points.cols());
  detail::require_finite("project_tangent: vectors", vectors);
  Matrix<typename M::scalar_type> out(points.rows(), points.cols());
  manifold.project_tangents(points, vectors, out);
  return out;
}

/// The exponential map exp_x(v), column by column: the end of the geodesic that leaves x with
/// velocity v (tangent at x: an ambient v is first projected onto T_x M).
template <Manifold M>
Matrix<typename M::scalar_type> exp_map(const M& manifold,
                                        const ConstMatrixRef<typename M::scalar_type>& points,
                                        const ConstMatrixRef<typename M::scalar_type>& tangents) {
  detail::require_on_manifold("exp_map: points", manifold, points);
  detail::require_shape("exp_map: tangents", tangents, points.rows(), points.cols());
  detail::require_finite("exp_map: tangents", tangents);
  Matrix<typename M::scalar_type> out(points.rows(), points.cols());
  manifold.project_tangents(points, tangents, out);
  manifold.exp(points, out, out);
  return out;
}

/// The logarithmic map log_x(y), column by column: the tangent vector at x of the shortest
/// geodesic to y, whose length is the geodesic distance (where it is not unique, each
/// manifold documents its choice).
template <Manifold M>
Matrix<typename M::scalar_type> log_map(const M& manifold,
                                        const ConstMatrixRef<typename M::scalar_type>& points,
                                        const ConstMatrixRef<typename M::scalar_type>& targets) {
  detail::require_on_manifold("log_map: points", manifold, points);
  detail::require_shape("log_map: targets", targets, points.rows(), points.cols());
  detail::require_on_manifold("log_map: targets", manifold, targets);
  Matrix<typename M::scalar_type> out(points.rows(), points.cols());
  manifold.log(points, targets, out);
  return out;
}

/// The geodesic distance d(x, y) of each column pair (length N).
template <Manifold M>
Vector<typename M::scalar_type> geodesic_distance(
    const M& manifold, const ConstMatrixRef<typename M::scalar_type>& points,
    const ConstMatrixRef<typename M::scalar_type>& targets) {
  detail::require_on_manifold("geodesic_distance: points", manifold, points);
  detail::require_shape("geodesic_distance: targets", targets, points.rows(), points.cols());
  detail::require_on_manifold("geodesic_distance: targets", manifold, targets);
  Vector<typename M::scalar_type> out(points.cols());
  manifold.distance(points, targets, out);
  return out;
}

/// @p count independent draws from the manifold's base distribution (dimension()×count), from
/// the caller's @p generator.
template <Manifold M, class Generator>
Matrix<typename M::scalar_type> sample_base(const M& manifold, Index count, Generator& generator) {
  detail::require_count<Index>("sample_base: count", count, 0);
  Matrix<typename M::scalar_type> out(manifold.dimension(), count);
  manifold.sample_base(generator, out);
  return out;
}

/// The log-density of the base distribution at each column of @p points, with respect to the
/// manifold's Riemannian volume (length N).
template <Manifold M>
Vector<typename M::scalar_type> base_log_density(
    const M& manifold, const ConstMatrixRef<typename M::scalar_type>& points) {
  detail::require_on_manifold("base_log_density: points", manifold, points);
  Vector<typename M::scalar_type> out(points.cols());
  manifold.base_log_density(points, out);
  return out;
}

}  // namespace flowmatch
