/// @file stabilised_sinkhorn.hpp
/// @brief The state of Sinkhorn iterations on a stabilised kernel, and its matrix–vector
/// sweeps (internal; sinkhorn() drives it).
///
/// For a cost C (N×M), regularisation ε and uniform marginals a = 1/N, b = 1/M, a plan
/// π_ij = exp(φ_i + ψ_j − C_ij/ε) is given by its log-potentials φ, ψ. The state splits them
/// as φ = f + log u, ψ = g + log v, with f, g absorbed into the kernel
///
///     K̃_ij = exp(f_i + g_j − C_ij/ε),      π = diag(u) K̃ diag(v),
///
/// so that a Sinkhorn half-step is a matrix–vector product: v_j ← b / (K̃ᵀu)_j,
/// u_i ← a / (K̃v)_i. An over-relaxed half-step with factor ω moves the log-scaling ω times as
/// far, v ← v (b / (v ⊙ K̃ᵀu))^ω, with the same fixed point.
///
/// Stabilisation: once a scaling leaves [e^−τ, e^τ] every scaling is absorbed into its
/// potential (f ← f + log u, u ← 1) and K̃ rebuilt, so K̃ neither overflows nor loses an entry
/// that matters however small ε is (τ is a quarter of the exponent range of the scalar type).
/// A row or column whose kernel sum lies outside [e^−2τ, e^2τ] times its marginal, where the
/// scaling could not be represented, takes the exact log-domain update instead,
/// φ_i = log a − LSE_j(ψ_j − C_ij/ε) (LSE after subtracting the maximum), absorbed at once.
/// Entries of K̃ below the smallest normal number are raised to it, so no subnormal operand
/// slows the products; their contribution is below any representable marginal error.
///
/// One sweep streams K̃ once, by blocks of columns that stay in the first-level cache: for
/// block J it forms s_J = K̃_Jᵀu, updates v_J, and accumulates r += K̃_J v_J, so that afterwards
/// r = K̃v for the new v and the row update needs no second pass.
///
/// The state (potentials, scalings and kernel) is held in double, or the wider scalar type:
/// for a float cost, C_ij/ε may reach thousands, and sums of a thousand float products are
/// off by 10⁻⁷, which would leave the returned plan's marginals 10⁻⁷ from the iteration's. Only
/// the returned log-plan is rounded to the cost's type.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>

#include "flowmatch/core/errors.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/huge_pages.hpp"
#include "flowmatch/detail/validate.hpp"

namespace flowmatch::detail {

/// The L1 marginal errors seen by one sweep of the column scalings.
template <class Real>
struct SweepErrors {
  /// Σ_i |Σ_j π_ij − a| after the column update (whose column sums are exact when plain).
  Real row_error = Real(0);
  /// Σ_j |Σ_i π_ij − b| before the column update (after the previous row update).
  Real column_error = Real(0);
};

/// Stabilised Sinkhorn iterations between uniform marginals (see the file comment).
template <class Scalar>
class StabilisedSinkhorn {
 public:
  /// The type of the state: double, or Scalar if wider.
  using Real = std::common_type_t<Scalar, double>;

  /// A state with zero potentials and unit scalings on @p cost (N×M, finite, ≥ 0), which must
  /// outlive the state. set_epsilon must be called before the first sweep.
  explicit StabilisedSinkhorn(const Matrix<Scalar>& cost)
      : cost_(cost),
        kernel_(cost.rows(), cost.cols()),
        row_potential_(Array::Zero(cost.rows())),
        column_potential_(Array::Zero(cost.cols())),
        row_scaling_(Array::Ones(cost.rows())),
        column_scaling_(Array::Ones(cost.cols())),
        kernel_row_sums_(cost.rows()),
        block_sums_(block_width()),
        exponents_(cost.rows()),
        row_marginal_(Real(1) / static_cast<Real>(cost.rows())),
        column_marginal_(Real(1) / static_cast<Real>(cost.cols())),
        scaling_bound_(std::exp(absorption_exponent)),
        sum_bound_(scaling_bound_ * scaling_bound_) {
    advise_huge_pages(kernel_.data(), sizeof(Real) * static_cast<std::size_t>(kernel_.size()));
  }

