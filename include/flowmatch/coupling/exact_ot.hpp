/// @file exact_ot.hpp
/// @brief Exact minibatch optimal transport: a dense linear assignment solver and the exact OT
/// pairing of two batches under squared Euclidean cost.
///
/// For a cost matrix C (N×M, N ≤ M) the solver finds the injective assignment σ of rows to
/// columns minimising Σ_i C_{iσ(i)}, with dual potentials u (rows) and v (columns, v ≤ 0) that
/// certify it. It follows Jonker and Volgenant (Computing 38, 1987): reduced costs
/// C_ij − u_i − v_j stay ≥ 0 and vanish on the assignment, and free rows are assigned along
/// shortest augmenting paths (Dijkstra over the columns), after an initialisation that assigns
/// most rows cheaply. For a square cost that initialisation is column reduction and an ε-scaling
/// auction (D. P. Bertsekas, Ann. Oper. Res. 14, 1988), which bring the potentials close to
/// optimal; augmenting row reduction (the auction without ε, which keeps the reduced costs
/// exact) then assigns most of the remaining rows.
/// Rows are mostly read through short lists of their cheapest columns with a lower bound on the
/// rest, and in full only when a list cannot vouch for its row (detail/candidate_columns.hpp).
/// Potentials and path lengths are computed in double (or in Scalar if it is wider). Worst case
/// O(N²M) time; besides the cost (and its transpose when N < M), O(N + M) memory.
///
/// At the end u_i + v_j ≤ C_ij for all i, j, u_i + v_{σ(i)} = C_{iσ(i)} on the assignment and
/// v_j = 0 on unassigned columns, so Σu + Σv equals the total cost: the potentials certify
/// optimality by linear-programming duality. These hold up to the rounding of the potentials:
/// a few units in the last place of max(|C|, |u|, |v|) for each entry.
#pragma once

#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "flowmatch/core/errors.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/coupling/coupling.hpp"
#include "flowmatch/detail/linear_assignment.hpp"
#include "flowmatch/detail/validate.hpp"

