/// @file adam.hpp
/// @brief The Adam optimiser (Kingma and Ba, 2015) on a flat parameter vector, with classic L2
/// or decoupled (AdamW, Loshchilov and Hutter, 2019) weight decay.
///
/// Step t = 1, 2, … with gradient g, learning rate η and weight decay λ:
///
///     g ← g + λ·θ                                   (WeightDecay::l2 only)
///     m ← β₁·m + (1 − β₁)·g,   v ← β₂·v + (1 − β₂)·g²
///     m̂ = m / (1 − β₁ᵗ),        v̂ = v / (1 − β₂ᵗ)
///     θ ← θ − η·λ·θ                                 (WeightDecay::decoupled only)
///     θ ← θ − η·m̂ / (√v̂ + ε)
///
/// the update of PyTorch's Adam (l2) and AdamW (decoupled). The state (m, v, t) is exposed and
/// can be restored exactly, so a checkpointed run continues bit for bit.
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/train/parameters.hpp"

namespace flowmatch {

/// How Adam applies its weight decay λ.
enum class WeightDecay {
  l2,         ///< λ·θ added to the gradient before the moments (classic L2 regularisation).
  decoupled,  ///< θ shrunk by η·λ·θ outside the adaptive step (AdamW).
};

/// Hyperparameters of Adam.
template <class Scalar = double>
struct AdamOptions {
  Scalar beta1 = Scalar(0.9);       ///< decay of the first moment, in [0, 1).
  Scalar beta2 = Scalar(0.999);     ///< decay of the second moment, in [0, 1).
  Scalar epsilon = Scalar(1e-8);    ///< added to √v̂, finite and > 0.
  Scalar weight_decay = Scalar(0);  ///< λ, finite and ≥ 0.
  WeightDecay weight_decay_mode = WeightDecay::decoupled;  ///< how λ is applied.
};

/// The state of Adam: the moments and the number of steps taken.
template <class Scalar = double>
struct AdamState {
  Vector<Scalar> first_moment;   ///< m.
  Vector<Scalar> second_moment;  ///< v (entries ≥ 0).
  std::int64_t step = 0;         ///< t, the number of steps taken.
};

/// Adam on a flat parameter vector of a fixed length.
template <class Scalar = double>
class Adam {
 public:
  /// Adam for @p parameter_count parameters, with zero moments.
  /// @throws std::invalid_argument if parameter_count < 1 or an option is out of range.
  explicit Adam(Index parameter_count, AdamOptions<Scalar> options = {})
      : options_(std::move(options)) {
    detail::require_count<Index>("Adam: parameter_count", parameter_count, 1);
    detail::require_in_range<Scalar>("Adam: options.beta1", options_.beta1, 0, 1);
    detail::require_in_range<Scalar>("Adam: options.beta2", options_.beta2, 0, 1);
    detail::require_positive("Adam: options.epsilon", options_.epsilon);
    detail::require_nonnegative("Adam: options.weight_decay", options_.weight_decay);
    state_.first_moment = Vector<Scalar>::Zero(parameter_count);
    state_.second_moment = Vector<Scalar>::Zero(parameter_count);
  }

  /// One step on @p parameters with @p gradient (both of length parameter_count) and learning
  /// rate @p learning_rate (see the file comment for the update).
  /// @throws std::invalid_argument if a length differs, the gradient is not finite or the
  ///         learning rate is not finite and ≥ 0; the parameters are then unchanged.
  void step(VectorRef<Scalar> parameters, const ConstVectorRef<Scalar>& gradient,
            Scalar learning_rate) {
    detail::require_step_arguments<Scalar>("Adam::step", parameters, gradient,
                                           state_.first_moment.size(), learning_rate);
    ++state_.step;
    const Scalar correction1 = Scalar(1) - std::pow(options_.beta1, Scalar(state_.step));
    const Scalar correction2 = Scalar(1) - std::pow(options_.beta2, Scalar(state_.step));
    if (options_.weight_decay_mode == WeightDecay::l2) {
      update(parameters, gradient.array() + options_.weight_decay * parameters.array(),
             learning_rate, correction1, correction2);
    } else {
      update(parameters, gradient.array(), learning_rate, correction1, correction2);
    }
  }

  /// The hyperparameters.
  [[nodiscard]] const AdamOptions<Scalar>& options() const { return options_; }
  /// The moments and step count, for a checkpoint.
  [[nodiscard]] const AdamState<Scalar>& state() const { return state_; }
  /// Restores a state saved with state().
  /// @throws std::invalid_argument unless both moments have parameter_count entries, are
  ///         finite, the second moment is ≥ 0 and step ≥ 0.
  void set_state(AdamState<Scalar> state) {
    const Index count = state_.first_moment.size();
    detail::require_shape("Adam::set_state: first_moment", state.first_moment, count, 1);
    detail::require_shape("Adam::set_state: second_moment", state.second_moment, count, 1);
    detail::require_finite("Adam::set_state: first_moment", state.first_moment);
    detail::require_finite("Adam::set_state: second_moment", state.second_moment);
    if ((state.second_moment.array() < Scalar(0)).any()) {
      detail::reject_argument(
          "Adam::set_state: second_moment",
          "has a negative entry " + detail::to_text(state.second_moment.minCoeff()),
          "every entry >= 0");
    }
    detail::require_count<std::int64_t>("Adam::set_state: step", state.step, 0);
    state_ = std::move(state);
  }

 private:
  // The moments and the parameters from the (possibly L2-decayed) gradient g, entry by entry in
  // vectorised passes; each statement reads the parameters before the next one changes them.
  template <class Gradient>
  void update(VectorRef<Scalar> parameters, const Gradient& gradient, Scalar learning_rate,
              Scalar correction1, Scalar correction2) {
    const Scalar beta1 = options_.beta1;
    const Scalar beta2 = options_.beta2;
    auto first = state_.first_moment.array();
    auto second = state_.second_moment.array();
    first = beta1 * first + (Scalar(1) - beta1) * gradient;
    second = beta2 * second + (Scalar(1) - beta2) * gradient * gradient;
    if (options_.weight_decay_mode == WeightDecay::decoupled) {
      parameters.array() -= learning_rate * options_.weight_decay * parameters.array();
    }
    parameters.array() -=
        learning_rate * (first / correction1) / ((second / correction2).sqrt() + options_.epsilon);
  }

  AdamOptions<Scalar> options_;
  AdamState<Scalar> state_;
};

}  // namespace flowmatch
