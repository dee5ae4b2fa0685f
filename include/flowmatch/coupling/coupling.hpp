/// @file coupling.hpp
/// @brief Pieces shared by the minibatch couplings: the squared Euclidean cost matrix and the
/// pairing of a source batch with a target batch by an assignment or by a transport plan.
///
/// A coupling of a source batch x₀ (d×N, one column per sample) and a target batch x₁ (d×M)
/// is a nonnegative N×M matrix π (a plan); a coupled batch is a pair of d×K matrices whose
/// column k is one pair (x₀_i, x₁_j) drawn according to π.
#pragma once

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"

namespace flowmatch {

/// A batch of pairs: column k of x0 is paired with column k of x1.
template <class Scalar>
struct CoupledBatch {
  Matrix<Scalar> x0;  ///< source samples, d×K.
  Matrix<Scalar> x1;  ///< target samples, d×K.
};

/// How pairs are drawn from a transport plan π (N×M).
enum class PlanSampling {
  /// N pairs (i, j) drawn independently from the whole plan, P(i, j) = π_ij / Σπ, with
  /// replacement (a source or target column may appear several times or not at all).
  flattened,
  /// One pair per source column i, in order: j drawn from the row's conditional distribution
  /// P(j | i) = π_ij / Σ_j π_ij. Every source column appears exactly once.
  per_source_row,
};

namespace detail {

/// Throws std::invalid_argument unless x0 and x1 are nonempty, finite and have the same number
/// of rows; with @p same_count also the same number of columns.
template <class Scalar>
void require_batch_pair(const char* function, const Matrix<Scalar>& x0, const Matrix<Scalar>& x1,
                        bool same_count) {
  const auto name = [function](const char* argument) { return argument_name(function, argument); };
  if (x0.rows() < 1 || x0.cols() < 1) {
    reject_argument(name("x0"), "has shape " + to_text(x0.rows()) + "x" + to_text(x0.cols()),
                    "at least 1x1");
  }
  if (x1.rows() != x0.rows() || (same_count && x1.cols() != x0.cols())) {
    require_shape(name("x1"), x1, x0.rows(), same_count ? x0.cols() : Index(-1));
  }
  if (x1.cols() < 1) {
    reject_argument(name("x1"), "has shape " + to_text(x1.rows()) + "x0", "at least 1 column");
  }
  // The names are composed only for a batch that fails.
  if (!x0.allFinite()) require_finite(name("x0"), x0);
  if (!x1.allFinite()) require_finite(name("x1"), x1);
}

/// The index k with cumulative[k − 1] ≤ u < cumulative[k] for u uniform on [0, total), where
/// @p cumulative is nondecreasing with last entry total > 0: a draw from the weights whose
/// running sums are @p cumulative.
template <class Scalar, class Generator>
Index draw_from_cumulative(const std::vector<Scalar>& cumulative, Generator& generator) {
  std::uniform_real_distribution<double> uniform(0.0, static_cast<double>(cumulative.back()));
  const auto draw = static_cast<Scalar>(uniform(generator));
  const auto found = std::upper_bound(cumulative.begin(), cumulative.end(), draw);
  // upper_bound passes the end only if rounding made draw equal to the total; the last entry
  // with positive weight is then the right answer.
  auto index = static_cast<Index>(found - cumulative.begin());
  if (index == static_cast<Index>(cumulative.size())) {
    --index;
    while (index > 0 && cumulative[index] == cumulative[index - 1]) --index;
  }
  return index;
}

/// Throws std::invalid_argument unless @p column_of_row has @p rows entries, each in [0, cols).
inline void require_assignment(const char* function, const std::vector<Index>& column_of_row,
                               Index rows, Index cols) {
  if (static_cast<Index>(column_of_row.size()) != rows) {
    reject_argument(argument_name(function, "column_of_row"),
                    "has " + to_text(column_of_row.size()) + " entries", to_text(rows));
  }
  for (std::size_t row = 0; row < column_of_row.size(); ++row) {
    if (column_of_row[row] < 0 || column_of_row[row] >= cols) {
      reject_argument(argument_name(function, "column_of_row[" + to_text(row) + "]"),
                      is_value(column_of_row[row]), "in [0, " + to_text(cols) + ")");
    }
  }
}

/// Running sums of @p weights (any Eigen expression of nonnegative entries).
template <class Derived>
std::vector<typename Derived::Scalar> cumulative_sums(const Eigen::DenseBase<Derived>& weights) {
  std::vector<typename Derived::Scalar> sums;
  sums.reserve(static_cast<std::size_t>(weights.size()));
  typename Derived::Scalar running(0);
  for (Index k = 0; k < weights.size(); ++k) {
    running += weights.derived().coeff(k);
    sums.push_back(running);
  }
  return sums;
}

}  // namespace detail

/// The squared Euclidean cost C_ij = ‖x0_i − x1_j‖² (N×M) between the columns of @p x0 (d×N)
/// and @p x1 (d×M), computed with one matrix product as ‖x0_i‖² + ‖x1_j‖² − 2·x0_iᵀx1_j and
/// clamped at 0 (rounding can make the expanded form slightly negative).
/// @throws std::invalid_argument if a batch is empty, the row counts differ or an entry is not
///         finite.
template <class Scalar>
[[nodiscard]] Matrix<Scalar> squared_euclidean_cost(const Matrix<Scalar>& x0,
                                                    const Matrix<Scalar>& x1) {
  detail::require_batch_pair("squared_euclidean_cost", x0, x1, false);
  Matrix<Scalar> cost(x0.cols(), x1.cols());
  cost.noalias() = Scalar(-2) * x0.transpose() * x1;
  cost.colwise() += x0.colwise().squaredNorm().transpose();
  cost.rowwise() += x1.colwise().squaredNorm();
  return cost.cwiseMax(Scalar(0));
}

/// Pairs column i of @p x0 with column column_of_row[i] of @p x1 (an assignment as returned by
/// solve_assignment): the result holds x0 unchanged and x1 reordered.
/// @throws std::invalid_argument if the batches differ in shape, column_of_row does not have
///         one entry per column of x0, or an entry is outside [0, x1.cols()).
template <class Scalar>
[[nodiscard]] CoupledBatch<Scalar> couple_by_assignment(const Matrix<Scalar>& x0,
                                                        const Matrix<Scalar>& x1,
                                                        const std::vector<Index>& column_of_row) {
  detail::require_shape("couple_by_assignment: x1", x1, x0.rows(), -1);
  detail::require_assignment("couple_by_assignment", column_of_row, x0.cols(), x1.cols());
  CoupledBatch<Scalar> pairs{x0, Matrix<Scalar>(x1.rows(), x0.cols())};
  for (Index row = 0; row < x0.cols(); ++row) {
    pairs.x1.col(row) = x1.col(column_of_row[static_cast<std::size_t>(row)]);
  }
  return pairs;
}

/// Draws pairs from the transport plan @p plan (N×M) between the columns of @p x0 (d×N) and
/// @p x1 (d×M) as @p sampling says, using only @p generator. An exact OT plan (a permutation
/// with mass 1/N per row) sampled `flattened` is a resampling of the assigned pairs with
/// replacement.
/// @throws std::invalid_argument if the shapes disagree, an entry of the plan is negative or not
///         finite, the plan's total mass is zero, or (per_source_row) a row has zero mass.
template <class Scalar, std::uniform_random_bit_generator Generator>
[[nodiscard]] CoupledBatch<Scalar> sample_pairs_from_plan(const Matrix<Scalar>& plan,
                                                          const Matrix<Scalar>& x0,
                                                          const Matrix<Scalar>& x1,
                                                          Generator& generator,
                                                          PlanSampling sampling) {
  detail::require_batch_pair("sample_pairs_from_plan", x0, x1, false);
  detail::require_shape("sample_pairs_from_plan: plan", plan, x0.cols(), x1.cols());
  detail::require_finite("sample_pairs_from_plan: plan", plan);
  if ((plan.array() < Scalar(0)).any()) {
    detail::reject_argument("sample_pairs_from_plan: plan",
                            "has a negative entry of value " + detail::to_text(plan.minCoeff()),
                            "entries >= 0");
  }
  const Index count = x0.cols();
  CoupledBatch<Scalar> pairs{Matrix<Scalar>(x0.rows(), count), Matrix<Scalar>(x1.rows(), count)};
  if (sampling == PlanSampling::flattened) {
    const auto cumulative = detail::cumulative_sums(plan.reshaped());
    if (!(cumulative.back() > Scalar(0))) {
      detail::reject_argument("sample_pairs_from_plan: plan", "has total mass 0", "a mass > 0");
    }
    for (Index k = 0; k < count; ++k) {
      const Index flat = detail::draw_from_cumulative(cumulative, generator);
      pairs.x0.col(k) = x0.col(flat % plan.rows());  // column-major: flat = i + N·j
      pairs.x1.col(k) = x1.col(flat / plan.rows());
    }
    return pairs;
  }
  for (Index row = 0; row < count; ++row) {
    const auto cumulative = detail::cumulative_sums(plan.row(row));
    if (!(cumulative.back() > Scalar(0))) {
      detail::reject_argument("sample_pairs_from_plan: plan",
                              "has mass 0 in row " + detail::to_text(row),
                              "a mass > 0 in every row for per_source_row sampling");
    }
    pairs.x0.col(row) = x0.col(row);
    pairs.x1.col(row) = x1.col(detail::draw_from_cumulative(cumulative, generator));
  }
  return pairs;
}

}  // namespace flowmatch
