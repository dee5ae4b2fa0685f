/// @file errors.hpp
/// @brief Exception types of flowmatch.
///
/// Bad arguments throw std::invalid_argument (wrong shapes, invalid parameters) or
/// std::domain_error (a value outside the domain of a formula, such as a division by σ_t = 0).
/// A failure during a computation (non-finite state, step-size underflow, too many steps)
/// throws flowmatch::numerical_error, which carries the time and the first bad sample.
#pragma once

#include <stdexcept>
#include <string>

#include "flowmatch/core/types.hpp"

namespace flowmatch {

/// A numerical computation failed: a non-finite value appeared, the step size underflowed or
/// the step limit was exceeded.
class numerical_error : public std::runtime_error {
 public:
  /// @param message what went wrong.
  /// @param time the time at which it was detected.
  /// @param sample the index of the first bad sample, or -1 when no single sample is to blame.
  numerical_error(const std::string& message, double time, Index sample = -1)
      : std::runtime_error(message), time_(time), sample_(sample) {}

  /// The time at which the failure was detected.
  [[nodiscard]] double time() const noexcept { return time_; }

  /// The first offending sample (column), or -1 when the failure concerns the whole batch.
  [[nodiscard]] Index sample() const noexcept { return sample_; }

 private:
  double time_;
  Index sample_;
};

}  // namespace flowmatch
