/// @file ema.hpp
/// @brief An exponential moving average of a flat parameter vector, with optional warm-up.
///
/// Starting from θ̄₀ = θ₀ (the parameters it is constructed from), update n = 1, 2, … with the
/// current parameters θ_n computes
///
///     θ̄_n = d_n·θ̄_{n−1} + (1 − d_n)·θ_n,
///
/// with d_n = decay, or with warm-up d_n = min(decay, (1 + n)/(10 + n)), which lets the average
/// follow the parameters closely during the first updates while the parameters move fast.
/// With a constant d the closed form is θ̄_n = dⁿ·θ₀ + (1 − d)·Σ_{k=1}^{n} d^{n−k}·θ_k.
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"

namespace flowmatch {

/// The state of an exponential moving average.
template <class Scalar = double>
struct EmaState {
  Vector<Scalar> average;    ///< θ̄_n.
  std::int64_t updates = 0;  ///< n, the number of updates.
};

/// An exponential moving average of parameters of a fixed length.
template <class Scalar = double>
class ExponentialMovingAverage {
 public:
  /// An average starting at @p initial with decay @p decay in [0, 1], with the warm-up of the
  /// file comment if @p warmup.
  /// @throws std::invalid_argument if initial is empty or not finite, or decay is not in [0, 1].
  ExponentialMovingAverage(const ConstVectorRef<Scalar>& initial, Scalar decay, bool warmup = false)
      : decay_(decay), warmup_(warmup) {
    if (initial.size() < 1) {
      detail::reject_argument("ExponentialMovingAverage: initial", "is empty", ">= 1 entry");
    }
    detail::require_finite("ExponentialMovingAverage: initial", initial);
    if (!(decay >= Scalar(0) && decay <= Scalar(1))) {
      detail::reject_argument("ExponentialMovingAverage: decay", detail::is_value(decay),
                              "in [0, 1]");
    }
    state_.average = initial;
  }

  /// d_n, the decay used by update number @p update (1-based).
  /// @throws std::invalid_argument if update < 1.
  [[nodiscard]] Scalar decay_at(std::int64_t update) const {
    detail::require_count<std::int64_t>("ExponentialMovingAverage::decay_at: update", update, 1);
    if (!warmup_) return decay_;
    return std::min(decay_, Scalar(1 + update) / Scalar(10 + update));
  }

  /// θ̄ ← d·θ̄ + (1 − d)·θ with d = decay_at(updates + 1).
  /// @throws std::invalid_argument unless @p parameters has the average's length and is finite.
  void update(const ConstVectorRef<Scalar>& parameters) {
    detail::require_shape("ExponentialMovingAverage::update: parameters", parameters,
                          state_.average.size(), 1);
    detail::require_finite("ExponentialMovingAverage::update: parameters", parameters);
    const Scalar decay = decay_at(state_.updates + 1);
    state_.average = decay * state_.average + (Scalar(1) - decay) * parameters;
    ++state_.updates;
  }

  /// θ̄, the current average.
  [[nodiscard]] const Vector<Scalar>& average() const { return state_.average; }
  /// The configured decay.
  [[nodiscard]] Scalar decay() const { return decay_; }
  /// Whether the warm-up is on.
  [[nodiscard]] bool warmup() const { return warmup_; }
  /// The average and update count, for a checkpoint.
  [[nodiscard]] const EmaState<Scalar>& state() const { return state_; }
  /// Restores a state saved with state().
  /// @throws std::invalid_argument unless the average has the same length, is finite and
  ///         updates ≥ 0.
  void set_state(EmaState<Scalar> state) {
    detail::require_shape("ExponentialMovingAverage::set_state: average", state.average,
                          state_.average.size(), 1);
    detail::require_finite("ExponentialMovingAverage::set_state: average", state.average);
    detail::require_count<std::int64_t>("ExponentialMovingAverage::set_state: updates",
                                        state.updates, 0);
    state_ = std::move(state);
  }

 private:
  Scalar decay_;
  bool warmup_;
  EmaState<Scalar> state_;
};

}  // namespace flowmatch
