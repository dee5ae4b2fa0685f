/// @file exact_ot.hpp
/// @brief Exact minibatch optimal transport: a dense linear assignment solver (Jonker–Volgenant
/// shortest augmenting paths) and the exact OT pairing of two batches under squared Euclidean
/// cost.
///
/// For a cost matrix C (N×M, N ≤ M) the solver finds the injective assignment σ of rows to
/// columns minimising Σ_i C_{iσ(i)}. It keeps dual potentials u (rows) and v (columns, v ≤ 0)
/// with reduced costs C_ij − u_i − v_j ≥ 0 and assigns each row in turn along a shortest
/// augmenting path in the reduced costs (Dijkstra over the columns), then raises the potentials
/// by the path lengths so that the reduced costs stay nonnegative and vanish on the assignment
/// (R. Jonker and A. Volgenant, Computing 38, 1987; D. F. Crouse, IEEE Trans. Aerosp. Electron.
/// Syst. 52(4), 2016). O(N²M) time, O(NM) memory for the cost only.
///
/// At the end u_i + v_j ≤ C_ij for all i, j, u_i + v_{σ(i)} = C_{iσ(i)} on the assignment and
/// v_j = 0 on unassigned columns, so Σu + Σv equals the total cost: the potentials certify
/// optimality by linear-programming duality.
#pragma once

#include <algorithm>
#include <cstddef>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "flowmatch/core/errors.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/coupling/coupling.hpp"
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
///         non-finite entry; flowmatch::numerical_error if path lengths overflow (costs near
///         the largest finite value of Scalar).
template <class Scalar>
[[nodiscard]] AssignmentResult<Scalar> solve_assignment(const Matrix<Scalar>& cost) {
  const Index rows = cost.rows();
  const Index cols = cost.cols();
  if (rows < 1 || rows > cols) {
    throw std::invalid_argument("solve_assignment: cost has shape " + detail::to_text(rows) + "x" +
                                detail::to_text(cols) + ", expected 1 <= rows <= columns");
  }
  detail::require_finite("solve_assignment: cost", cost);

  constexpr Scalar infinity = std::numeric_limits<Scalar>::infinity();
  const auto at = [](Index k) { return static_cast<std::size_t>(k); };
  AssignmentResult<Scalar> result{std::vector<Index>(at(rows), -1), Scalar(0),
                                  Vector<Scalar>::Zero(rows), Vector<Scalar>::Zero(cols)};
  auto& column_of_row = result.column_of_row;
  auto& u = result.row_potential;
  auto& v = result.column_potential;
  std::vector<Index> row_of_column(at(cols), -1);
  std::vector<Scalar> shortest(at(cols));    // shortest reduced path length to each column
  std::vector<Index> predecessor(at(cols));  // the row from which that path enters the column
  std::vector<char> column_scanned(at(cols));
  std::vector<Index> scanned_rows;

  for (Index free_row = 0; free_row < rows; ++free_row) {
    std::fill(shortest.begin(), shortest.end(), infinity);
    std::fill(column_scanned.begin(), column_scanned.end(), char(0));
    scanned_rows.clear();
    Index row = free_row;
    Scalar path_length(0);
    Index sink = -1;
    while (sink < 0) {
      scanned_rows.push_back(row);
      Index closest = -1;
      for (Index col = 0; col < cols; ++col) {
        if (column_scanned[at(col)]) continue;
        const Scalar length = path_length + cost(row, col) - u(row) - v(col);
        if (length < shortest[at(col)]) {
          shortest[at(col)] = length;
          predecessor[at(col)] = row;
        }
        // The closest unscanned column; among equals a free one ends the search sooner.
        if (closest < 0 || shortest[at(col)] < shortest[at(closest)] ||
            (shortest[at(col)] == shortest[at(closest)] && row_of_column[at(col)] < 0)) {
          closest = col;
        }
      }
      path_length = shortest[at(closest)];
      if (!(path_length < infinity)) {
        throw numerical_error("solve_assignment: augmenting path length overflowed at row " +
                                  detail::to_text(free_row),
                              0.0, free_row);
      }
      column_scanned[at(closest)] = 1;
      if (row_of_column[at(closest)] < 0) {
        sink = closest;
      } else {
        row = row_of_column[at(closest)];
      }
    }

    // Raise the potentials by the path lengths: reduced costs stay ≥ 0 and the new path is tight.
    u(free_row) += path_length;
    for (const Index scanned : scanned_rows) {
      if (scanned != free_row) u(scanned) += path_length - shortest[at(column_of_row[at(scanned)])];
    }
    for (Index col = 0; col < cols; ++col) {
      if (column_scanned[at(col)]) v(col) -= path_length - shortest[at(col)];
    }

    // Augment: flip the assignment along the path from the sink back to the free row.
    Index col = sink;
    Index path_row = -1;
    do {
      path_row = predecessor[at(col)];
      row_of_column[at(col)] = path_row;
      std::swap(column_of_row[at(path_row)], col);
    } while (path_row != free_row);
  }

  for (Index row = 0; row < rows; ++row) result.total_cost += cost(row, column_of_row[at(row)]);
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
    throw std::invalid_argument("assignment_plan: " + detail::to_text(rows) + " rows and " +
                                detail::to_text(cols) + " columns, expected at least 1 each");
  }
  detail::require_assignment("assignment_plan", column_of_row, rows, cols);
  Matrix<Scalar> plan = Matrix<Scalar>::Zero(rows, cols);
  for (Index row = 0; row < rows; ++row) {
    plan(row, column_of_row[static_cast<std::size_t>(row)]) = Scalar(1) / Scalar(rows);
  }
  return plan;
}

}  // namespace flowmatch
