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
#include <concepts>
#include <cstddef>
#include <ranges>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "flowmatch/autodiff/field_derivatives.hpp"
#include "flowmatch/core/errors.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/field/capabilities.hpp"
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
  /// The grid of the integration: the times given, or {1, 0} (log_likelihood) and {0, 1}
  /// (sample_with_log_likelihood) without a grid.
  std::vector<Scalar> times;
  /// x(t_k) at every grid time (d×N each); trajectory[k] at times[k].
  std::vector<Matrix<Scalar>> trajectory;
  /// log p_{t_k}(x(t_k)) at every grid time (length N each): the density of the model's flow at
  /// time t_k, at the point the trajectory passes through.
  std::vector<Vector<Scalar>> log_prob_trajectory;
};

namespace detail {

/// log p_0 of @p noise from @p source, checked to be a length-N vector without NaN.
template <class Scalar, class Source>
Vector<Scalar> source_log_density(const Source& source, const Matrix<Scalar>& noise) {
  Vector<Scalar> log_density = source(noise);
  require_shape("log_likelihood: log-density of the source", log_density, noise.cols(), 1);
  for (Index n = 0; n < log_density.size(); ++n) {
    if (std::isnan(log_density(n))) {
      throw numerical_error("source log-density is NaN at sample " + to_text(n), 0.0, n);
    }
  }
  return log_density;
}

/// Integrates (x, ℓ) with dx/dt = u_t(x), dℓ/dt = estimate of ∇·u_t(x) over @p grid from
/// (x, 0), and fills @p result: times, stats and trajectory (x at every grid time); returns
/// ℓ at every grid time.
template <class Scalar, class Field, class Estimator>
std::vector<Vector<Scalar>> integrate_with_divergence(const Field& field,
                                                      const ConstMatrixRef<Scalar>& x,
                                                      std::span<const Scalar> grid,
                                                      const SolverOptions<Scalar>& options,
                                                      const Estimator& estimator,
                                                      LikelihoodResult<Scalar>& result) {
  if constexpr (requires { typename Estimator::capability_tag; }) {
    require_capability(field, typename Estimator::capability_tag{}, "log_likelihood");
  }
  const Index dim = x.rows();
  auto estimate = estimator.template prepare<Scalar>(dim, x.cols());
  Vector<Scalar> divergence(x.cols());
  auto system = [&](Scalar t, const ConstMatrixRef<Scalar>& state, MatrixRef<Scalar> derivative) {
    const ConstMatrixRef<Scalar> position = state.topRows(dim);
    estimate(field, t, position, derivative.topRows(dim), divergence);
    derivative.row(dim) = divergence.transpose();
  };
  Matrix<Scalar> initial(dim + 1, x.cols());
  initial.topRows(dim) = x;
  initial.row(dim).setZero();
  SolverOptions<Scalar> recording = options;
  recording.return_trajectory = true;
  SolveResult<Scalar> solution = integrate_system(system, initial, grid, recording);
  result.times = std::move(solution.times);
  result.stats = solution.stats;
  std::vector<Vector<Scalar>> accumulated;
  result.trajectory.clear();
  for (const Matrix<Scalar>& state : solution.trajectory) {
    result.trajectory.emplace_back(state.topRows(dim));
    accumulated.emplace_back(state.row(dim).transpose());
  }
  return accumulated;
}

}  // namespace detail

/// log p_1(x) under the flow of @p field, for each column of the d×N batch @p x, with the
/// log-density of the flow's marginal at every time of @p times along the way: integrates
/// (x, ℓ) from t = 1 to t = 0 through the grid (see the file comment) and returns x(0),
/// log p_0(x(0)), log p_1(x) = log p_0(x(0)) + ℓ(0) and, at every grid time t_k,
/// x(t_k) and log p_{t_k}(x(t_k)) = log p_0(x(0)) + ℓ(0) − ℓ(t_k).
///
/// @param field a VelocityField; its divergence comes from @p estimator.
/// @param x the points (d×N, d, N >= 1, finite).
/// @param times the grid, strictly decreasing from 1 to 0.
/// @param options the solver's settings (method, tolerances or step, ...); by default
///        SolverOptions::for_density(), tolerances of 1e-7.
/// @param estimator ExactDivergence{} (default) or a Hutchinson estimator.
/// @param source log p_0 as a callable d×N → length N; the standard normal by default.
/// @throws std::invalid_argument for bad shapes, non-finite x, a bad grid, bad options or a
///         type-erased field without the capability the estimator needs; whatever the solver
///         throws (numerical_error for a non-finite state or step-size failure).
template <class Derived, VelocityField<typename Derived::Scalar> Field,
          TimeGrid<typename Derived::Scalar> Times, class Estimator = ExactDivergence,
          class Source = StandardNormal>
