/// @file lr_schedule.hpp
/// @brief Learning-rate schedules: constant, cosine decay to a minimum, and a linear warm-up
/// composed with either.
///
/// A schedule maps the 0-based index s of the step about to be taken to its learning rate:
///
///     ConstantSchedule(η):            η(s) = η
///     CosineSchedule(η, η_min, T):    η(s) = η_min + (η − η_min)·(1 + cos(π·min(s, T)/T))/2
///     LinearWarmup(W, inner):         η(s) = inner(0)·(s + 1)/W   for s < W,
///                                     η(s) = inner(s − W)         for s ≥ W.
///
/// so the cosine goes from η at s = 0 to η_min at s = T and stays there, and the warm-up
/// reaches the inner schedule's first rate at its last step (no step has rate 0) and then runs
/// the inner schedule from its start.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <numbers>
#include <stdexcept>
#include <string>
#include <utility>

#include "flowmatch/detail/validate.hpp"

namespace flowmatch {

/// A learning-rate schedule: callable with a 0-based step index, returning the rate.
template <class Schedule, class Scalar = double>
concept LearningRateSchedule = requires(const Schedule& schedule, std::int64_t step) {
  { schedule(step) } -> std::convertible_to<Scalar>;
};

/// η(s) = η.
template <class Scalar = double>
class ConstantSchedule {
 public:
  /// @throws std::invalid_argument unless learning_rate is finite and ≥ 0.
  explicit ConstantSchedule(Scalar learning_rate) : learning_rate_(learning_rate) {
    detail::require_nonnegative("ConstantSchedule: learning_rate", learning_rate);
  }
  /// The rate of step @p step (≥ 0, else std::invalid_argument).
  [[nodiscard]] Scalar operator()(std::int64_t step) const {
    detail::require_count<std::int64_t>("ConstantSchedule: step", step, 0);
    return learning_rate_;
  }

 private:
  Scalar learning_rate_;
};

/// η(s) = η_min + (η − η_min)·(1 + cos(π·min(s, T)/T))/2.
template <class Scalar = double>
class CosineSchedule {
 public:
  /// @param peak η, the rate at s = 0; @param minimum η_min, the rate from s = T on (both
  /// finite, ≥ 0, minimum ≤ peak); @param total_steps T ≥ 1.
  /// @throws std::invalid_argument otherwise.
  CosineSchedule(Scalar peak, Scalar minimum, std::int64_t total_steps)
      : peak_(peak), minimum_(minimum), total_steps_(total_steps) {
    detail::require_nonnegative("CosineSchedule: peak", peak);
    detail::require_nonnegative("CosineSchedule: minimum", minimum);
    if (minimum > peak) {
      detail::reject_argument("CosineSchedule: minimum", detail::is_value(minimum),
                              "<= peak (" + detail::to_text(peak) + ")");
    }
    detail::require_count<std::int64_t>("CosineSchedule: total_steps", total_steps, 1);
  }
  /// The rate of step @p step (≥ 0, else std::invalid_argument).
  [[nodiscard]] Scalar operator()(std::int64_t step) const {
    detail::require_count<std::int64_t>("CosineSchedule: step", step, 0);
    const Scalar progress = Scalar(std::min(step, total_steps_)) / Scalar(total_steps_);
    return minimum_ + (peak_ - minimum_) *
                          (Scalar(1) + std::cos(std::numbers::pi_v<Scalar> * progress)) / Scalar(2);
  }

 private:
  Scalar peak_;
  Scalar minimum_;
  std::int64_t total_steps_;
};

/// A linear warm-up over W steps followed by the schedule @p Inner started afresh.
template <class Inner>
class LinearWarmup {
 public:
  /// @param warmup_steps W ≥ 1; @param inner the schedule after the warm-up.
  /// @throws std::invalid_argument if warmup_steps < 1.
  LinearWarmup(std::int64_t warmup_steps, Inner inner)
      : warmup_steps_(warmup_steps), inner_(std::move(inner)) {
    detail::require_count<std::int64_t>("LinearWarmup: warmup_steps", warmup_steps, 1);
  }
  /// The rate of step @p step (≥ 0, else std::invalid_argument).
  [[nodiscard]] auto operator()(std::int64_t step) const {
    detail::require_count<std::int64_t>("LinearWarmup: step", step, 0);
    if (step >= warmup_steps_) return inner_(step - warmup_steps_);
    using Rate = decltype(inner_(step));
    return inner_(0) * Rate(step + 1) / Rate(warmup_steps_);
  }

 private:
  std::int64_t warmup_steps_;
  Inner inner_;
};

}  // namespace flowmatch
