// Shared by the trainers' checkpoint tests: two training states are the same run when Adam's
// moments and step, the moving average and the generator agree bit for bit.
#pragma once

#include <catch2/catch.hpp>

#include "flowmatch/train/training_checkpoint.hpp"

namespace flowmatch_test {

/// CHECKs that @p actual and @p expected hold the same optimizer, moving average and generator
/// state, bit for bit (the weights and the step are compared by the caller).
template <class Scalar>
void check_same_training_state(const flowmatch::TrainingCheckpoint<Scalar>& actual,
                               const flowmatch::TrainingCheckpoint<Scalar>& expected) {
  CHECK(actual.optimizer.first_moment == expected.optimizer.first_moment);
  CHECK(actual.optimizer.second_moment == expected.optimizer.second_moment);
  CHECK(actual.optimizer.step == expected.optimizer.step);
  CHECK(actual.ema.average == expected.ema.average);
  CHECK(actual.ema.updates == expected.ema.updates);
  CHECK(actual.generator_state == expected.generator_state);
}

}  // namespace flowmatch_test
