/// @file exact_score.hpp
/// @brief The exact score of the model's own density, ∇_x log p_t(x), for the flow of a
/// velocity field, exact up to the solver's tolerance.
///
/// Method. Along a trajectory x_t of dx/dt = u_t(x), the score s_t = ∇log p_t(x_t) obeys
///
///     ds/dt = −(∂u_t/∂x)ᵀ s − ∇_x(∇·u_t)(x_t),
///
/// (differentiate log p_t(x_t) = log p_0(x_0) − ∫ ∇·u along the flow with respect to x_0 and
/// transport the gradient). Hence
///
///   - exact_score(field, t, x): encodes x from t back to x(0) (backward ODE), then integrates
///     the augmented 2d×N state (x, s) forward from (x(0), ∇log p_0(x(0))) to t; s(t) is the
///     score at x(t) = x up to the solver's tolerance;
///   - sample_with_score(field, x0): integrates (x, s) forward from noise, returning samples and
///     their scores in one pass.
///
/// Both need the vector-Jacobian product and the gradient of the divergence, taken from the
/// field's `velocity_vjp_divergence_gradient` member if it has one (velocity, vjp and ∇div from
/// one pass, as Mlp offers), else from its `vjp` and `divergence_gradient` members, else by
/// forward mode (duals, nested duals for ∇div) on a generic field, else a compile-time error;
/// finite differences by explicit opt-in through FiniteDifferenceField (see
/// field_derivatives.hpp). The source must
/// offer `score(x)` (StandardNormal, the default: ∇log p_0(x) = −x).
#pragma once

#include <array>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "flowmatch/autodiff/field_derivatives.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/field/capabilities.hpp"
#include "flowmatch/likelihood/standard_normal.hpp"
#include "flowmatch/solver/integrate.hpp"

