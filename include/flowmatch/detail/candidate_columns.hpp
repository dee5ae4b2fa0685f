/// @file candidate_columns.hpp
/// @brief Sorted lists of the cheapest columns of each row for the assignment solver
/// (internal).
///
/// A list built for row i when the column potentials were v⁰ holds the K columns with the
/// smallest reduced values a_ij = C_ij − v⁰_j in increasing order (ties to the lower column),
/// and the bound T_i = max listed a_ij, with C_ij − v⁰_j ≥ T_i on every column left out. The
/// assignment solver only ever lowers v, so at any later time C_ij − v_j ≥ a_ij on a listed
/// column and C_ij − v_j ≥ T_i on the others: a list read in order, with these lower bounds,
/// stands for the whole row until it falls short, and is then rebuilt from the whole row. A row
/// whose lists keep falling short before serving anything (ties, fast-moving potentials) waits
/// for twice as many shortfalls before each new rebuild, and is read in full meanwhile.
#pragma once

#include <algorithm>
#include <cstddef>
#include <limits>
#include <span>
#include <utility>
#include <vector>

#include "flowmatch/core/types.hpp"

namespace flowmatch::detail {

/// The candidate lists of the rows of an N×M cost, K = min(capacity, M) columns each.
template <class Work>
class CandidateColumns {
 public:
  using WorkArray = Eigen::Array<Work, Eigen::Dynamic, 1>;

  /// Lists of min(@p capacity, @p cols) columns for @p rows rows, none built yet.
  CandidateColumns(Index rows, Index cols, Index capacity)
      : length_(std::min(capacity, cols)),
        group_size_(std::clamp<Index>(cols / (2 * length_), 1, max_group_size)),
        columns_(at(rows * length_)),
        costs_(at(rows * length_)),
        values_(at(rows * length_)),
        bounds_(at(rows)),
        built_(at(rows), 0),
        served_(at(rows), 0),
        shortfalls_(at(rows), 0),
        failures_(at(rows), 0),
        reduced_(cols) {}

  /// The number K of columns on each list.
  [[nodiscard]] Index length() const { return length_; }

  /// Whether the list of @p row has been built.
  [[nodiscard]] bool built(Index row) const { return built_[at(row)] != 0; }

  /// Notes that the list of @p row stood for the whole row in one scan.
  void record_use(Index row) { ++served_[at(row)]; }

  /// Notes that the list of @p row (if any) could not stand for the whole row, and returns
  /// whether to rebuild it now: at the 2^f-th shortfall since it was built, f being the number
  /// of the row's latest lists in succession that fell short before serving any scan (≤ 10).
  bool record_shortfall(Index row) {
    return ++shortfalls_[at(row)] >= (Index(1) << failures_[at(row)]);
  }

  /// Builds the list of @p row from its costs @p row_cost (M entries) and the current column
  /// potentials: the K smallest C_ij − v_j, sorted.
  ///
  /// The columns are dealt into G ≥ 2K groups g = {j : j mod G = g} of equal size (the last
  /// M mod G columns stay apart). With β the K-th smallest group minimum, K groups hold a value
  /// ≤ β, so the K smallest values are all ≤ β: they are selected among the values ≤ β of the
  /// groups whose minimum is ≤ β and of the columns apart.
  template <class Scalar>
  void rebuild(Index row, const Scalar* row_cost, const WorkArray& column_potential) {
    const Index cols = reduced_.size();
    reduced_ = Eigen::Map<const Matrix<Scalar>>(row_cost, cols, 1).array().template cast<Work>() -
               column_potential;
    const Index groups = group_size_ > 1 ? cols / group_size_ : 0;
    Work beta = std::numeric_limits<Work>::infinity();
    if (groups > 0) {
      using GroupMatrix = Eigen::Array<Work, Eigen::Dynamic, Eigen::Dynamic>;
      group_minimum_ =
          Eigen::Map<const GroupMatrix>(reduced_.data(), groups, group_size_).rowwise().minCoeff();
      group_order_.assign(group_minimum_.begin(), group_minimum_.end());
      std::nth_element(group_order_.begin(), group_order_.begin() + (length_ - 1),
                       group_order_.end());
      beta = group_order_[at(length_ - 1)];
    }
    candidates_.clear();
    for (Index group = 0; group < groups; ++group) {
      if (!(group_minimum_(group) <= beta)) continue;
      for (Index col = group; col < groups * group_size_; col += groups) {
        if (reduced_(col) <= beta) candidates_.emplace_back(reduced_(col), col);
      }
    }
    for (Index col = groups * group_size_; col < cols; ++col) {
      if (reduced_(col) <= beta) candidates_.emplace_back(reduced_(col), col);
    }
    const auto listed_end = candidates_.begin() + length_;
    std::nth_element(candidates_.begin(), listed_end - 1, candidates_.end());
    std::sort(candidates_.begin(), listed_end);
    // Every value left out is at least the K-th smallest, the largest one listed.
    bounds_[at(row)] =
        length_ < cols ? candidates_[at(length_ - 1)].first : std::numeric_limits<Work>::infinity();
    for (Index k = 0; k < length_; ++k) {
      const auto [value, col] = candidates_[at(k)];
      columns_[at(row * length_ + k)] = col;
      costs_[at(row * length_ + k)] = static_cast<Work>(row_cost[col]);
      values_[at(row * length_ + k)] = value;
    }
    const bool failed = built(row) && served_[at(row)] == 0;
    failures_[at(row)] = failed ? std::min(failures_[at(row)] + 1, max_failures) : 0;
    served_[at(row)] = 0;
    shortfalls_[at(row)] = 0;
    built_[at(row)] = 1;
  }

  /// The listed columns of a built row, by increasing a_ij.
  [[nodiscard]] std::span<const Index> columns(Index row) const { return span_of(columns_, row); }

  /// The costs C_ij of the listed columns, in the order of columns(row).
  [[nodiscard]] std::span<const Work> costs(Index row) const { return span_of(costs_, row); }

  /// The reduced values a_ij at the time of building, in the order of columns(row).
  [[nodiscard]] std::span<const Work> values(Index row) const { return span_of(values_, row); }

  /// T_i: C_ij − v_j ≥ T_i on every column not listed (+∞ if every column is listed).
  [[nodiscard]] Work bound(Index row) const { return bounds_[at(row)]; }

 private:
  static constexpr Index max_group_size = 16;
  static constexpr Index max_failures = 10;  // at least one rebuild per 2^10 shortfalls

  static std::size_t at(Index k) { return static_cast<std::size_t>(k); }

  template <class Entry>
  std::span<const Entry> span_of(const std::vector<Entry>& entries, Index row) const {
    return {entries.data() + row * length_, at(length_)};
  }

  Index length_;
  Index group_size_;
  std::vector<Index> columns_;  // row i's list at [i·K, (i + 1)·K)
  std::vector<Work> costs_;
  std::vector<Work> values_;
  std::vector<Work> bounds_;
  std::vector<char> built_;
  std::vector<Index> served_;      // scans served since the last build
  std::vector<Index> shortfalls_;  // shortfalls since the last build
  std::vector<Index> failures_;    // consecutive lists that fell short before serving a scan
  WorkArray reduced_;
  WorkArray group_minimum_;
  std::vector<Work> group_order_;
  std::vector<std::pair<Work, Index>> candidates_;
};

}  // namespace flowmatch::detail
