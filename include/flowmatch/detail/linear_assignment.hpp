/// @file linear_assignment.hpp
/// @brief The dense linear assignment solver behind solve_assignment (internal): column
/// reduction, ε-scaling auction, augmenting row reduction and shortest augmenting paths.
///
/// The solver keeps only column potentials v. A row i has the implicit potential
/// u_i = min_j (C_ij − v_j), and the invariant of the exact phases is that an assigned row
/// attains this minimum at its own column: u_i = C_{iσ(i)} − v_{σ(i)}. Then C_ij − u_i − v_j ≥ 0
/// everywhere with equality on the assignment, so a complete assignment is optimal (R. Jonker
/// and A. Volgenant, Computing 38, 1987). v only ever decreases, which is what lets a short list
/// of each row's cheapest columns stand for the whole row (candidate_columns.hpp).
#pragma once

#include <algorithm>
#include <cstddef>
#include <deque>
#include <functional>
#include <limits>
#include <numeric>
#include <utility>
#include <vector>

#include "flowmatch/core/errors.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/candidate_columns.hpp"

namespace flowmatch::detail {

/// Lowers each distance d_j (j < @p count) to the path length through row @p row where that is
/// shorter, d_j = min(d_j, shift + C_{row,j} + offset_j), and then records the row as the
/// column's predecessor. offset_j is −v_j on unscanned columns and +∞ on scanned ones, which are
/// thereby never touched. A branch-free loop over contiguous arrays, which compilers vectorise.
template <class Scalar, class Work>
void relax_row(const Scalar* row_cost, const Work* offset, Work* distance, Index* predecessor,
               Index count, Work shift, Index row) {
  for (Index col = 0; col < count; ++col) {
    const Work candidate = shift + (static_cast<Work>(row_cost[col]) + offset[col]);
    const bool shorter = candidate < distance[col];
    distance[col] = shorter ? candidate : distance[col];
    predecessor[col] = shorter ? row : predecessor[col];
  }
}

/// The number of the @p count values holding @p target (a vectorisable loop).
template <class Work>
Index count_equal(const Work* values, Index count, Work target) {
  Index equal = 0;
  for (Index k = 0; k < count; ++k) equal += values[k] == target ? 1 : 0;
  return equal;
}

/// The transpose of @p matrix, copied tile by tile so that reads and writes both stay in cache.
template <class Scalar>
Matrix<Scalar> transpose_by_tiles(const Matrix<Scalar>& matrix) {
  constexpr Index tile = 64;
  Matrix<Scalar> transposed(matrix.cols(), matrix.rows());
  for (Index col = 0; col < matrix.cols(); col += tile) {
    for (Index row = 0; row < matrix.rows(); row += tile) {
      const Index height = std::min(tile, matrix.rows() - row);
      const Index width = std::min(tile, matrix.cols() - col);
      transposed.block(col, row, width, height) = matrix.block(row, col, height, width).transpose();
    }
  }
  return transposed;
}

/// An optimal assignment with its column potentials in the working precision.
template <class Work>
struct ColumnPotentialAssignment {
  std::vector<Index> column_of_row;  ///< σ(i); distinct columns for distinct rows.
  Eigen::Array<Work, Eigen::Dynamic, 1> column_potential;  ///< v.
};

/// Solves min Σ_i C_{iσ(i)} over injective σ for a finite N×M cost with 1 ≤ N ≤ M, given as
/// the M×N matrix @p row_costs whose column i holds row i of the cost (the solver reads the cost
/// one row at a time).
///
/// Costs are read as @p Scalar; potentials and path lengths are computed in @p Work. For a
/// square cost, column reduction and an ε-scaling auction first bring v close to optimal
/// potentials and most rows to a column that is exactly their minimum. For N < M the solver
/// starts from v = 0 instead, and since v_j only changes on a column that is or becomes
/// assigned, v ≤ 0 with v_j = 0 on the unassigned columns at the end. Augmenting row reduction
/// then assigns most free rows, and the rest are assigned one at a time along shortest
/// augmenting paths. Apart from column reduction, the auction's coarse rounds and the first row
/// of each path, rows are read through their candidate lists.
template <class Scalar, class Work>
class LinearAssignmentSolver {
 public:
  using WorkArray = Eigen::Array<Work, Eigen::Dynamic, 1>;

