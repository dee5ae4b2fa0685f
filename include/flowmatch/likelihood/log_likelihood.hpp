/// @file log_likelihood.hpp
/// @brief Exact log-likelihoods of a flow by the instantaneous change of variables.
///
/// Along a trajectory of dx/dt = u_t(x), d/dt log p_t(x_t) = −∇·u_t(x_t). Both functions
/// integrate the augmented (d+1)×N state (x, ℓ) with dℓ/dt = ∇·u_t(x), so the solver's error
/// control covers ℓ as well as x, and every method of the solver applies:
///
///   - log_likelihood (data → noise): from (x, 0) at t = 1 to t = 0, then
///     log p_1(x) = log p_0(x(0)) + ℓ(0), since ℓ(0) = −∫₀¹ ∇·u dt;
///   - sample_with_log_likelihood (noise → data): from (x₀, 0) at t = 0 to t = 1, then
///     log p_1(x(1)) = log p_0(x₀) − ℓ(1): samples and their log-densities in one pass.
///
/// The divergence estimator is chosen per call (divergence.hpp): ExactDivergence (default) or
/// Hutchinson. The source log-density defaults to the standard normal and may be any callable
/// mapping a d×N batch to a length-N vector.
#pragma once

#include <array>
#include <cmath>
#include <string>
#include <utility>

#include "flowmatch/autodiff/field_derivatives.hpp"
#include "flowmatch/core/errors.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/field/velocity_field.hpp"
#include "flowmatch/likelihood/divergence.hpp"
#include "flowmatch/likelihood/standard_normal.hpp"
#include "flowmatch/solver/integrate.hpp"

namespace flowmatch {

/// A batch at both ends of the flow with its log-density under the model.
template <class Scalar>
struct LikelihoodResult {
  Matrix<Scalar> data;             ///< x at t = 1 (d×N): the input, or the generated samples.
  Matrix<Scalar> noise;            ///< x at t = 0 (d×N): the encoding, or the input noise.
  Vector<Scalar> log_prob;         ///< log p_1(data) under the model, per sample (length N).
  Vector<Scalar> source_log_prob;  ///< log p_0(noise), per sample (length N).
  SolverStats stats;               ///< Work of the integration.
};

namespace detail {

/// log p_0 of @p noise from @p source, checked to be a length-N vector without NaN.
template <class Scalar, class Source>
Vector<Scalar> source_log_density(const Source& source, const Matrix<Scalar>& noise) {
  Vector<Scalar> log_density = source(noise);
  require_shape("source log-density result", log_density, noise.cols(), 1);
  for (Index n = 0; n < log_density.size(); ++n) {
    if (std::isnan(log_density(n))) {
      throw numerical_error("source log-density is NaN at sample " + to_text(n), 0.0, n);
    }
  }
  return log_density;
}

/// Integrates (x, ℓ) with dx/dt = u_t(x), dℓ/dt = estimate of ∇·u_t(x) over @p grid from
/// (x, 0), and returns the solver's result on the (d+1)×N state.
template <class Scalar, class Field, class Estimator>
SolveResult<Scalar> integrate_with_divergence(const Field& field, const ConstMatrixRef<Scalar>& x,
                                              const std::array<Scalar, 2>& grid,
                                              const SolverOptions<Scalar>& options,
                                              const Estimator& estimator) {
  const Index dim = x.rows();
  auto estimate = estimator.template prepare<Scalar>(dim, x.cols());
  Vector<Scalar> divergence(x.cols());
  auto system = [&](Scalar t, const ConstMatrixRef<Scalar>& state, MatrixRef<Scalar> derivative) {
    const ConstMatrixRef<Scalar> position = state.topRows(dim);
    evaluate_velocity<Scalar>(field, t, position, derivative.topRows(dim));
    estimate(field, t, position, divergence);
    derivative.row(dim) = divergence.transpose();
  };
  Matrix<Scalar> initial(dim + 1, x.cols());
  initial.topRows(dim) = x;
  initial.row(dim).setZero();
  return integrate_system(system, initial, grid, options);
}

}  // namespace detail

/// log p_1(x) under the flow of @p field, for each column of the d×N batch @p x: integrates
/// (x, ℓ) from t = 1 to t = 0 (see the file comment) and returns x(0), log p_0(x(0)) and
/// log p_1(x) = log p_0(x(0)) + ℓ(0).
///
/// @param field a VelocityField; its divergence comes from @p estimator.
/// @param x the points (d×N, d, N >= 1, finite).
/// @param options the solver's settings (method, tolerances or step, ...).
/// @param estimator ExactDivergence{} (default) or a Hutchinson estimator.
/// @param source log p_0 as a callable d×N → length N; the standard normal by default.
/// @throws std::invalid_argument for bad shapes, non-finite x or bad options; whatever the
///         solver throws (numerical_error for a non-finite state or step-size failure).
template <class Field, class Derived, class Estimator = ExactDivergence,
          class Source = StandardNormal>
requires VelocityField<Field, typename Derived::Scalar> LikelihoodResult<typename Derived::Scalar>
log_likelihood(const Field& field, const Eigen::MatrixBase<Derived>& x,
               const SolverOptions<typename Derived::Scalar>& options = {},
               const Estimator& estimator = {}, const Source& source = {}) {
  using Scalar = typename Derived::Scalar;
  detail::require_nonempty_batch("log_likelihood: x", x);
  const Index dim = x.rows();
  const Matrix<Scalar> points = x;
  SolveResult<Scalar> solution = detail::integrate_with_divergence<Scalar>(
      field, points, {Scalar(1), Scalar(0)}, options, estimator);
  LikelihoodResult<Scalar> result;
  result.data = points;
  result.noise = solution.state.topRows(dim);
  result.source_log_prob = detail::source_log_density<Scalar>(source, result.noise);
  result.log_prob = result.source_log_prob + solution.state.row(dim).transpose();
  result.stats = solution.stats;
  return result;
}

/// Sampling with log-densities: pushes the noise batch @p x0 from t = 0 to t = 1 along
/// @p field and returns the samples x(1) with log p_1(x(1)) = log p_0(x0) − ∫₀¹ ∇·u dt, in the
/// same pass (see the file comment). Arguments and exceptions as log_likelihood.
template <class Field, class Derived, class Estimator = ExactDivergence,
          class Source = StandardNormal>
requires VelocityField<Field, typename Derived::Scalar> LikelihoodResult<typename Derived::Scalar>
sample_with_log_likelihood(const Field& field, const Eigen::MatrixBase<Derived>& x0,
                           const SolverOptions<typename Derived::Scalar>& options = {},
                           const Estimator& estimator = {}, const Source& source = {}) {
  using Scalar = typename Derived::Scalar;
  detail::require_nonempty_batch("sample_with_log_likelihood: x0", x0);
  const Index dim = x0.rows();
  LikelihoodResult<Scalar> result;
  result.noise = x0;
  result.source_log_prob = detail::source_log_density<Scalar>(source, result.noise);
  SolveResult<Scalar> solution = detail::integrate_with_divergence<Scalar>(
      field, result.noise, {Scalar(0), Scalar(1)}, options, estimator);
  result.data = solution.state.topRows(dim);
  result.log_prob = result.source_log_prob - solution.state.row(dim).transpose();
  result.stats = solution.stats;
  return result;
}

}  // namespace flowmatch
