/// @file sinkhorn.hpp
/// @brief Entropic optimal transport between uniform marginals by stabilised Sinkhorn
/// iterations.
///
/// For a cost C (N×M), marginals a = 1/N, b = 1/M and regularisation ε > 0 the entropic plan
/// minimises ⟨C, π⟩ − ε·H(π), H(π) = −Σ π_ij log π_ij, over plans with row sums a and column
/// sums b. It has the form log π_ij = φ_i + ψ_j − C_ij/ε, and Sinkhorn's iterations alternate
///
///     φ_i = log a_i − LSE_j(ψ_j − C_ij/ε),      ψ_j = log b_j − LSE_i(φ_i − C_ij/ε),
///
/// (LSE: log-sum-exp) towards it. They are computed as scalings of a stabilised kernel,
/// K̃_ij = exp(f_i + g_j − C_ij/ε) with φ = f + log u, ψ = g + log v: each iteration is one
/// pass over K̃ with two matrix–vector products, and the scalings are absorbed into f, g
/// before they over- or underflow, so a small ε (even 10⁻³ of the mean cost) loses nothing
/// (see stabilised_sinkhorn.hpp). Three things make it fast without changing the fixed point:
///
/// - ε-scaling: when ε is below a hundredth of the cost range max C − min C, the potentials
///   are first solved roughly (row error ≤ 0.1) for ε₀ = (max C − min C)/10, then ε₀/4,
///   ε₀/16, … while above ε, each the warm start of the next, in at most half of
///   max_iterations (for a larger ε a cold start converges as fast);
/// - over-relaxation at the target ε, with a factor adapted to the observed rate of
///   convergence (see sinkhorn_relaxation.hpp);
/// - the marginal errors are by-products of the matrix–vector products, known after every
///   iteration at no extra cost.
///
/// Convergence is tested on plain (not over-relaxed) iterations, after which the column sums
/// are exact: the iterations stop when the row-sum error Σ_i |Σ_j π_ij − a_i| (L1) is at most
/// the tolerance, or after max_iterations, the last of which is plain too. The reported error
/// is computed from the returned plan.
///
/// As ε → 0 the plan's cost ⟨C, π⟩ decreases to the exact OT cost (within ε·log N for exact
/// marginals); as ε → ∞ the plan tends to the independent coupling a·bᵀ.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "flowmatch/core/errors.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/coupling/coupling.hpp"
#include "flowmatch/detail/sinkhorn_relaxation.hpp"
#include "flowmatch/detail/stabilised_sinkhorn.hpp"
#include "flowmatch/detail/validate.hpp"

namespace flowmatch {

/// A report of the state of running Sinkhorn iterations (see SinkhornOptions::progress).
template <class Scalar>
struct SinkhornProgress {
  Index iteration = 0;  ///< the number of (φ, ψ) updates run so far (as in SinkhornResult).
  /// Σ_i |Σ_j π_ij − 1/N| of the current iterate (its column sums are exact only after a
  /// plain update; the first over-relaxed ones may briefly increase the error).
  Scalar marginal_error = Scalar(0);
  /// The regularisation of the current iterate (absolute): larger than the target during the
  /// ε-scaling stages, the target afterwards.
  Scalar epsilon = Scalar(0);
  double elapsed_seconds = 0;  ///< wall time since sinkhorn was called.
};

/// Options of the Sinkhorn iterations.
template <class Scalar>
struct SinkhornOptions {
  /// The regularisation ε (> 0), in units of the cost, or in units of the mean cost when
  /// epsilon_relative_to_mean_cost is set (then ε_used = epsilon · mean_ij C_ij).
  Scalar epsilon = Scalar(0.05);
  /// Whether epsilon is a fraction of the mean cost rather than an absolute value.
  bool epsilon_relative_to_mean_cost = false;
  /// The largest number of (φ, ψ) updates (≥ 1), those of the ε-scaling stages included.
  Index max_iterations = 1000;
  /// Stop once the L1 row-marginal error is at most this (≥ 0). Rounding bounds the error
  /// reachable, about 10⁻¹⁵ in double and 10⁻⁸ to 10⁻⁷ in float: the default is 10⁻⁹ in
  /// double and 10⁻⁶ in float.
  Scalar tolerance = std::is_same_v<Scalar, float> ? Scalar(1e-6) : Scalar(1e-9);
  /// If set, called with the state of the iterations at most once every
  /// progress_interval_seconds of wall time, the first time once that interval has passed
  /// since sinkhorn was called (so never for a shorter solve); from the calling thread,
  /// between iterations. An exception it throws ends the solve and propagates.
  std::function<void(const SinkhornProgress<Scalar>&)> progress;
  /// The least wall time between progress reports, in seconds (finite, ≥ 0).
  double progress_interval_seconds = 0.25;
};

/// The result of Sinkhorn iterations.
template <class Scalar>
struct SinkhornResult {
  Matrix<Scalar> log_plan;  ///< log π, N×M.
  /// The number of (φ, ψ) updates run, those of the ε-scaling stages included.
  Index iterations = 0;
  Scalar marginal_error = Scalar(0);  ///< Σ_i |Σ_j π_ij − 1/N| of the returned plan.
  /// Whether marginal_error ≤ tolerance. False when max_iterations was reached first: the plan
  /// is then the last iterate (column sums exact, row error in marginal_error), not the
  /// entropic plan to the tolerance; callers must check it.
  bool converged = false;
  Scalar epsilon = Scalar(0);  ///< the regularisation actually used (absolute).