LikelihoodResult<typename Derived::Scalar> log_likelihood(
    const Field& field, const Eigen::MatrixBase<Derived>& x, const Times& times,
    const SolverOptions<typename Derived::Scalar>& options =
        SolverOptions<typename Derived::Scalar>::for_density(),
    const Estimator& estimator = {}, const Source& source = {}) {
  using Scalar = typename Derived::Scalar;
  detail::require_nonempty_batch("log_likelihood: x", x);
  detail::require_end_to_end_grid("log_likelihood", std::span<const Scalar>(times), Scalar(1),
                                  Scalar(0));
  LikelihoodResult<Scalar> result;
  result.data = x;
  const std::vector<Vector<Scalar>> accumulated = detail::integrate_with_divergence<Scalar>(
      field, result.data, std::span<const Scalar>(times), options, estimator, result);
  result.noise = result.trajectory.back();
  result.source_log_prob = detail::source_log_density<Scalar>(source, result.noise);
  result.log_prob = result.source_log_prob + accumulated.back();
  for (const Vector<Scalar>& at_time : accumulated) {
    result.log_prob_trajectory.emplace_back(result.source_log_prob +
                                            (accumulated.back() - at_time));
  }
  return result;
}

/// log p_1(x) under the flow of @p field: log_likelihood over the grid {1, 0}.
template <class Derived, VelocityField<typename Derived::Scalar> Field,
          class Estimator = ExactDivergence, class Source = StandardNormal>
LikelihoodResult<typename Derived::Scalar> log_likelihood(
    const Field& field, const Eigen::MatrixBase<Derived>& x,
    const SolverOptions<typename Derived::Scalar>& options =
        SolverOptions<typename Derived::Scalar>::for_density(),
    const Estimator& estimator = {}, const Source& source = {}) {
  using Scalar = typename Derived::Scalar;
  const std::array<Scalar, 2> grid{Scalar(1), Scalar(0)};
  return log_likelihood(field, x, std::span<const Scalar>(grid), options, estimator, source);
}

/// Sampling with log-densities: pushes the noise batch @p x0 from t = 0 to t = 1 along
/// @p field through the grid @p times (strictly increasing from 0 to 1) and returns the samples
/// x(1) with log p_1(x(1)) = log p_0(x0) − ∫₀¹ ∇·u dt, and at every grid time t_k, x(t_k) and
/// log p_{t_k}(x(t_k)) = log p_0(x0) − ℓ(t_k), all in one pass (see the file comment).
/// Arguments and exceptions as log_likelihood.
template <class Derived, VelocityField<typename Derived::Scalar> Field,
          TimeGrid<typename Derived::Scalar> Times, class Estimator = ExactDivergence,
          class Source = StandardNormal>
LikelihoodResult<typename Derived::Scalar> sample_with_log_likelihood(
    const Field& field, const Eigen::MatrixBase<Derived>& x0, const Times& times,
    const SolverOptions<typename Derived::Scalar>& options =
        SolverOptions<typename Derived::Scalar>::for_density(),
    const Estimator& estimator = {}, const Source& source = {}) {
  using Scalar = typename Derived::Scalar;
  detail::require_nonempty_batch("sample_with_log_likelihood: x0", x0);
  detail::require_end_to_end_grid("sample_with_log_likelihood", std::span<const Scalar>(times),
                                  Scalar(0), Scalar(1));
  LikelihoodResult<Scalar> result;
  result.noise = x0;
  result.source_log_prob = detail::source_log_density<Scalar>(source, result.noise);
  const std::vector<Vector<Scalar>> accumulated = detail::integrate_with_divergence<Scalar>(
      field, result.noise, std::span<const Scalar>(times), options, estimator, result);
  result.data = result.trajectory.back();
  for (const Vector<Scalar>& at_time : accumulated) {
    result.log_prob_trajectory.emplace_back(result.source_log_prob - at_time);
  }
  result.log_prob = result.log_prob_trajectory.back();
  return result;
}

/// Sampling with log-densities over the grid {0, 1} (see the overload above).
template <class Derived, VelocityField<typename Derived::Scalar> Field,
          class Estimator = ExactDivergence, class Source = StandardNormal>
LikelihoodResult<typename Derived::Scalar> sample_with_log_likelihood(
    const Field& field, const Eigen::MatrixBase<Derived>& x0,
    const SolverOptions<typename Derived::Scalar>& options =
        SolverOptions<typename Derived::Scalar>::for_density(),
    const Estimator& estimator = {}, const Source& source = {}) {
  using Scalar = typename Derived::Scalar;
  const std::array<Scalar, 2> grid{Scalar(0), Scalar(1)};
  return sample_with_log_likelihood(field, x0, std::span<const Scalar>(grid), options, estimator,
                                    source);
}

}  // namespace flowmatch