  /// Moves to the regularisation @p epsilon (> 0, C/ε finite) and rebuilds the kernel. The
  /// dual potentials ε(φ − log a) and ε(ψ − log b) are kept: the plan of the previous ε is
  /// the warm start of ε-scaling.
  /// @throws numerical_error if a potential is not finite.
  void set_epsilon(Real epsilon) {
    if (epsilon_ > Real(0)) {
      const Real ratio = epsilon_ / epsilon;
      const Real log_a = std::log(row_marginal_);
      const Real log_b = std::log(column_marginal_);
      row_potential_ = (row_log_potential() - log_a) * ratio + log_a;
      column_potential_ = (column_log_potential() - log_b) * ratio + log_b;
      row_scaling_.setOnes();
      column_scaling_.setOnes();
    }
    epsilon_ = epsilon;
    inverse_epsilon_ = Real(1) / epsilon;
    rebuild_kernel();
  }

  /// Updates every column scaling (relaxation 1: plain, column sums exact afterwards) and
  /// forms r = K̃v for the next row update, in one pass over the kernel.
  SweepErrors<Real> update_columns(Real relaxation) {
    SweepErrors<Real> errors;
    kernel_row_sums_.setZero();
    const Index width = block_width();
    for (Index first = 0; first < cols(); first += width) {
      const Index count = std::min(width, cols() - first);
      const auto block = kernel_.middleCols(first, count);
      auto sums = block_sums_.head(count);
      auto scalings = column_scaling_.segment(first, count);
      sums.matrix().noalias() = block.transpose() * row_scaling_.matrix();
      errors.column_error += (scalings * sums - column_marginal_).abs().sum();
      relax(scalings, column_marginal_ / sums, relaxation);
      for (Index k = 0; k < count; ++k) {
        if (!representable(sums(k), column_marginal_)) update_column_in_log_domain(first + k);
      }
      kernel_row_sums_.matrix().noalias() += block * scalings.matrix();
    }
    errors.row_error = (row_scaling_ * kernel_row_sums_ - row_marginal_).abs().sum();
    return errors;
  }

  /// Updates every row scaling from r = K̃v of the last column update, then absorbs the
  /// scalings into the potentials if one has left [e^−τ, e^τ].
  /// @throws numerical_error if a potential is not finite.
  void update_rows(Real relaxation) {
    relax(row_scaling_, row_marginal_ / kernel_row_sums_, relaxation);
    for (Index row = 0; row < rows(); ++row) {
      if (!representable(kernel_row_sums_(row), row_marginal_)) update_row_in_log_domain(row);
    }
    const auto outside = [this](const Array& scalings) {
      return !(scalings.maxCoeff() <= scaling_bound_ &&
               scalings.minCoeff() >= Real(1) / scaling_bound_);
    };
    if (outside(row_scaling_) || outside(column_scaling_)) {
      row_potential_ = row_log_potential();
      column_potential_ = column_log_potential();
      row_scaling_.setOnes();
      column_scaling_.setOnes();
      rebuild_kernel();
      ++absorptions_;
    }
  }

  /// The log-plan log π_ij = φ_i + ψ_j − C_ij/ε of the current potentials, rounded to Scalar
  /// (in the kernel's storage when the types agree: the state cannot be used afterwards).
  [[nodiscard]] Matrix<Scalar> release_log_plan() {
    const Array row_log = row_log_potential();
    const Array column_log = column_log_potential();
    const auto write = [&](Matrix<Scalar>& log_plan) {
      for (Index col = 0; col < cols(); ++col) {
        compute_exponents(row_log, column_log(col), col);
        log_plan.col(col) = exponents_.template cast<Scalar>().matrix();
      }
    };
    if constexpr (std::is_same_v<Scalar, Real>) {
      write(kernel_);
      return std::move(kernel_);
    } else {
      kernel_.resize(0, 0);
      Matrix<Scalar> log_plan(rows(), cols());
      advise_huge_pages(log_plan.data(),
                        sizeof(Scalar) * static_cast<std::size_t>(log_plan.size()));
      write(log_plan);
      return log_plan;
    }
  }

  /// The number of times the scalings were absorbed into the potentials (each a rebuild of
  /// the kernel; set_epsilon's rebuilds are not counted).
  [[nodiscard]] Index absorptions() const { return absorptions_; }

  /// The number of rows and columns that took the log-domain update.
  [[nodiscard]] Index log_domain_updates() const { return log_domain_updates_; }

 private:
  using Array = Eigen::Array<Real, Eigen::Dynamic, 1>;

  [[nodiscard]] Index rows() const { return cost_.rows(); }
  [[nodiscard]] Index cols() const { return cost_.cols(); }

  /// Columns per block of a sweep: about 32 KiB, at least 4 (measured fastest for N = 1024
  /// and 4096).
  [[nodiscard]] Index block_width() const {
    const Index bytes_per_column = rows() * static_cast<Index>(sizeof(Real));
    return std::max<Index>(4, Index{32768} / bytes_per_column);
  }

