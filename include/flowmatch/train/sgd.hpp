/// @file sgd.hpp
/// @brief Stochastic gradient descent with momentum (heavy-ball or Nesterov) and L2 weight
/// decay on a flat parameter vector.
///
/// Step with gradient g, learning rate η, momentum μ and weight decay λ (the update of
/// PyTorch's SGD without dampening):
///
///     g ← g + λ·θ
///     b ← μ·b + g                  (b = 0 before the first step, so b₁ = g₁)
///     d = g + μ·b (Nesterov)  or  d = b (heavy ball)
///     θ ← θ − η·d
///
/// With μ = 0 this is plain gradient descent. The state (b, step count) is exposed and can be
/// restored exactly.
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

/// Hyperparameters of SGD.
template <class Scalar = double>
struct SgdOptions {
  Scalar momentum = Scalar(0);      ///< μ, in [0, 1).
  bool nesterov = false;            ///< Nesterov momentum (requires μ > 0).
  Scalar weight_decay = Scalar(0);  ///< λ (L2, added to the gradient), finite and ≥ 0.
};

/// The state of SGD: the momentum buffer and the number of steps taken.
template <class Scalar = double>
struct SgdState {
  Vector<Scalar> momentum_buffer;  ///< b.
  std::int64_t step = 0;           ///< the number of steps taken.
};

/// SGD with momentum on a flat parameter vector of a fixed length.
template <class Scalar = double>
class Sgd {
 public:
  /// SGD for @p parameter_count parameters with a zero momentum buffer.
  /// @throws std::invalid_argument if parameter_count < 1 or an option is out of range.
  explicit Sgd(Index parameter_count, SgdOptions<Scalar> options = {})
      : options_(std::move(options)) {
    detail::require_count<Index>("Sgd: parameter_count", parameter_count, 1);
    detail::require_in_range<Scalar>("Sgd: options.momentum", options_.momentum, 0, 1);
    detail::require_nonnegative("Sgd: options.weight_decay", options_.weight_decay);
    if (options_.nesterov && options_.momentum == Scalar(0)) {
      detail::reject_argument("Sgd: options.nesterov", "is true with options.momentum 0",
                              "options.momentum > 0");
    }
    state_.momentum_buffer = Vector<Scalar>::Zero(parameter_count);
  }

  /// One step on @p parameters with @p gradient (both of length parameter_count) and learning
  /// rate @p learning_rate (see the file comment for the update).
  /// @throws std::invalid_argument if a length differs, the gradient is not finite or the
  ///         learning rate is not finite and ≥ 0; the parameters are then unchanged.
  void step(VectorRef<Scalar> parameters, const ConstVectorRef<Scalar>& gradient,
            Scalar learning_rate) {
    detail::require_step_arguments<Scalar>("Sgd::step", parameters, gradient,
                                           state_.momentum_buffer.size(), learning_rate);
    const Scalar momentum = options_.momentum;
    for (Index k = 0; k < parameters.size(); ++k) {
      const Scalar g = gradient(k) + options_.weight_decay * parameters(k);
      Scalar& buffer = state_.momentum_buffer(k);
      buffer = momentum * buffer + g;
      parameters(k) -= learning_rate * (options_.nesterov ? g + momentum * buffer : buffer);
    }
    ++state_.step;
  }

  /// The hyperparameters.
  [[nodiscard]] const SgdOptions<Scalar>& options() const { return options_; }
  /// The momentum buffer and step count, for a checkpoint.
  [[nodiscard]] const SgdState<Scalar>& state() const { return state_; }
  /// Restores a state saved with state().
  /// @throws std::invalid_argument unless the buffer has parameter_count finite entries and
  ///         step ≥ 0.
  void set_state(SgdState<Scalar> state) {
    detail::require_shape("Sgd::set_state: momentum_buffer", state.momentum_buffer,
                          state_.momentum_buffer.size(), 1);
    detail::require_finite("Sgd::set_state: momentum_buffer", state.momentum_buffer);
    detail::require_count<std::int64_t>("Sgd::set_state: step", state.step, 0);
    state_ = std::move(state);
  }

 private:
  SgdOptions<Scalar> options_;
  SgdState<Scalar> state_;
};

}  // namespace flowmatch
