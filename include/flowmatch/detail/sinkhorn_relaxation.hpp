/// @file sinkhorn_relaxation.hpp
/// @brief The over-relaxation factor of each Sinkhorn iteration: adapted to the observed rate
/// of convergence, and 1 for the iterations that test convergence (internal).
///
/// Plain Sinkhorn converges linearly: near the fixed point the marginal error shrinks by a
/// factor θ per iteration, and θ approaches 1 as ε shrinks (0.963 at ε = 10⁻² and 0.996 at
/// ε = 10⁻³ of the mean cost between 1024 standard normal points and an eight-Gaussian
/// mixture in 2-D). Over-relaxed updates, log u ← (1 − ω) log u + ω log(a / K̃v) and the same
/// for v, have the same fixed point; as the over-relaxation of a two-block Gauss–Seidel
/// iteration their rate is (Young)
///
///     λ(ω) = ¼ (ω√θ + √(ω²θ − 4(ω − 1)))²   for 1 ≤ ω ≤ ω* = 2 / (1 + √(1 − θ)),
///     λ(ω) = ω − 1                            for ω* ≤ ω < 2,
///
/// smallest at ω*, where λ = ω* − 1 ≈ 1 − 2√(1 − θ): 0.68 instead of 0.963 and 0.89 instead
/// of 0.996 per iteration in the examples.
///
/// θ is not known in advance. The factor starts at ω = 1; after every window of over-relaxed
/// (or plain) iterations the rate λ observed over it gives θ by inverting the relation,
/// θ = (λ + ω − 1)² / (λω²), and the factor becomes ω*(θ), at most 1.98. A rate λ ≤ ω − 1 is
/// that of ω ≥ ω* (complex eigenvalues, an oscillating error whose windows say little about
/// θ): the factor stays. Two windows in a row over which the error grew reset the factor to 1.
/// Far from the fixed point the iteration is not linear and over-relaxation can diverge, so the
/// factor is 1 while the L1 marginal error (rows plus columns) exceeds 0.1.
///
/// Convergence is tested on plain iterations only (their column sums are exact). An
/// over-relaxed iterate overshoots: its marginal error is 5 to 50 times that of a plain
/// update from the same state. So a plain update is tried once the over-relaxed error falls
/// below 100 times the tolerance, and after one that fails, once it falls below the level at
/// which the ratio seen in that test predicts success.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>

namespace flowmatch::detail {

/// The relaxation factor of each Sinkhorn iteration (see the file comment).
template <class Real>
class SinkhornRelaxation {
 public:
  /// For iterations that stop once a plain update has L1 row error ≤ @p tolerance.
  explicit SinkhornRelaxation(Real tolerance)
      : tolerance_(tolerance), test_below_(first_test_ratio * tolerance) {}

  /// The factor for the next iteration, in [1, 1.98]; 1 for a test of convergence.
  [[nodiscard]] Real factor() const {
    return test_due_ || last_error_ > linear_regime_error ? Real(1) : factor_;
  }

  /// Records the L1 marginal errors reached by an iteration run with factor() (a failed test
  /// of convergence, if it was due).
  void record(Real row_error, Real column_error) {
    const Real error = row_error + column_error;
    if (test_due_) {
      test_due_ = false;
      if (row_error > Real(0)) test_below_ = last_error_ * tolerance_ / row_error;
      return;
    }
    last_error_ = error;
    test_due_ = factor_ > Real(1) && error <= test_below_;
    if (++iterations_in_window_ < window_length) return;
    iterations_in_window_ = 0;
    if (window_start_error_ > Real(0)) adapt(error / window_start_error_);
    window_start_error_ = error;
  }

 private:
  static constexpr int window_length = 10;
  static constexpr Real linear_regime_error = Real(0.1);
  static constexpr Real first_test_ratio = Real(100);

  void adapt(Real window_ratio) {
    if (!(window_ratio < Real(1))) {
      if (++growing_windows_ >= 2) {
        factor_ = Real(1);
        growing_windows_ = 0;
      }
      return;
    }
    growing_windows_ = 0;
    const Real rate = std::pow(window_ratio, Real(1) / Real(window_length));
    if (!(rate > factor_ - Real(1))) return;
    const Real excess = rate + factor_ - Real(1);
    const Real theta = std::min(Real(1), excess * excess / (rate * factor_ * factor_));
    factor_ = std::min(Real(1.98), Real(2) / (Real(1) + std::sqrt(Real(1) - theta)));
  }

  Real tolerance_;
  Real test_below_;
  bool test_due_ = false;
  Real factor_ = Real(1);
  Real last_error_ = std::numeric_limits<Real>::infinity();
  Real window_start_error_ = Real(0);
  int iterations_in_window_ = 0;
  int growing_windows_ = 0;
};

}  // namespace flowmatch::detail
