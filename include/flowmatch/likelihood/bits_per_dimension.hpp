/// @file bits_per_dimension.hpp
/// @brief Log-likelihoods in bits per dimension, the usual unit for image models.
#pragma once

#include <cmath>
#include <numbers>
#include <stdexcept>
#include <string>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"

namespace flowmatch {

/// Bits per dimension of each sample: bpd = −(log p(x) + d·log Δ) / (d·ln 2).
///
/// @param log_prob log p(x) of each sample (length N), in nats, as returned by log_likelihood.
/// @param dim the dimension d of the data, >= 1.
/// @param bin_width Δ > 0, the dequantisation offset: the width of one quantisation bin in the
///        units of the data the model sees. For discrete data dequantised uniformly within its
///        bins, log P(bin) ≈ log p(x) + d·log Δ, so bpd measures the discrete likelihood: images
///        with 256 levels scaled to [0, 1] have Δ = 1/256 (bpd = (−log p + d·ln 256)/(d·ln 2)),
///        scaled to [−1, 1] Δ = 2/256. The default Δ = 1 adds no offset (continuous data).
/// @throws std::invalid_argument if log_prob is not a column vector, dim < 1, bin_width is not
/// finite and > 0, or log_prob has a
///         NaN entry.
template <class Derived>
Vector<typename Derived::Scalar> bits_per_dimension(
    const Eigen::MatrixBase<Derived>& log_prob, Index dim,
    typename Derived::Scalar bin_width = typename Derived::Scalar(1)) {
  using Scalar = typename Derived::Scalar;
  detail::require_shape("bits_per_dimension: log_prob", log_prob, -1, 1);
  detail::require_count<Index>("bits_per_dimension: dim", dim, 1);
  detail::require_positive("bits_per_dimension: bin_width", bin_width);
  // log p = −∞ (a point of zero density) is a valid input: only NaN is rejected.
  if (log_prob.hasNaN()) {
    Index index = 0;
    while (!std::isnan(log_prob(index))) ++index;
    detail::reject_argument("bits_per_dimension: log_prob",
                            "has a NaN entry at index " + detail::to_text(index),
                            "no NaN (-inf, a zero density, is allowed)");
  }
  const Scalar dims = static_cast<Scalar>(dim);
  return (-(log_prob.array() + dims * std::log(bin_width)) / (dims * std::numbers::ln2_v<Scalar>))
      .matrix();
}

}  // namespace flowmatch