namespace flowmatch {

/// A source distribution that offers its score: `source.score(x)` is ∇log p_0 per column (d×N).
template <class Source, class Scalar>
concept SourceWithScore = requires(const Source& source, const Matrix<Scalar>& x,
                                   Matrix<Scalar>& out) {
  out = source.score(x);
};

/// Points with the exact score of the model's density there.
template <class Scalar>
struct ScoreResult {
  Matrix<Scalar> points;     ///< x(t) (d×N): the end of the forward integration.
  Matrix<Scalar> score;      ///< ∇log p_t at points (d×N).
  Matrix<Scalar> noise;      ///< x(0) (d×N): the encoding, or the input noise.
  SolverStats encode_stats;  ///< Work of the backward encoding (zero for sample_with_score).
  SolverStats stats;         ///< Work of the forward (x, s) integration.
  /// The grid of the forward integration: the times given, or {0, t} without a grid.
  std::vector<Scalar> times;
  /// x(t_k) at every grid time (d×N each); trajectory[k] at times[k].
  std::vector<Matrix<Scalar>> trajectory;
  /// ∇log p_{t_k} at x(t_k), every grid time (d×N each).
  std::vector<Matrix<Scalar>> score_trajectory;
};

namespace detail {

/// ∇log p_0 at @p noise from @p source, checked to be d×N and finite.
template <class Scalar, class Source>
Matrix<Scalar> source_score(const Source& source, const Matrix<Scalar>& noise) {
  Matrix<Scalar> score = source.score(noise);
  require_shape("exact_score: score of the source", score, noise.rows(), noise.cols());
  require_finite("exact_score: score of the source", score);
  return score;
}

/// Reports a field with run-time capabilities that cannot transport the score.
template <class Field>
void require_score_capabilities(const Field& field) {
  require_capability(field, capability::Vjp{}, "exact_score");
  require_capability(field, capability::DivergenceGradient{}, "exact_score");
}

/// Integrates (x, s) with dx/dt = u, ds/dt = −(∂u/∂x)ᵀ s − ∇(∇·u) from (noise, source score)
/// at t = grid[0] = 0 through @p grid, into @p result.
template <class Scalar, class Field, class Source>
void integrate_score(const Field& field, const Source& source, std::span<const Scalar> grid,
                     const SolverOptions<Scalar>& options, ScoreResult<Scalar>& result) {
  const Index dim = result.noise.rows();
  const Index samples = result.noise.cols();
  Matrix<Scalar> transported(dim, samples);
  Matrix<Scalar> gradient(dim, samples);
  auto system = [&](Scalar t, const ConstMatrixRef<Scalar>& state, MatrixRef<Scalar> derivative) {
    const ConstMatrixRef<Scalar> position = state.topRows(dim);
    const ConstMatrixRef<Scalar> score = state.bottomRows(dim);
    detail::derive(capability::VelocityVjpDivergenceGradient{}, field, t, position, score,
                   derivative.topRows(dim), transported, gradient);
    derivative.bottomRows(dim) = -transported - gradient;
  };
  Matrix<Scalar> initial(2 * dim, samples);
  initial.topRows(dim) = result.noise;
  initial.bottomRows(dim) = source_score<Scalar>(source, result.noise);
  SolverOptions<Scalar> recording = options;
  recording.return_trajectory = true;
  SolveResult<Scalar> solution = integrate_system(system, initial, grid, recording);
  result.points = solution.state.topRows(dim);
  result.score = solution.state.bottomRows(dim);
  result.stats = solution.stats;
  result.times = std::move(solution.times);
  for (const Matrix<Scalar>& state : solution.trajectory) {
    result.trajectory.emplace_back(state.topRows(dim));
    result.score_trajectory.emplace_back(state.bottomRows(dim));
  }
}

/// integrate_score over {0, @p end}.
template <class Scalar, class Field, class Source>
void integrate_score(const Field& field, const Source& source, Scalar end,
                     const SolverOptions<Scalar>& options, ScoreResult<Scalar>& result) {
  const std::array<Scalar, 2> grid{Scalar(0), end};
  integrate_score<Scalar>(field, source, std::span<const Scalar>(grid), options, result);
}

}  // namespace detail

/// The exact score ∇_x log p_t(x) of the density of the flow of @p field at time @p t, for
/// each column of the d×N batch @p x (see the file comment for the method). At t = 0 it is the
/// source's score.
///
/// @param field a VelocityField with a vjp and divergence gradient (members or forward mode).
/// @param t the time in [0, 1] (1: the model's data density).
/// @param x the points (d×N, d, N >= 1, finite).
/// @param options the solver's settings, used for both integrations; by default
///        SolverOptions::for_density(), tolerances of 1e-7.
/// @throws std::invalid_argument for bad shapes, non-finite x or bad options;
///         std::domain_error if t is outside [0, 1]; numerical_error from the solver.
template <class Derived, VelocityField<typename Derived::Scalar> Field,
          SourceWithScore<typename Derived::Scalar> Source = StandardNormal>
ScoreResult<typename Derived::Scalar> exact_score(
    const Field& field, typename Derived::Scalar t, const Eigen::MatrixBase<Derived>& x,
    const SolverOptions<typename Derived::Scalar>& options =
        SolverOptions<typename Derived::Scalar>::for_density(),
    const Source& source = {}) {
  using Scalar = typename Derived::Scalar;
  detail::require_unit_time("exact_score: t", t);
  detail::require_nonempty_batch("exact_score: x", x);
  detail::require_score_capabilities(field);
  ScoreResult<Scalar> result;
  if (t == Scalar(0)) {
    result.points = x;
    result.noise = x;
    result.score = detail::source_score<Scalar>(source, result.noise);
    return result;
  }
  const std::array<Scalar, 2> backward{t, Scalar(0)};
  SolveResult<Scalar> encoded = integrate(field, x, backward, options);
  result.noise = std::move(encoded.state);
  result.encode_stats = encoded.stats;
  detail::integrate_score<Scalar>(field, source, t, options, result);
  return result;
}

/// Sampling with exact scores: pushes the noise batch @p x0 from t = 0 to t = 1 along @p field
/// together with s = ∇log p_t(x_t), returning the samples and the score of the model's density
/// at each (one pass; see the file comment). Arguments and exceptions as exact_score.
template <class Derived, VelocityField<typename Derived::Scalar> Field,
          SourceWithScore<typename Derived::Scalar> Source = StandardNormal>
ScoreResult<typename Derived::Scalar> sample_with_score(
    const Field& field, const Eigen::MatrixBase<Derived>& x0,
    const SolverOptions<typename Derived::Scalar>& options =
        SolverOptions<typename Derived::Scalar>::for_density(),
    const Source& source = {}) {
  using Scalar = typename Derived::Scalar;
  detail::require_nonempty_batch("sample_with_score: x0", x0);
  detail::require_score_capabilities(field);
  ScoreResult<Scalar> result;
  result.noise = x0;
  detail::integrate_score<Scalar>(field, source, Scalar(1), options, result);
  return result;
}

/// The exact score along the trajectory through @p x, at every time of @p times: @p times runs
/// strictly increasing from 0 to t_K in (0, 1], and x (d×N) is the batch at t_K. Encodes x
/// from t_K to 0, then integrates (x, s) forward through the grid; the result holds x(t_k) and
/// ∇log p_{t_k}(x(t_k)) at every grid time (trajectory, score_trajectory), and points and
/// score at t_K. Other arguments and exceptions as exact_score, and std::invalid_argument for
/// a bad grid.
template <class Derived, VelocityField<typename Derived::Scalar> Field,
          TimeGrid<typename Derived::Scalar> Times,
          SourceWithScore<typename Derived::Scalar> Source = StandardNormal>
ScoreResult<typename Derived::Scalar> exact_score(
    const Field& field, const Times& times, const Eigen::MatrixBase<Derived>& x,
    const SolverOptions<typename Derived::Scalar>& options =
        SolverOptions<typename Derived::Scalar>::for_density(),
    const Source& source = {}) {
  using Scalar = typename Derived::Scalar;
  const std::span<const Scalar> grid(times);
  const Scalar end = grid.empty() ? Scalar(0) : grid.back();
  detail::require_unit_time("exact_score: the last time", end);
  detail::require_end_to_end_grid("exact_score", grid, Scalar(0), end);
  detail::require_nonempty_batch("exact_score: x", x);
  detail::require_score_capabilities(field);
  ScoreResult<Scalar> result;
  const std::array<Scalar, 2> backward{end, Scalar(0)};
  SolveResult<Scalar> encoded = integrate(field, x, std::span<const Scalar>(backward), options);
  result.noise = std::move(encoded.state);
  result.encode_stats = encoded.stats;
  detail::integrate_score<Scalar>(field, source, grid, options, result);
  return result;
}

/// Sampling with exact scores through a grid: pushes the noise @p x0 from t = 0 along
/// @p times (strictly increasing from 0) and returns x(t_k) and ∇log p_{t_k}(x(t_k)) at every
/// grid time. Arguments and exceptions as exact_score.
template <class Derived, VelocityField<typename Derived::Scalar> Field,
          TimeGrid<typename Derived::Scalar> Times,
          SourceWithScore<typename Derived::Scalar> Source = StandardNormal>
ScoreResult<typename Derived::Scalar> sample_with_score(
    const Field& field, const Eigen::MatrixBase<Derived>& x0, const Times& times,
    const SolverOptions<typename Derived::Scalar>& options =
        SolverOptions<typename Derived::Scalar>::for_density(),
    const Source& source = {}) {
  using Scalar = typename Derived::Scalar;
  const std::span<const Scalar> grid(times);
  const Scalar end = grid.empty() ? Scalar(0) : grid.back();
  detail::require_unit_time("sample_with_score: the last time", end);
  detail::require_end_to_end_grid("sample_with_score", grid, Scalar(0), end);
  detail::require_nonempty_batch("sample_with_score: x0", x0);
  detail::require_score_capabilities(field);
  ScoreResult<Scalar> result;
  result.noise = x0;
  detail::integrate_score<Scalar>(field, source, grid, options, result);
  return result;
}

}  // namespace flowmatch
