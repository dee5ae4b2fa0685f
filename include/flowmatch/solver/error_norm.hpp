/// @file error_norm.hpp
/// @brief Norms of the local error estimate used by the adaptive methods.
///
/// An embedded Runge–Kutta pair estimates the local error e of a step from x_old. Each entry
/// is scaled by its tolerance, s_ij = atol + rtol·|x_old,ij|, and the step is accepted when
/// the norm of e/s is at most 1.
#pragma once

#include <cmath>
#include <limits>

#include "flowmatch/detail/eigen_core.hpp"

#include "flowmatch/solver/odeint_eigen.hpp"

namespace flowmatch {

/// How the scaled error r_ij = e_ij / (atol + rtol·|x_ij|) of a rows×N state is reduced to one
/// number.
enum class ErrorNorm {
  /// max_ij |r_ij|: the worst entry of the worst sample sets the step of the whole batch.
  max,
  /// sqrt(mean_ij r_ij²), the root mean square over all entries. Equivalently the quadratic
  /// mean over samples of each sample's (column's) RMS scaled error, so with one sample it is
  /// that sample's RMS error, and it does not grow with the batch size.
  rms,
};

/// The norm @p norm of error/(atol + rtol·|reference|) (see ErrorNorm). Does not allocate.
template <class Error, class Reference, class Scalar>
Scalar scaled_error_norm(ErrorNorm norm, const Eigen::MatrixBase<Error>& error,
                         const Eigen::MatrixBase<Reference>& reference, Scalar rtol, Scalar atol) {
  const auto scaled = error.array().abs() / (atol + rtol * reference.array().abs());
  return norm == ErrorNorm::max ? scaled.maxCoeff() : std::sqrt(scaled.square().mean());
}

namespace detail {

/// Odeint ErrorChecker for controlled_runge_kutta that measures the error estimate with
/// scaled_error_norm. A non-finite error counts as a failed step (returns the largest value).
template <class Scalar>
class ScaledErrorChecker {
 public:
  using value_type = Scalar;
  using algebra_type = odeint_algebra;
  using operations_type = odeint_operations;

  ScaledErrorChecker(ErrorNorm norm, Scalar rtol, Scalar atol)
      : norm_(norm), rtol_(rtol), atol_(atol) {}

  template <class State, class Deriv, class Err, class Time>
  Scalar error(algebra_type& /*algebra*/, const State& x_old, const Deriv& /*dxdt_old*/, Err& x_err,
               Time /*dt*/) const {
    const Scalar value = scaled_error_norm(norm_, x_err, x_old, rtol_, atol_);
    return std::isfinite(value) ? value : std::numeric_limits<Scalar>::max();
  }

 private:
  ErrorNorm norm_;
  Scalar rtol_;
  Scalar atol_;
};

}  // namespace detail
}  // namespace flowmatch