  /// Keeps a reference to @p row_costs, which must outlive the solver.
  explicit LinearAssignmentSolver(const Matrix<Scalar>& row_costs)
      : row_costs_(row_costs),
        rows_(row_costs.cols()),
        cols_(row_costs.rows()),
        column_potential_(WorkArray::Zero(cols_)),
        reduced_row_(cols_),
        column_of_row_(at(rows_), -1),
        row_of_column_(at(cols_), -1),
        candidates_(rows_, cols_, candidate_count),
        distance_(cols_),
        candidate_offset_(cols_),
        predecessor_(at(cols_)) {}

  /// Runs every phase and returns the optimal assignment with its column potentials.
  /// @throws numerical_error if a path length overflows.
  ColumnPotentialAssignment<Work> solve() {
    if (rows_ == cols_) {
      reduce_columns();
      run_auction();
    }
    std::vector<Index> free_rows;
    for (Index row = 0; row < rows_; ++row) {
      if (column_of_row_[at(row)] < 0) free_rows.push_back(row);
    }
    free_rows = reduce_rows_by_augmentation(std::move(free_rows));
    for (const Index row : free_rows) augment_along_shortest_path(row);
    return {std::move(column_of_row_), std::move(column_potential_)};
  }

 private:
  static constexpr Work infinity = std::numeric_limits<Work>::infinity();
  static constexpr Index candidate_count = 32;  // columns kept per row
  // An auction round keeps lists only if ε is this many times smaller than their typical spread:
  // each bid lowers a v_j by at least ε, and a list whose values all rose past T_i is rebuilt.
  static constexpr Work spread_per_epsilon = 4;
  static constexpr Index block_size = 256;  // columns checked at once for the minimum distance

  /// The smallest reduced value m₁ = C_ij₁ − v_j₁ of a row with its column j₁, and a lower bound
  /// m₂ ≤ C_ij − v_j on every other column j with the column attaining it (second_col = −1 when
  /// m₂ is only the bound T_i of the row's list; m₂ = +∞ when the cost has a single column).
  struct TwoSmallest {
    Work smallest;
    Index col;
    Work second;
    Index second_col;
  };

  /// A row scanned during a path search whose list is read up to position `next`: every
  /// column it has not relaxed yet lies at path length ≥ limit, which is shift + a_k,next for a
  /// listed column and shift + T_k past the list (shift + u_k being the row's distance).
  struct Horizon {
    Work limit;
    Index row;
    Index next;
    Work shift;
    friend bool operator>(const Horizon& a, const Horizon& b) {
      return a.limit > b.limit || (a.limit == b.limit && (a.row > b.row));
    }
  };

  static std::size_t at(Index k) { return static_cast<std::size_t>(k); }

  [[noreturn]] static void throw_overflow() {
    throw numerical_error("solve_assignment: an augmenting path length overflowed", 0.0);
  }

  Work cost_at(Index row, Index col) const { return static_cast<Work>(row_costs_(col, row)); }

  void assign(Index row, Index col) {
    column_of_row_[at(row)] = col;
    row_of_column_[at(col)] = row;
  }

  /// relax_row over every column with the distances in distance_.
  void relax(Index row, Work shift) {
    relax_row(row_costs_.col(row).data(), candidate_offset_.data(), distance_.data(),
              predecessor_.data(), cols_, shift, row);
  }

  void rebuild_candidates(Index row) {
    candidates_.rebuild(row, row_costs_.col(row).data(), column_potential_);
  }

  /// m₁, m₂ of @p row from its list: the two smallest listed values C_ij − v_j (read until the
  /// lower bounds a_ij reach m₂), with m₂ capped at T_i, the bound on every column off the list.
  /// m₁ is the row's minimum if m₁ ≤ T_i; otherwise the list is rebuilt first, or the whole row
  /// is read instead if the list is not due for a rebuild or @p may_rebuild is false.
  TwoSmallest two_smallest(Index row, bool may_rebuild = true) {
    const bool built = candidates_.built(row);
    TwoSmallest found = built ? two_smallest_listed(row) : TwoSmallest{infinity, -1, infinity, -1};
    if (built && !(found.smallest > candidates_.bound(row))) {
      candidates_.record_use(row);
    } else {
      if (!candidates_.record_shortfall(row) || !may_rebuild) return two_smallest_in_full(row);
      rebuild_candidates(row);
      found = two_smallest_listed(row);
    }
    if (found.second > candidates_.bound(row)) {
      found.second = candidates_.bound(row);
      found.second_col = -1;
    }
    return found;
  }