  /// The plan π = exp(log_plan), N×M, entries summing to 1.
  [[nodiscard]] Matrix<Scalar> plan() const { return log_plan.array().exp().matrix(); }
};

namespace detail {

/// The smallest and largest entries of a matrix and their sum (in double or wider).
template <class Scalar>
struct EntrySummary {
  Scalar minimum;
  Scalar maximum;
  std::common_type_t<Scalar, double> sum;
};

/// The EntrySummary of @p matrix, from one pass over it (meaningless if an entry is NaN, when
/// the sum is NaN).
template <class Scalar>
EntrySummary<Scalar> summarise_entries(const Matrix<Scalar>& matrix) {
  EntrySummary<Scalar> summary{std::numeric_limits<Scalar>::infinity(),
                               -std::numeric_limits<Scalar>::infinity(), 0};
  for (Index col = 0; col < matrix.cols(); ++col) {
    const auto column = matrix.col(col).array();
    summary.minimum = std::min(summary.minimum, column.minCoeff());
    summary.maximum = std::max(summary.maximum, column.maxCoeff());
    summary.sum += column.sum();
  }
  return summary;
}

/// Σ_i |Σ_j exp(L_ij) − 1/N| for a log-plan L (N×M): the row error of the plan it stands for,
/// accumulated in double (or the wider type).
template <class Scalar>
std::common_type_t<Scalar, double> row_marginal_error(const Matrix<Scalar>& log_plan) {
  using Real = std::common_type_t<Scalar, double>;
  Eigen::Array<Real, Eigen::Dynamic, 1> row_sums =
      Eigen::Array<Real, Eigen::Dynamic, 1>::Zero(log_plan.rows());
  Eigen::Array<Scalar, Eigen::Dynamic, 1> column(log_plan.rows());
  for (Index col = 0; col < log_plan.cols(); ++col) {
    column = log_plan.col(col).array().exp();
    row_sums += column.template cast<Real>();
  }
  return (row_sums - Real(1) / static_cast<Real>(log_plan.rows())).abs().sum();
}

/// Calls SinkhornOptions::progress at most once per interval (see there).
template <class Scalar>
class SinkhornProgressReporter {
 public:
  using Clock = std::chrono::steady_clock;

  SinkhornProgressReporter(const SinkhornOptions<Scalar>& options, Clock::time_point start)
      : callback_(options.progress),
        interval_(options.progress_interval_seconds),
        start_(start),
        next_report_(interval_) {}

  /// Reports the state after an iteration if the interval has passed since the last report.
  void operator()(Index iteration, Scalar marginal_error, Scalar epsilon) {
    if (!callback_) return;
    const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
    if (elapsed < next_report_) return;
    next_report_ = elapsed + interval_;
    callback_({iteration, marginal_error, epsilon, elapsed});
  }

