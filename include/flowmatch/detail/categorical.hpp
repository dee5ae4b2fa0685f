/// @file categorical.hpp
/// @brief Uniform variates and categorical draws in double precision from a counter-based
/// stream (internal; used by discrete flow matching).
#pragma once

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/sample_noise.hpp"

namespace flowmatch::detail {

/// A uniform variate in [0, 1) from the top 53 bits of one word of @p stream: exactly one word
/// per variate, so the position of every draw in the stream is known in advance.
inline double unit_uniform(SampleStream& stream) {
  return static_cast<double>(stream() >> 11) * 0x1p-53;
}

/// The index drawn from the non-negative weights @p weights (any scalar, summed in double) with
/// the uniform variate @p uniform in [0, 1): the first index whose cumulative weight exceeds
/// uniform·total. An index of zero weight is never returned, even when rounding leaves the
/// target at the total.
template <class Derived>
Index categorical_index(const Eigen::DenseBase<Derived>& weights, double uniform) {
  double total = 0;
  for (Index index = 0; index < weights.size(); ++index)
    total += static_cast<double>(weights(index));
  const double target = uniform * total;
  double cumulative = 0;
  Index last_positive = 0;
  for (Index index = 0; index < weights.size(); ++index) {
    const double weight = static_cast<double>(weights(index));
    if (weight <= 0) continue;
    cumulative += weight;
    last_positive = index;
    if (cumulative > target) return index;
  }
  return last_positive;
}

}  // namespace flowmatch::detail
