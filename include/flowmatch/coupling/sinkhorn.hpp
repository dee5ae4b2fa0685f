/// @file sinkhorn.hpp
/// @brief Entropic optimal transport between uniform marginals by log-domain Sinkhorn
/// iterations.
///
/// For a cost C (N×M), marginals a = 1/N, b = 1/M and regularisation ε > 0 the entropic plan
/// minimises ⟨C, π⟩ − ε·H(π), H(π) = −Σ π_ij log π_ij, over plans with row sums a and column
/// sums b. It has the form log π_ij = φ_i + ψ_j − C_ij/ε, and the iterations alternate
///
///     φ_i = log a_i − LSE_j(ψ_j − C_ij/ε),      ψ_j = log b_j − LSE_i(φ_i − C_ij/ε),
///
/// with LSE the log-sum-exp taken after subtracting the maximum, so no exp(−C/ε) is ever formed
/// and a small ε (even 1e-3 of the mean cost) does not underflow. After each ψ update the
/// column sums are exact; the iterations stop when the row-sum error Σ_i |Σ_j π_ij − a_i|
/// (L1) falls to the tolerance or after max_iterations.
///
/// As ε → 0 the plan's cost ⟨C, π⟩ decreases to the exact OT cost (within ε·log N for exact
/// marginals); as ε → ∞ the plan tends to the independent coupling a·bᵀ.
#pragma once

#include <cmath>
#include <stdexcept>
#include <string>

#include "flowmatch/core/errors.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/coupling/coupling.hpp"
#include "flowmatch/detail/parameter_checks.hpp"
#include "flowmatch/detail/validate.hpp"

namespace flowmatch {

/// Options of the Sinkhorn iterations.
template <class Scalar>
struct SinkhornOptions {
  /// The regularisation ε (> 0), in units of the cost, or in units of the mean cost when
  /// epsilon_relative_to_mean_cost is set (then ε_used = epsilon · mean_ij C_ij).
  Scalar epsilon = Scalar(0.05);
  /// Whether epsilon is a fraction of the mean cost rather than an absolute value.
  bool epsilon_relative_to_mean_cost = false;
  /// The largest number of (φ, ψ) updates (≥ 1).
  Index max_iterations = 1000;
  /// Stop once the L1 row-marginal error is at most this (≥ 0).
  Scalar tolerance = Scalar(1e-9);
};

/// The result of Sinkhorn iterations.
template <class Scalar>
struct SinkhornResult {
  Matrix<Scalar> log_plan;            ///< log π, N×M.
  Index iterations = 0;               ///< the number of (φ, ψ) updates run.
  Scalar marginal_error = Scalar(0);  ///< Σ_i |Σ_j π_ij − 1/N| of the returned plan.
  bool converged = false;             ///< whether marginal_error ≤ tolerance.
  Scalar epsilon = Scalar(0);         ///< the regularisation actually used (absolute).

  /// The plan π = exp(log_plan), N×M, entries summing to 1.
  [[nodiscard]] Matrix<Scalar> plan() const { return log_plan.array().exp().matrix(); }
};

namespace detail {

/// LSE over each row of @p values: a column vector.
template <class Derived>
Vector<typename Derived::Scalar> row_log_sum_exp(const Eigen::ArrayBase<Derived>& values) {
  const auto maxima = values.rowwise().maxCoeff().eval();
  return (maxima + (values.colwise() - maxima).exp().rowwise().sum().log()).matrix();
}

}  // namespace detail

/// Runs log-domain Sinkhorn on @p cost (N×M) with uniform marginals. An iteration cap reached
/// before the tolerance is not an error: the result says converged = false and reports the
/// error reached.
/// @throws std::invalid_argument if the cost is empty or not finite, a cost is negative, or an
///         option is out of range (epsilon ≤ 0 or not finite, epsilon relative to a zero mean
///         cost, max_iterations < 1, tolerance < 0 or not finite);
///         flowmatch::numerical_error if the potentials become non-finite (ε so small that
///         C/ε overflows).
template <class Scalar>
[[nodiscard]] SinkhornResult<Scalar> sinkhorn(const Matrix<Scalar>& cost,
                                              const SinkhornOptions<Scalar>& options) {
  using detail::to_text;
  if (cost.rows() < 1 || cost.cols() < 1) {
    throw std::invalid_argument("sinkhorn: cost has shape " + to_text(cost.rows()) + "x" +
                                to_text(cost.cols()) + ", expected at least 1x1");
  }
  detail::require_finite("sinkhorn: cost", cost);
  if ((cost.array() < Scalar(0)).any()) {
    throw std::invalid_argument("sinkhorn: cost has a negative entry " + to_text(cost.minCoeff()) +
                                ", expected >= 0");
  }
  detail::require_positive("sinkhorn: options.epsilon", options.epsilon);
  detail::require_count<Index>("sinkhorn: options.max_iterations", options.max_iterations, 1);
  detail::require_nonnegative("sinkhorn: options.tolerance", options.tolerance);
  SinkhornResult<Scalar> result;
  result.epsilon = options.epsilon;
  if (options.epsilon_relative_to_mean_cost) {
    result.epsilon *= cost.mean();
    if (!(result.epsilon > Scalar(0))) {
      throw std::invalid_argument(
          "sinkhorn: options.epsilon is relative to the mean cost, which is " +
          to_text(cost.mean()) + "; expected a positive mean cost");
    }
  }

  const Index rows = cost.rows();
  const Index cols = cost.cols();
  const Scalar log_a = -std::log(Scalar(rows));
  const Scalar log_b = -std::log(Scalar(cols));
  const Eigen::Array<Scalar, Eigen::Dynamic, Eigen::Dynamic> log_kernel =
      -cost.array() / result.epsilon;
  Vector<Scalar> phi = Vector<Scalar>::Zero(rows);
  Vector<Scalar> psi = Vector<Scalar>::Zero(cols);
  // LSE_j(ψ_j − C_ij/ε) for every row i: φ's update, and log of row i's sum with φ_i = 0.
  const auto row_lse = [&] {
    return detail::row_log_sum_exp((log_kernel.rowwise() + psi.transpose().array()).eval());
  };
  // Σ_i |exp(φ_i + LSE_i) − a_i|, the row error of the plan (φ, ψ).
  const auto row_error = [&](const Vector<Scalar>& lse) {
    return ((phi + lse).array().exp() - std::exp(log_a)).abs().sum();
  };

  Vector<Scalar> lse = row_lse();
  for (Index iteration = 1; iteration <= options.max_iterations; ++iteration) {
    phi = log_a - lse.array();
    psi = (log_b - detail::row_log_sum_exp(
                       (log_kernel.transpose().rowwise() + phi.transpose().array()).eval())
                       .array())
              .matrix();
    if (!phi.allFinite() || !psi.allFinite()) {
      throw numerical_error("sinkhorn: potentials became non-finite at iteration " +
                                to_text(iteration) + " with epsilon " + to_text(result.epsilon),
                            0.0);
    }
    result.iterations = iteration;
    lse = row_lse();
    result.marginal_error = row_error(lse);
    if (result.marginal_error <= options.tolerance) {
      result.converged = true;
      break;
    }
  }
  result.log_plan = (log_kernel.colwise() + phi.array()).rowwise() + psi.transpose().array();
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