  /// m₁, m₂ of @p row from all its columns (ties to the lower column).
  TwoSmallest two_smallest_in_full(Index row) {
    reduced_row_ = row_costs_.col(row).array().template cast<Work>() - column_potential_;
    const auto first_of = [this](Work value) {
      return static_cast<Index>(std::find(reduced_row_.begin(), reduced_row_.end(), value) -
                                reduced_row_.begin());
    };
    TwoSmallest found{reduced_row_.minCoeff(), -1, infinity, -1};
    found.col = first_of(found.smallest);
    if (cols_ > 1) {
      reduced_row_(found.col) = infinity;
      found.second = reduced_row_.minCoeff();
      found.second_col = first_of(found.second);
    }
    return found;
  }

  TwoSmallest two_smallest_listed(Index row) const {
    TwoSmallest found{infinity, -1, infinity, -1};
    const auto columns = candidates_.columns(row);
    const auto costs = candidates_.costs(row);
    const auto lower_bounds = candidates_.values(row);
    for (std::size_t k = 0; k < columns.size(); ++k) {
      if (found.second_col >= 0 && lower_bounds[k] >= found.second) break;
      const Work value = costs[k] - column_potential_(columns[k]);
      if (found.col < 0 || value < found.smallest) {
        found.second = found.smallest;
        found.second_col = found.col;
        found.smallest = value;
        found.col = columns[k];
      } else if (found.second_col < 0 || value < found.second) {
        found.second = value;
        found.second_col = columns[k];
      }
    }
    return found;
  }

  /// Column reduction: v_j = min_i C_ij, and column j goes to its minimising row (the first one)
  /// unless that row already has a column. Every reduced cost is then ≥ 0 and zero on the
  /// assignment. The minima are taken row by row, as relaxations with zero offsets.
  void reduce_columns() {
    candidate_offset_.setZero();
    distance_.setConstant(infinity);
    for (Index row = 0; row < rows_; ++row) relax(row, Work(0));
    column_potential_ = distance_;
    for (Index col = 0; col < cols_; ++col) {
      const Index row = predecessor_[at(col)];
      if (column_of_row_[at(row)] < 0) assign(row, col);
    }
  }

  /// Bidding rounds of the auction algorithm (D. P. Bertsekas, Ann. Oper. Res. 14, 1988) with
  /// ε-scaling, for a square cost after column reduction: in each round every row starts free,
  /// and a free row i bids for the column j₁ of its smallest reduced value m₁, lowering v_j₁ by
  /// m₂ − m₁ + ε (m₂ ≤ every other reduced value), which displaces the row holding j₁. A round
  /// ends when every row has a column within ε of its row minimum; ε shrinks from a tenth of the
  /// cost range by a factor of five per round down to 10⁻⁶ of the range. The rounds only bring v
  /// close to optimal potentials: afterwards the rows whose column is not exactly their minimum
  /// are freed again, and the exact phases finish. A round that runs out of its bid budget (a
  /// fixed number of bids per row) ends the auction.
  void run_auction() {
    // After column reduction min_j v_j is the smallest cost.
    const Work range = row_costs_.template cast<Work>().maxCoeff() - column_potential_.minCoeff();
    if (!(range > 0 && range < infinity)) return;
    for (Work epsilon = range / 10; epsilon >= range * Work(1e-6); epsilon /= 5) {
      if (!run_auction_round(epsilon)) break;
    }
    for (Index row = 0; row < rows_; ++row) {
      const Index col = column_of_row_[at(row)];
      if (col >= 0 && cost_at(row, col) - column_potential_(col) > two_smallest(row).smallest) {
        column_of_row_[at(row)] = -1;
        row_of_column_[at(col)] = -1;
      }
    }
  }

  /// The median spread T_i − a_i0 of the values on the lists of a few rows spread over the
  /// cost, rebuilt now (+∞ when the lists hold every column).
  Work typical_list_spread() {
    constexpr Index samples = 16;
    std::vector<Work> spreads;
    for (Index sample = 0; sample < std::min(samples, rows_); ++sample) {
      const Index row = sample * rows_ / std::min(samples, rows_);
      rebuild_candidates(row);
      // 0 if the values overflowed to +∞ (∞ − ∞): the lists are then of no use.
      spreads.push_back(std::max(Work(0), candidates_.bound(row) - candidates_.values(row)[0]));
    }
    const auto middle = spreads.begin() + static_cast<std::ptrdiff_t>(spreads.size() / 2);
    std::nth_element(spreads.begin(), middle, spreads.end());
    return *middle;
  }

