/// @file training_checkpoint.hpp
/// @brief The state of a training run that trains an Mlp with Adam and a moving average: what a
/// checkpoint holds, and how a trainer takes and restores it.
///
/// Every trainer of the library that updates an Mlp's parameters with Adam and keeps their
/// exponential moving average (FlowMatchingTrainer of trainer.hpp, DiscreteTrainer of
/// discrete/training.hpp) has the same state: the weights, Adam's moments and step count, the
/// average and its count, the number of steps taken and the generator's state. A run continues
/// bit for bit from that state. checkpoint.hpp writes and reads it as a safetensors file.
#pragma once

#include <cstdint>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>

#include "flowmatch/detail/validate.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/train/adam.hpp"
#include "flowmatch/train/ema.hpp"

namespace flowmatch {

/// Everything a training run needs to continue exactly.
template <class Scalar = double>
struct TrainingCheckpoint {
  Mlp<Scalar> model;            ///< the current weights.
  AdamState<Scalar> optimizer;  ///< Adam's moments and step count.
  EmaState<Scalar> ema;         ///< the moving average of the weights and its count.
  std::int64_t step = 0;        ///< training steps taken.
  std::string generator_state;  ///< the generator's state as written by operator<<.
};

namespace detail {

/// The checkpoint of a trainer's state: @p model, @p adam, @p ema, @p step and @p generator
/// (written with its operator<<).
template <class Scalar, class Generator>
[[nodiscard]] TrainingCheckpoint<Scalar> take_training_checkpoint(
    const Mlp<Scalar>& model, const Adam<Scalar>& adam, const ExponentialMovingAverage<Scalar>& ema,
    std::int64_t step, const Generator& generator) {
  std::ostringstream generator_text;
  generator_text << generator;
  return {model, adam.state(), ema.state(), step, generator_text.str()};
}

/// Restores @p checkpoint into a trainer's @p model, @p adam, @p ema, @p step and @p generator,
/// all or nothing: every part is checked (the network's shape against @p model's, the states'
/// sizes, the step count, the generator's text) before any is assigned. Errors are named
/// "<trainer>::restore: checkpoint.<part>".
/// @throws std::invalid_argument if the network shape differs, a state has the wrong size or is
///         not finite, the step is negative or the generator state does not parse.
template <class Scalar, class Generator>
void restore_training_checkpoint(std::string_view trainer,
                                 const TrainingCheckpoint<Scalar>& checkpoint, Mlp<Scalar>& model,
                                 Adam<Scalar>& adam, ExponentialMovingAverage<Scalar>& ema,
                                 std::int64_t& step, Generator& generator) {
  const std::string prefix = std::string(trainer) + "::restore: checkpoint.";
  if (!(checkpoint.model.config() == model.config())) {
    reject_argument(prefix + "model", "has another shape", "the shape of the trained model");
  }
  require_count<std::int64_t>(prefix + "step", checkpoint.step, 0);
  Generator restored_generator;
  std::istringstream generator_text(checkpoint.generator_state);
  generator_text >> restored_generator;
  if (!generator_text) {
    reject_argument(prefix + "generator_state", "does not parse", "the generator's state");
  }
  Adam<Scalar> restored_adam = adam;
  restored_adam.set_state(checkpoint.optimizer);
  ExponentialMovingAverage<Scalar> restored_ema = ema;
  restored_ema.set_state(checkpoint.ema);
  model = checkpoint.model;
  adam = std::move(restored_adam);
  ema = std::move(restored_ema);
  generator = restored_generator;
  step = checkpoint.step;
}

}  // namespace detail

}  // namespace flowmatch