 private:
  const std::function<void(const SinkhornProgress<Scalar>&)>& callback_;
  double interval_;  // seconds
  Clock::time_point start_;
  double next_report_;  // seconds after start_
};

/// The absolute regularisation and the range of the cost of a Sinkhorn problem.
template <class Scalar>
struct SinkhornScales {
  std::common_type_t<Scalar, double> epsilon;     ///< ε, absolute.
  std::common_type_t<Scalar, double> cost_range;  ///< max C − min C.
};

/// Checks the arguments of sinkhorn (see there) and returns the scales of the problem.
template <class Scalar>
SinkhornScales<Scalar> check_sinkhorn_arguments(const Matrix<Scalar>& cost,
                                                const SinkhornOptions<Scalar>& options) {
  using Real = std::common_type_t<Scalar, double>;
  if (cost.rows() < 1 || cost.cols() < 1) {
    reject_argument("sinkhorn: cost",
                    "has shape " + to_text(cost.rows()) + "x" + to_text(cost.cols()),
                    "at least 1x1");
  }
  const EntrySummary<Scalar> entries = summarise_entries(cost);
  if (!std::isfinite(entries.sum)) require_finite("sinkhorn: cost", cost);
  if (entries.minimum < Scalar(0)) {
    reject_argument("sinkhorn: cost", "has a negative entry " + to_text(entries.minimum),
                    "entries >= 0");
  }
  require_positive("sinkhorn: options.epsilon", options.epsilon);
  require_count<Index>("sinkhorn: options.max_iterations", options.max_iterations, 1);
  require_nonnegative("sinkhorn: options.tolerance", options.tolerance);
  require_nonnegative("sinkhorn: options.progress_interval_seconds",
                      options.progress_interval_seconds);
  Real epsilon = options.epsilon;
  if (options.epsilon_relative_to_mean_cost) {
    const Real mean = entries.sum / static_cast<Real>(cost.size());
    epsilon *= mean;
    if (!(epsilon > Real(0)) || !std::isfinite(epsilon)) {
      reject_argument("sinkhorn: options.epsilon",
                      "is relative to the mean cost, which is " + to_text(mean),
                      "a finite mean cost > 0");
    }
  }
  if (!std::isfinite(Real(1) / epsilon) || !std::isfinite(Real(entries.maximum) / epsilon)) {
    throw numerical_error("sinkhorn: the largest cost over epsilon, " + to_text(entries.maximum) +
                              " / " + to_text(epsilon) + ", overflows",
                          0.0);
  }
  return {epsilon, Real(entries.maximum) - Real(entries.minimum)};
}

}  // namespace detail

/// Runs stabilised Sinkhorn on @p cost (N×M) with uniform marginals (see the file comment).
/// An iteration cap reached before the tolerance is not an error: the result says
/// converged = false and reports the error reached.
/// @throws std::invalid_argument if the cost is empty or not finite, a cost is negative, or an
///         option is out of range (epsilon ≤ 0 or not finite, epsilon relative to a zero mean
///         cost, max_iterations < 1, tolerance < 0 or not finite, progress_interval_seconds < 0
///         or not finite);
///         flowmatch::numerical_error if C/ε overflows (ε so small that max C / ε is not
///         finite) or the potentials or the plan become non-finite.
template <class Scalar>
[[nodiscard]] SinkhornResult<Scalar> sinkhorn(const Matrix<Scalar>& cost,
                                              const SinkhornOptions<Scalar>& options) {
  using Real = std::common_type_t<Scalar, double>;
  const auto start = std::chrono::steady_clock::now();
  const detail::SinkhornScales<Scalar> scales = detail::check_sinkhorn_arguments(cost, options);
  const Real epsilon = scales.epsilon;

  SinkhornResult<Scalar> result;
  result.epsilon = static_cast<Scalar>(epsilon);
  detail::StabilisedSinkhorn<Scalar> state(cost);
  detail::SinkhornProgressReporter<Scalar> report(options, start);
  Index iterations = 0;

  // ε-scaling, for ε below a hundredth of the cost range: rough solutions for ε₀ = range/10,
  // ε₀/4, … above the target.
  const Index scaling_budget = epsilon < scales.cost_range / 100 ? options.max_iterations / 2 : 0;
  const Real stage_tolerance(0.1);
  for (Real stage = scales.cost_range / 10; stage > epsilon && iterations < scaling_budget;
       stage /= 4) {
    state.set_epsilon(stage);
    while (iterations < scaling_budget) {
      const Real row_error = state.update_columns(Real(1)).row_error;
      report(++iterations, static_cast<Scalar>(row_error), static_cast<Scalar>(stage));
      if (row_error <= stage_tolerance) break;
      state.update_rows(Real(1));
    }
  }

  // The target ε, over-relaxed, with plain iterations to test convergence and last.
  state.set_epsilon(epsilon);
  detail::SinkhornRelaxation<Real> relaxation(options.tolerance);
  while (true) {
    const bool last = iterations + 1 == options.max_iterations;
    const Real factor = last ? Real(1) : relaxation.factor();
    const detail::SweepErrors<Real> errors = state.update_columns(factor);
    report(++iterations, static_cast<Scalar>(errors.row_error), result.epsilon);
    if (last || (factor == Real(1) && errors.row_error <= options.tolerance)) break;
    relaxation.record(errors.row_error, errors.column_error);
    state.update_rows(factor);
  }

  result.iterations = iterations;
  result.log_plan = state.release_log_plan();
  result.marginal_error = static_cast<Scalar>(detail::row_marginal_error(result.log_plan));
  if (!std::isfinite(result.marginal_error)) {
    throw numerical_error(
        "sinkhorn: the plan became non-finite with epsilon " + detail::to_text(epsilon), 0.0);
  }
  result.converged = result.marginal_error <= options.tolerance;
  return result;
}

/// Sinkhorn between the columns of @p x0 (d×N) and @p x1 (d×N) under the squared Euclidean
/// cost. Draw pairs from result.plan() with sample_pairs_from_plan (PlanSampling::flattened
/// draws N pairs from the whole plan with replacement, as minibatch OT-CFM usually does).
/// @throws std::invalid_argument if the batches are empty, differ in shape or are not finite,
///         and as sinkhorn.
template <class Scalar>
[[nodiscard]] SinkhornResult<Scalar> sinkhorn_pairing(const Matrix<Scalar>& x0,
                                                      const Matrix<Scalar>& x1,
                                                      const SinkhornOptions<Scalar>& options) {
  detail::require_batch_pair("sinkhorn_pairing", x0, x1, true);
  return sinkhorn(squared_euclidean_cost(x0, x1), options);
}

}  // namespace flowmatch