  /// τ: scalings stay within [e^−τ, e^τ]; a quarter of log(largest Real) = max_exponent·ln 2.
  static constexpr Real absorption_exponent =
      Real(std::numeric_limits<Real>::max_exponent) * Real(0.6931471805599453) / 4;

  /// Whether a kernel sum lies within [e^−2τ, e^2τ] times its marginal (false for NaN).
  [[nodiscard]] bool representable(Real sum, Real marginal) const {
    return sum >= marginal / sum_bound_ && sum <= marginal * sum_bound_;
  }

  /// Moves @p scalings to @p target (relaxation 1) or @p relaxation times as far in the log
  /// domain: scalings · (target / scalings)^ω.
  template <class Target>
  static void relax(Eigen::Ref<Array> scalings, const Eigen::ArrayBase<Target>& target,
                    Real relaxation) {
    if (relaxation == Real(1)) {
      scalings = target;
    } else {
      scalings *= (relaxation * (target / scalings).log()).exp();
    }
  }

  [[nodiscard]] Array row_log_potential() const { return row_potential_ + row_scaling_.log(); }
  [[nodiscard]] Array column_log_potential() const {
    return column_potential_ + column_scaling_.log();
  }

  /// exponents_ = row_part + column_part − C_·j/ε for column @p col.
  void compute_exponents(const Array& row_part, Real column_part, Index col) {
    exponents_ = cost_.col(col).array().template cast<Real>();
    exponents_ = (row_part + column_part) - exponents_ * inverse_epsilon_;
  }

  /// exp of @p exponents, raised to the smallest normal number (times e).
  template <class Derived>
  static auto kernel_entries(const Eigen::ArrayBase<Derived>& exponents) {
    const Real lowest = std::log(std::numeric_limits<Real>::min()) + 1;
    return exponents.cwiseMax(lowest).exp();
  }

  void rebuild_kernel() {
    require_finite_potentials();
    for (Index col = 0; col < cols(); ++col) rebuild_column(col);
  }

  void rebuild_column(Index col) {
    compute_exponents(row_potential_, column_potential_(col), col);
    kernel_.col(col) = kernel_entries(exponents_).matrix();
  }

  /// ψ_j = log b − LSE_i(φ_i − C_ij/ε), absorbed: g_j ← ψ_j, v_j ← 1, column j of K̃ rebuilt.
  void update_column_in_log_domain(Index col) {
    compute_exponents(row_log_potential(), Real(0), col);
    column_potential_(col) = std::log(column_marginal_) - log_sum_exp(exponents_);
    column_scaling_(col) = Real(1);
    require_finite_potentials();
    rebuild_column(col);
    ++log_domain_updates_;
  }

  /// φ_i = log a − LSE_j(ψ_j − C_ij/ε), absorbed: f_i ← φ_i, u_i ← 1, row i of K̃ rebuilt.
  void update_row_in_log_domain(Index row) {
    const Array scaled_cost =
        cost_.row(row).transpose().array().template cast<Real>() * inverse_epsilon_;
    row_potential_(row) =
        std::log(row_marginal_) - log_sum_exp(column_log_potential() - scaled_cost);
    row_scaling_(row) = Real(1);
    require_finite_potentials();
    kernel_.row(row) =
        kernel_entries((column_potential_ + row_potential_(row)) - scaled_cost).transpose();
    ++log_domain_updates_;
  }

  static Real log_sum_exp(const Array& values) {
    const Real maximum = values.maxCoeff();
    return maximum + std::log((values - maximum).exp().sum());
  }

  void require_finite_potentials() const {
    if (!row_potential_.allFinite() || !column_potential_.allFinite()) {
      throw numerical_error(
          "sinkhorn: potentials became non-finite with epsilon " + to_text(epsilon_), 0.0);
    }
  }

  const Matrix<Scalar>& cost_;
  Matrix<Real> kernel_;     // K̃, N×M
  Array row_potential_;     // f
  Array column_potential_;  // g
  Array row_scaling_;       // u
  Array column_scaling_;    // v
  Array kernel_row_sums_;   // r = K̃v
  Array block_sums_;        // s_J = K̃_Jᵀu
  Array exponents_;         // one column of exponents
  Real row_marginal_;       // a
  Real column_marginal_;    // b
  Real scaling_bound_;      // e^τ
  Real sum_bound_;          // e^2τ
  Real epsilon_ = Real(0);
  Real inverse_epsilon_ = Real(0);
  Index absorptions_ = 0;
  Index log_domain_updates_ = 0;
};

}  // namespace flowmatch::detail