namespace flowmatch {

/// An optimal assignment and the dual potentials that certify it.
template <class Scalar>
struct AssignmentResult {
  /// column_of_row[i] is the column assigned to row i; distinct columns for distinct rows.
  std::vector<Index> column_of_row;
  /// Σ_i C_{i, column_of_row[i]}, the minimum over all injective assignments.
  Scalar total_cost = Scalar(0);
  /// u (length N) and v (length M, v ≤ 0) with u_i + v_j ≤ C_ij and Σu + Σv = total_cost.
  Vector<Scalar> row_potential;
  Vector<Scalar> column_potential;  ///< v, see row_potential.
};

/// Solves the linear assignment problem min Σ_i C_{iσ(i)} over injective σ for @p cost (N×M)
/// with 1 ≤ N ≤ M (a rectangular cost with more columns assigns every row and leaves M − N
/// columns unused; more rows than columns is rejected: transpose the cost instead).
/// Ties are broken deterministically.
/// @throws std::invalid_argument if the cost is empty, has more rows than columns, or has a
///         non-finite entry; flowmatch::numerical_error if path lengths or potentials overflow
///         (costs spanning nearly the whole range of Scalar).
template <class Scalar>
[[nodiscard]] AssignmentResult<Scalar> solve_assignment(const Matrix<Scalar>& cost) {
  const Index rows = cost.rows();
  const Index cols = cost.cols();
  if (rows < 1 || rows > cols) {
    detail::reject_argument("solve_assignment: cost",
                            "has shape " + detail::to_text(rows) + "x" + detail::to_text(cols),
                            "1 <= rows <= columns");
  }
  detail::require_finite("solve_assignment: cost", cost);

  using Work = std::common_type_t<Scalar, double>;
  using Solver = detail::LinearAssignmentSolver<Scalar, Work>;
  std::vector<Index> column_of_row(static_cast<std::size_t>(rows));
  Eigen::Array<Work, Eigen::Dynamic, 1> u(rows);
  Eigen::Array<Work, Eigen::Dynamic, 1> v(cols);
  if (rows == cols) {
    // The solver reads rows contiguously, which the columns of a column-major cost are: it
    // solves the transposed problem (columns assigned to rows), whose column potentials are u.
    auto transposed = Solver(cost).solve();
    u = std::move(transposed.column_potential);
    for (Index col = 0; col < cols; ++col) {
      const Index row = transposed.column_of_row[static_cast<std::size_t>(col)];
      column_of_row[static_cast<std::size_t>(row)] = col;
      v(col) = static_cast<Work>(cost(row, col)) - u(row);  // v_j = C_σ⁻¹(j)j − u_σ⁻¹(j)
    }
    // Every column is used: u + c and v − c certify the assignment as well as u and v do, and
    // c = max_j v_j makes v ≤ 0.
    const Work top = v.maxCoeff();
    v -= top;
    u += top;
  } else {
    const Matrix<Scalar> row_costs = detail::transpose_by_tiles(cost);
    auto solved = Solver(row_costs).solve();
    column_of_row = std::move(solved.column_of_row);
    v = std::move(solved.column_potential);
    for (Index row = 0; row < rows; ++row) {
      const Index col = column_of_row[static_cast<std::size_t>(row)];
      u(row) = static_cast<Work>(cost(row, col)) - v(col);  // u_i = C_iσ(i) − v_σ(i)
    }
  }
  Work total(0);
  for (Index row = 0; row < rows; ++row) {
    total += static_cast<Work>(cost(row, column_of_row[static_cast<std::size_t>(row)]));
  }
  AssignmentResult<Scalar> result{std::move(column_of_row), static_cast<Scalar>(total),
                                  u.matrix().template cast<Scalar>(),
                                  v.matrix().template cast<Scalar>()};
  if (!std::isfinite(result.total_cost) || !result.row_potential.allFinite() ||
      !result.column_potential.allFinite()) {
    throw numerical_error("solve_assignment: the potentials overflowed", 0.0);
  }
  return result;
}

/// Exact OT pairing of the columns of @p x0 (d×N) with those of @p x1 (d×N) under the squared
/// Euclidean cost: the permutation σ minimising Σ_i ‖x0_i − x1_σ(i)‖² (total_cost is this sum,
/// not divided by N), with the dual potentials. Use couple_by_assignment to reorder x1, or
/// sample_pairs_from_plan with the permutation plan to resample pairs with replacement.
/// @throws std::invalid_argument if the batches are empty, differ in shape or are not finite.
template <class Scalar>
[[nodiscard]] AssignmentResult<Scalar> exact_ot_pairing(const Matrix<Scalar>& x0,
                                                        const Matrix<Scalar>& x1) {
  detail::require_batch_pair("exact_ot_pairing", x0, x1, true);
  return solve_assignment(squared_euclidean_cost(x0, x1));
}

/// The plan of an assignment as an N×M matrix: π_{iσ(i)} = 1/N, zero elsewhere. Sampling it
/// with PlanSampling::flattened draws N assigned pairs uniformly with replacement;
/// PlanSampling::per_source_row gives back the assignment itself.
/// @throws std::invalid_argument unless cols ≥ 1 and every entry of column_of_row lies in
///         [0, cols).
template <class Scalar>
[[nodiscard]] Matrix<Scalar> assignment_plan(const std::vector<Index>& column_of_row, Index cols) {
  const auto rows = static_cast<Index>(column_of_row.size());
  if (rows < 1 || cols < 1) {
    detail::reject_argument(
        "assignment_plan: column_of_row and cols",
        "give " + detail::to_text(rows) + " rows and " + detail::to_text(cols) + " columns",
        "at least 1 each");
  }
  detail::require_assignment("assignment_plan", column_of_row, rows, cols);
  Matrix<Scalar> plan = Matrix<Scalar>::Zero(rows, cols);
  for (Index row = 0; row < rows; ++row) {
    plan(row, column_of_row[static_cast<std::size_t>(row)]) = Scalar(1) / Scalar(rows);
  }
  return plan;
}

}  // namespace flowmatch