  /// One bidding round at @p epsilon; returns whether it completed within its bid budget.
  bool run_auction_round(Work epsilon) {
    constexpr Index bids_per_row = 64;
    const bool use_lists = epsilon <= typical_list_spread() / spread_per_epsilon;
    std::fill(column_of_row_.begin(), column_of_row_.end(), -1);
    std::fill(row_of_column_.begin(), row_of_column_.end(), -1);
    std::deque<Index> bidders(at(rows_));
    std::iota(bidders.begin(), bidders.end(), Index(0));
    for (Index bids = 0; !bidders.empty(); ++bids) {
      if (bids == bids_per_row * rows_) return false;
      const Index row = bidders.front();
      bidders.pop_front();
      const TwoSmallest found = two_smallest(row, use_lists);
      // With a single column nothing competes: the bid is ε.
      column_potential_(found.col) -=
          (found.second < infinity ? found.second - found.smallest : Work(0)) + epsilon;
      const Index displaced = row_of_column_[at(found.col)];
      assign(row, found.col);
      if (displaced >= 0) {
        column_of_row_[at(displaced)] = -1;
        bidders.push_back(displaced);
      }
    }
    return true;
  }

  /// Augmenting row reduction, the auction without ε: a free row i takes the column j₁ of its
  /// smallest reduced value m₁ and lowers v_j₁ by m₂ − m₁ (m₂ ≤ every other reduced value), so
  /// that j₁ stays a minimiser of row i; the row previously on j₁ becomes free and is processed
  /// in turn. A row whose two smallest values tie on assigned columns would only swap places
  /// with another row: it is left for the shortest-path phase, as is every row once the step
  /// budget is spent. Returns the rows still free, in order.
  std::vector<Index> reduce_rows_by_augmentation(std::vector<Index> pending) {
    constexpr Index steps_per_row = 4;
    const Index step_budget = steps_per_row * rows_;
    std::vector<Index> deferred;
    std::size_t next = 0;
    for (Index step = 0; next < pending.size() && step < step_budget; ++step) {
      const Index row = pending[next++];
      TwoSmallest found = two_smallest(row);
      if (found.smallest < found.second) {
        // With a single column (m₂ = ∞) nothing competes: v stays.
        if (found.second < infinity) column_potential_(found.col) -= found.second - found.smallest;
      } else if (row_of_column_[at(found.col)] >= 0) {
        if (found.second_col < 0 || row_of_column_[at(found.second_col)] >= 0) {
          deferred.push_back(row);
          continue;
        }
        found.col = found.second_col;
      }
      const Index displaced = row_of_column_[at(found.col)];
      assign(row, found.col);
      if (displaced >= 0) {
        column_of_row_[at(displaced)] = -1;
        pending.push_back(displaced);
      }
    }
    deferred.insert(deferred.end(), pending.begin() + static_cast<std::ptrdiff_t>(next),
                    pending.end());
    return deferred;
  }

  void push_horizon(const Horizon& horizon) {
    horizons_.push_back(horizon);
    std::push_heap(horizons_.begin(), horizons_.end(), std::greater<>());
  }

  /// Starts the scan of @p row, entered at its own column with path length shift + u_k.
  void scan_row(Index row, Work shift) {
    if (!candidates_.built(row)) rebuild_candidates(row);
    push_horizon({shift + candidates_.values(row)[0], row, 0, shift});
  }

  /// Relaxes the listed columns of the horizon's row from position `next` on while their lower
  /// bound shift + a_kj lies below @p closest, lowering @p closest with the new distances, and
  /// records where the row stopped; past the list the row is relaxed in full, and its list is
  /// rebuilt when due.
  void advance(const Horizon& horizon, Work& closest) {
    const Index row = horizon.row;
    if (horizon.next == candidates_.length()) {
      relax(row, horizon.shift);
      if (candidates_.record_shortfall(row)) rebuild_candidates(row);
      closest = distance_.minCoeff();
      return;
    }
    const auto columns = candidates_.columns(row);
    const auto costs = candidates_.costs(row);
    const auto lower_bounds = candidates_.values(row);
    Index next = horizon.next;
    for (; next < candidates_.length() && horizon.shift + lower_bounds[at(next)] < closest;
         ++next) {
      const Index col = columns[at(next)];
      const Work candidate = horizon.shift + (costs[at(next)] + candidate_offset_(col));
      if (candidate < distance_(col)) {
        distance_(col) = candidate;
        predecessor_[at(col)] = row;
        closest = std::min(closest, candidate);
      }
    }
    const Work rest = next < candidates_.length() ? lower_bounds[at(next)] : candidates_.bound(row);
    if (rest < infinity) push_horizon({horizon.shift + rest, row, next, horizon.shift});
  }

