/// @file log_likelihood.hpp
/// @brief Exact log-likelihoods of a flow on a manifold: the continuous change of variables
/// with the Riemannian divergence.
///
/// Along the flow of u = P_x F, the density with respect to the Riemannian volume obeys
/// d/dt log p_t(x_t) = −div_M u_t(x_t), so for a point x at t = 1 and its encoding x₀ at t = 0
///
///     log p_1(x) = log p_base(x₀) − ∫₀¹ div_M u_t(x_t) dt.
///
/// The points run from t = 1 to t = 0 with the manifold integrators (integrate.hpp), and the
/// integral of the divergence runs beside them with the same tableau, at the same stages. The
/// divergence is exact (manifold/divergence.hpp: D Jacobian-vector products per stage) or
/// Hutchinson's estimate with probes drawn once by the caller and fixed along the trajectory
/// (projected onto the tangent space at each stage).
#pragma once

#include <span>
#include <string>
#include <utility>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/time_grid.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/field/capabilities.hpp"
#include "flowmatch/manifold/divergence.hpp"
#include "flowmatch/manifold/integrate.hpp"
#include "flowmatch/manifold/manifold.hpp"
#include "flowmatch/solver/result.hpp"

namespace flowmatch {

/// What log_likelihood_on_manifold returns.
template <class Scalar>
struct ManifoldLikelihoodResult {
  /// log p_1(x) for each column of x, with respect to the Riemannian volume (length N).
  Vector<Scalar> log_prob;
  /// x₀, the points carried back to t = 0 (dimension()×N).
  Matrix<Scalar> noise;
  /// The work, counted as log_likelihood counts it: nfe is the number of evaluations of the
  /// field, one per stage (stages × steps), each giving the velocity and, from one batched
  /// Jacobian-vector product at the same points, its divergence.
  SolverStats stats;
};

namespace detail {

/// The common driver: checks, then integrates (x, ℓ) from t = 1 to 0 with dℓ/dt = @p divergence.
template <Manifold M, class Field, class Divergence>
ManifoldLikelihoodResult<typename M::scalar_type> manifold_log_likelihood(
    const char* function, const M& manifold, const Field& field,
    const ConstMatrixRef<typename M::scalar_type>& x, Divergence divergence,
    const ManifoldSolverOptions<typename M::scalar_type>& options) {
  using Scalar = typename M::scalar_type;
  validate_manifold_options(options);
  if (!options.step_size) {
    reject_argument("ManifoldSolverOptions: step_size", std::string("is unset"),
                    std::string("a step size for ") + function + " (fixed steps from t = 1 to 0)");
  }
  const Scalar grid[] = {Scalar(1), Scalar(0)};
  ManifoldStepper<M, Field, Divergence> stepper(manifold, field, options, x.rows(), x.cols(),
                                                std::move(divergence));
  SolveResult<Scalar> solve;
  solve.state = x;
  // ℓ(0) = ∫₁⁰ div dt = −∫₀¹ div dt, the change of log p from t = 1 to t = 0.
  Vector<Scalar> change = Vector<Scalar>::Zero(x.cols());
  ManifoldSolverOptions<Scalar> run = options;
  run.return_trajectory = false;
  run_manifold_grid(stepper, std::span<const Scalar>(grid), run, solve, &change);
  ManifoldLikelihoodResult<Scalar> result;
  result.noise = std::move(solve.state);
  result.log_prob.resize(x.cols());
  manifold.base_log_density(result.noise, result.log_prob);
  result.log_prob += change;
  result.stats = solve.stats;
  return result;
}

}  // namespace detail

/// log p_1(x) of the flow of the ambient field @p field projected onto @p manifold, from the
/// base distribution at t = 0, with the exact Riemannian divergence (see the file comment).
/// @param x dimension()×N points on the manifold; @param options the method, stepping and the
/// step size, which must be set, and the observer, which sees the (dimension() + 1)×N state
/// (x_t, ℓ_t) after each step, ℓ_t = ∫₁ᵗ div_M u dt as in log_likelihood (return_trajectory is
/// not used).
/// Throws std::invalid_argument for bad shapes, non-finite or off-manifold points or options,
/// numerical_error with the time and first bad column for non-finite values.
template <Manifold M, VelocityField<typename M::scalar_type> Field>
ManifoldLikelihoodResult<typename M::scalar_type> log_likelihood_on_manifold(
    const M& manifold, const Field& field, const ConstMatrixRef<typename M::scalar_type>& x,
    const ManifoldSolverOptions<typename M::scalar_type>& options) {
  using Scalar = typename M::scalar_type;
  detail::require_on_manifold("log_likelihood_on_manifold: x", manifold, x);
  const auto divergence = [&manifold, &field](Scalar t, const ConstMatrixRef<Scalar>& points,
                                              const ConstMatrixRef<Scalar>& velocity,
                                              VectorRef<Scalar> out) {
    detail::exact_riemannian_divergence(manifold, field, t, points, velocity, out);
  };
  return detail::manifold_log_likelihood("log_likelihood_on_manifold", manifold, field, x,
                                         divergence, options);
}

/// log_likelihood_on_manifold with Hutchinson's estimate of the divergence, from the ambient
/// @p probes of draw_probes (dimension()×(K·N), column k·N + n for sample n), fixed along the
/// trajectory and projected onto the tangent space at each stage. Unbiased for the integral
/// of the divergence, so for log p_1(x) up to the integration error.
template <Manifold M, VelocityField<typename M::scalar_type> Field>
ManifoldLikelihoodResult<typename M::scalar_type> log_likelihood_on_manifold(
    const M& manifold, const Field& field, const ConstMatrixRef<typename M::scalar_type>& x,
    const ConstMatrixRef<typename M::scalar_type>& probes,
    const ManifoldSolverOptions<typename M::scalar_type>& options) {
  using Scalar = typename M::scalar_type;
  detail::require_on_manifold("log_likelihood_on_manifold: x", manifold, x);
  detail::require_probes<Scalar>("log_likelihood_on_manifold: probes", x, probes);
  const auto divergence = [&manifold, &field, &probes](
                              Scalar t, const ConstMatrixRef<Scalar>& points,
                              const ConstMatrixRef<Scalar>& velocity, VectorRef<Scalar> out) {
    detail::hutchinson_riemannian_divergence(manifold, field, t, points, velocity, probes, out);
  };
  return detail::manifold_log_likelihood("log_likelihood_on_manifold", manifold, field, x,
                                         divergence, options);
}

}  // namespace flowmatch
