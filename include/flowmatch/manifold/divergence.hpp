/// @file divergence.hpp
/// @brief The Riemannian divergence of an ambient field projected onto a manifold: exact, or
/// Hutchinson's estimate.
///
/// A field on M ⊂ R^D is given as an ambient field F (a lambda, an Mlp) and acts through its
/// tangent projection u = P_x F(x), as in integrate_on_manifold. With an orthonormal basis e_i
/// of T_x M, the divergence of u for the metric of R^D is
///
///     div_M u = Σᵢ ⟨e_i, D_{e_i}(P F)⟩ = tr(P_x·DF(x)) + c(x, F(x)),
///
/// where tr(P·DF) = Σᵢ ⟨e_i, DF e_i⟩ is the tangential trace of the ambient Jacobian and
/// c = Manifold::projection_divergence the part that comes from differentiating P along M
/// (−(n − 1)·⟨x, F⟩ on the unit sphere S^(n−1), zero on flat manifolds, the sum of the
/// factors' on a product). The tangential trace is taken
///
///   - exactly as Σ_k (P DF e_k)_k over the D coordinate axes e_k: D Jacobian-vector products,
///     one evaluation of the field's jvp on D·N columns;
///   - by Hutchinson's estimator as (1/K) Σ_k z_kᵀ DF z_k with tangent probes z = P ε
///     (E[ε εᵀ] = I, so E[z zᵀ] = P and E[zᵀ DF z] = tr(P DF P) = tr(P DF)): unbiased.
///
/// The Jacobian-vector products come from the field's jvp member, else forward mode on a field
/// generic over its scalar type (autodiff/field_derivatives.hpp). Pass the ambient field, not
/// a TangentField: the projection is part of the formula.
#pragma once

#include <string_view>

#include "flowmatch/autodiff/field_derivatives.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/field/capabilities.hpp"
#include "flowmatch/likelihood/divergence.hpp"
#include "flowmatch/manifold/manifold.hpp"

namespace flowmatch {

namespace detail {

/// The exact divergence into @p out, without the argument checks (riemannian_divergence),
/// from the field's ambient @p velocity F(x) at @p points (for the projection term).
template <Manifold M, class Field>
void exact_riemannian_divergence(const M& manifold, const Field& field, typename M::scalar_type t,
                                 const ConstMatrixRef<typename M::scalar_type>& points,
                                 const ConstMatrixRef<typename M::scalar_type>& velocity,
                                 VectorRef<typename M::scalar_type> out) {
  using Scalar = typename M::scalar_type;
  const Index dim = points.rows(), samples = points.cols();
  // Block k (columns k·N … k·N + N − 1): the points, and the axis e_k as the tangent.
  Matrix<Scalar> repeated(dim, dim * samples), axes = Matrix<Scalar>::Zero(dim, dim * samples);
  for (Index axis = 0; axis < dim; ++axis) {
    repeated.middleCols(axis * samples, samples) = points;
    axes.row(axis).segment(axis * samples, samples).setOnes();
  }
  Matrix<Scalar> products(dim, dim * samples);
  derive(capability::Jvp{}, field, t, ConstMatrixRef<Scalar>(repeated), axes, products);
  manifold.projection_divergence(points, velocity, out);
  Matrix<Scalar> projected(dim, samples);
  for (Index axis = 0; axis < dim; ++axis) {
    manifold.project_tangents(points, products.middleCols(axis * samples, samples), projected);
    out += projected.row(axis).transpose();
  }
}

/// Throws std::invalid_argument unless @p probes is a finite D×(K·N) matrix for the N columns
/// of @p points, K >= 1 (@p name is "<function>: probes").
template <class Scalar>
void require_probes(std::string_view name, const ConstMatrixRef<Scalar>& points,
                    const ConstMatrixRef<Scalar>& probes) {
  const Index samples = points.cols();
  if (samples == 0 || probes.rows() != points.rows() || probes.cols() % samples != 0 ||
      probes.cols() == 0) {
    reject_argument(name, "has shape " + to_text(probes.rows()) + "x" + to_text(probes.cols()),
                    to_text(points.rows()) + "x(K·" + to_text(samples) + ") with K >= 1");
  }
  require_finite(name, probes);
}

/// Hutchinson's estimate into @p out, without the argument checks
/// (riemannian_hutchinson_divergence), from the field's ambient @p velocity F(x) at
/// @p points: the ambient probes are projected onto the tangent spaces at @p points.
template <Manifold M, class Field>
void hutchinson_riemannian_divergence(const M& manifold, const Field& field,
                                      typename M::scalar_type t,
                                      const ConstMatrixRef<typename M::scalar_type>& points,
                                      const ConstMatrixRef<typename M::scalar_type>& velocity,
                                      const ConstMatrixRef<typename M::scalar_type>& probes,
                                      VectorRef<typename M::scalar_type> out) {
  using Scalar = typename M::scalar_type;
  const Index samples = points.cols();
  Matrix<Scalar> tangent_probes(probes.rows(), probes.cols());
  for (Index first = 0; first < probes.cols(); first += samples) {
    manifold.project_tangents(points, probes.middleCols(first, samples),
                              tangent_probes.middleCols(first, samples));
  }
  Vector<Scalar> trace(samples);
  HutchinsonBuffers<Scalar> buffers;
  hutchinson_divergence<Scalar>(field, t, points, tangent_probes, trace, buffers);
  manifold.projection_divergence(points, velocity, out);
  out += trace;
}

}  // namespace detail

/// The exact Riemannian divergence div_M(P F) of the ambient field @p field at time @p t, for
/// each column of @p points (on the manifold): D Jacobian-vector products and the manifold's
/// projection term (see the file comment). Returns a length-N vector.
/// Throws std::invalid_argument for bad shapes, non-finite or off-manifold points.
template <Manifold M, class Field>
Vector<typename M::scalar_type> riemannian_divergence(
    const M& manifold, const Field& field, typename M::scalar_type t,
    const ConstMatrixRef<typename M::scalar_type>& points) {
  using Scalar = typename M::scalar_type;
  detail::require_on_manifold("riemannian_divergence: points", manifold, points);
  const Matrix<Scalar> velocity = evaluate_velocity<Scalar>(field, t, points);
  Vector<Scalar> divergence(points.cols());
  detail::exact_riemannian_divergence(manifold, field, t, points, velocity, divergence);
  return divergence;
}

/// Hutchinson's estimate of the Riemannian divergence div_M(P F) of the ambient field @p field
/// for each column of @p points (on the manifold), with the ambient @p probes of draw_probes
/// (D×(K·N), column k·N + n for sample n), projected here onto the tangent spaces (see the
/// file comment). Returns a length-N vector.
/// Throws std::invalid_argument for bad shapes, non-finite or off-manifold points or
/// non-finite probes.
template <Manifold M, class Field>
Vector<typename M::scalar_type> riemannian_hutchinson_divergence(
    const M& manifold, const Field& field, typename M::scalar_type t,
    const ConstMatrixRef<typename M::scalar_type>& points,
    const ConstMatrixRef<typename M::scalar_type>& probes) {
  detail::require_on_manifold("riemannian_hutchinson_divergence: points", manifold, points);
  detail::require_probes<typename M::scalar_type>("riemannian_hutchinson_divergence: probes",
                                                  points, probes);
  const Matrix<typename M::scalar_type> velocity =
      evaluate_velocity<typename M::scalar_type>(field, t, points);
  Vector<typename M::scalar_type> divergence(points.cols());
  detail::hutchinson_riemannian_divergence(manifold, field, t, points, velocity, probes,
                                           divergence);
  return divergence;
}

}  // namespace flowmatch