  /// The smallest tentative distance, after advancing every scanned row whose horizon lies below
  /// it.
  Work closest_distance() {
    Work closest = distance_.minCoeff();
    while (!horizons_.empty() && horizons_.front().limit < closest) {
      std::pop_heap(horizons_.begin(), horizons_.end(), std::greater<>());
      const Horizon horizon = horizons_.back();
      horizons_.pop_back();
      advance(horizon, closest);
    }
    return closest;
  }

  /// Assigns @p free_row along a shortest augmenting path in the reduced costs C_ij − u_i − v_j
  /// (Dijkstra over the columns, all columns at the current minimum distance scanned together),
  /// then lowers v_j by μ − d_j on the scanned columns (μ the length of the path to the free
  /// column reached, d_j ≤ μ the distance of column j), which keeps the invariant and makes the
  /// path tight. A scanned row k at distance d_k reads its list lazily: column j lies at path
  /// length d_k + C_kj − v_j − u_k, at least d_k − u_k + a_kj on the list and d_k − u_k + T_k off
  /// it, so the search stays exact if, before it settles a distance, it has relaxed every listed
  /// column whose lower bound lies below that distance, and relaxed the row in full if T_k does.
  void augment_along_shortest_path(Index free_row) {
    candidate_offset_ = -column_potential_;
    distance_.setConstant(infinity);
    relax(free_row, Work(0));  // d_j = C_ij − v_j
    scanned_columns_.clear();
    scanned_distances_.clear();
    horizons_.clear();
    Work reached = -infinity;  // distance of the last scanned columns: scans never go back
    Index sink = -1;
    while (sink < 0) {
      const Work closest = closest_distance();
      if (!(closest < infinity && closest > -infinity)) throw_overflow();
      reached = std::max(reached, closest);
      const std::size_t first_new = scanned_columns_.size();
      for (Index block = 0; block < cols_ && sink < 0; block += block_size) {
        const Index end = std::min(cols_, block + block_size);
        if (count_equal(distance_.data() + block, end - block, closest) == 0) continue;
        for (Index col = block; col < end && sink < 0; ++col) {
          if (distance_(col) != closest) continue;
          if (row_of_column_[at(col)] < 0) {
            sink = col;
          } else {
            scanned_columns_.push_back(col);
          }
        }
      }
      if (sink >= 0) {
        scanned_columns_.resize(first_new);  // at distance μ, their v would not change
        break;
      }
      if (scanned_columns_.size() == first_new) throw_overflow();
      for (std::size_t k = first_new; k < scanned_columns_.size(); ++k) {
        const Index col = scanned_columns_[k];
        scanned_distances_.push_back(reached);
        distance_(col) = infinity;
        candidate_offset_(col) = infinity;
      }
      for (std::size_t k = first_new; k < scanned_columns_.size(); ++k) {
        const Index col = scanned_columns_[k];
        const Index row = row_of_column_[at(col)];
        // Path length to column j through row k entering at its own column σ(k):
        // μ + (C_kj − v_j) − u_k with u_k = C_kσ(k) − v_σ(k).
        scan_row(row, reached - (cost_at(row, col) - column_potential_(col)));
      }
    }
    // The rows whose lists did not run out were served by them.
    for (const Horizon& horizon : horizons_) candidates_.record_use(horizon.row);
    for (std::size_t k = 0; k < scanned_columns_.size(); ++k) {
      column_potential_(scanned_columns_[k]) -= reached - scanned_distances_[k];
    }
    Index col = sink;
    Index row = -1;
    do {
      row = predecessor_[at(col)];
      row_of_column_[at(col)] = row;
      std::swap(column_of_row_[at(row)], col);
    } while (row != free_row);
  }

  const Matrix<Scalar>& row_costs_;  // M×N: column i holds row i of the cost
  Index rows_;
  Index cols_;
  WorkArray column_potential_;
  WorkArray reduced_row_;
  std::vector<Index> column_of_row_;
  std::vector<Index> row_of_column_;
  CandidateColumns<Work> candidates_;
  WorkArray distance_;
  WorkArray candidate_offset_;
  std::vector<Index> predecessor_;
  std::vector<Index> scanned_columns_;
  std::vector<Work> scanned_distances_;
  std::vector<Horizon> horizons_;
};

}  // namespace flowmatch::detail
