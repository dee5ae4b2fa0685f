/// @file product.hpp
/// @brief The product M₁ × … × M_k of manifolds as a Manifold.
///
/// A column of a product is the concatenation of its factors' coordinates, in the order of
/// the factors: rows [0, D₁) are a point of M₁, the next D₂ rows a point of M₂, and so on.
/// Every operation acts factor by factor on its block of rows, so the product metric gives
/// d(x, y)² = Σᵢ dᵢ(xᵢ, yᵢ)², the base distribution is the product of the factors' bases
/// (log-densities add, the generator serves the factors in order) and a point's deviation is
/// the largest of its factors'. A product may itself be a factor.
#pragma once

#include <algorithm>
#include <cstddef>
#include <tuple>
#include <utility>

#include "flowmatch/core/types.hpp"
#include "flowmatch/manifold/manifold.hpp"

namespace flowmatch {

/// M₁ × … × M_k for factors with one scalar type (see the file comment for the layout).
template <Manifold First, ManifoldOf<typename First::scalar_type>... Rest>
class Product {
 public:
  using scalar_type = typename First::scalar_type;

  /// The product of the given factors, in this order.
  explicit Product(First first, Rest... rest) : factors_(std::move(first), std::move(rest)...) {}

  /// The factors.
  [[nodiscard]] const std::tuple<First, Rest...>& factors() const { return factors_; }

  /// D₁ + … + D_k.
  [[nodiscard]] Index dimension() const {
    return std::apply([](const auto&... factor) { return (factor.dimension() + ...); }, factors_);
  }

  /// Each factor's projection of its rows.
  void project_points(const ConstMatrixRef<scalar_type>& points, MatrixRef<scalar_type> out) const {
    for_each_factor([&](const auto& factor, Index first, Index rows) {
      factor.project_points(points.middleRows(first, rows), out.middleRows(first, rows));
    });
  }
  /// Each factor's tangent projection of its rows.
  void project_tangents(const ConstMatrixRef<scalar_type>& points,
                        const ConstMatrixRef<scalar_type>& vectors,
                        MatrixRef<scalar_type> out) const {
    for_each_factor([&](const auto& factor, Index first, Index rows) {
      factor.project_tangents(points.middleRows(first, rows), vectors.middleRows(first, rows),
                              out.middleRows(first, rows));
    });
  }
  /// Each factor's exponential map.
  void exp(const ConstMatrixRef<scalar_type>& points, const ConstMatrixRef<scalar_type>& tangents,
           MatrixRef<scalar_type> out) const {
    for_each_factor([&](const auto& factor, Index first, Index rows) {
      factor.exp(points.middleRows(first, rows), tangents.middleRows(first, rows),
                 out.middleRows(first, rows));
    });
  }
  /// Each factor's logarithmic map.
  void log(const ConstMatrixRef<scalar_type>& points, const ConstMatrixRef<scalar_type>& targets,
           MatrixRef<scalar_type> out) const {
    for_each_factor([&](const auto& factor, Index first, Index rows) {
      factor.log(points.middleRows(first, rows), targets.middleRows(first, rows),
                 out.middleRows(first, rows));
    });
  }
  /// Each factor's differential of its log.
  void log_differential(const ConstMatrixRef<scalar_type>& points,
                        const ConstMatrixRef<scalar_type>& targets,
                        const ConstMatrixRef<scalar_type>& vectors,
                        MatrixRef<scalar_type> out) const {
    for_each_factor([&](const auto& factor, Index first, Index rows) {
      factor.log_differential(points.middleRows(first, rows), targets.middleRows(first, rows),
                              vectors.middleRows(first, rows), out.middleRows(first, rows));
    });
  }
  /// √(Σᵢ dᵢ²).
  void distance(const ConstMatrixRef<scalar_type>& points,
                const ConstMatrixRef<scalar_type>& targets, VectorRef<scalar_type> out) const {
    Vector<scalar_type> factor_distance(points.cols());
    out.setZero();
    for_each_factor([&](const auto& factor, Index first, Index rows) {
      factor.distance(points.middleRows(first, rows), targets.middleRows(first, rows),
                      factor_distance);
      out += factor_distance.cwiseAbs2();
    });
    out = out.cwiseSqrt();
  }
  /// Each factor's geodesic γᵢ(s) = exp_{xᵢ}(s·vᵢ) and its velocity.
  void geodesic(const ConstMatrixRef<scalar_type>& points,
                const ConstMatrixRef<scalar_type>& tangents,
                const ConstVectorRef<scalar_type>& parameters, MatrixRef<scalar_type> positions,
                MatrixRef<scalar_type> velocities) const {
    for_each_factor([&](const auto& factor, Index first, Index rows) {
      factor.geodesic(points.middleRows(first, rows), tangents.middleRows(first, rows), parameters,
                      positions.middleRows(first, rows), velocities.middleRows(first, rows));
    });
  }
  /// Σᵢ of the factors' terms (the projection acts on each block of rows separately).
  void projection_divergence(const ConstMatrixRef<scalar_type>& points,
                             const ConstMatrixRef<scalar_type>& vectors,
                             VectorRef<scalar_type> out) const {
    Vector<scalar_type> factor_term(points.cols());
    out.setZero();
    for_each_factor([&](const auto& factor, Index first, Index rows) {
      factor.projection_divergence(points.middleRows(first, rows), vectors.middleRows(first, rows),
                                   factor_term);
      out += factor_term;
    });
  }
  /// The largest of the factors' deviations.
  void deviation(const ConstMatrixRef<scalar_type>& points, VectorRef<scalar_type> out) const {
    Vector<scalar_type> factor_deviation(points.cols());
    out.setZero();
    for_each_factor([&](const auto& factor, Index first, Index rows) {
      factor.deviation(points.middleRows(first, rows), factor_deviation);
      out = out.cwiseMax(factor_deviation);
    });
  }
  /// Σᵢ log p_i(xᵢ).
  void base_log_density(const ConstMatrixRef<scalar_type>& points,
                        VectorRef<scalar_type> out) const {
    Vector<scalar_type> factor_density(points.cols());
    out.setZero();
    for_each_factor([&](const auto& factor, Index first, Index rows) {
      factor.base_log_density(points.middleRows(first, rows), factor_density);
      out += factor_density;
    });
  }
  /// Each factor's draws into its rows, the factors in order.
  template <class Generator>
  void sample_base(Generator& generator, MatrixRef<scalar_type> out) const {
    for_each_factor([&](const auto& factor, Index first, Index rows) {
      factor.sample_base(generator, out.middleRows(first, rows));
    });
  }

 private:
  /// Calls visit(factor, first row, rows) for each factor in order.
  template <class Visit>
  void for_each_factor(Visit&& visit) const {
    Index first = 0;
    std::apply(
        [&](const auto&... factor) {
          ((visit(factor, first, factor.dimension()), first += factor.dimension()), ...);
        },
        factors_);
  }

  std::tuple<First, Rest...> factors_;
};

}  // namespace flowmatch
