/// @file time_embedding.hpp
/// @brief The features through which the time t enters a neural velocity field.
///
/// With F = `frequencies`:
///
///   - F = 0 (raw time): one feature, [t];
///   - F > 0 (sinusoidal): 2F features, all sines first, then all cosines,
///     [sin(2π·f₀·t), …, sin(2π·f_{F−1}·t), cos(2π·f₀·t), …, cos(2π·f_{F−1}·t)]
///     with f_k = 2^k (k = 0, …, F − 1).
///
/// The same features in PyTorch, for a batch of times `t` of shape [N]:
///
///     k = torch.arange(F, dtype=t.dtype)
///     angle = 2 * math.pi * (2.0 ** k) * t[:, None]          # [N, F]
///     features = torch.cat([angle.sin(), angle.cos()], dim=1)  # [N, 2F]
///
/// The network input of one sample is the concatenation [x (dim values), time features,
/// c (cond_dim values)], in that order (see nn/mlp.hpp).
#pragma once

#include <cmath>
#include <numbers>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"

namespace flowmatch {

/// How the time enters the network: the raw time or sinusoidal features (see the file comment).
struct TimeEmbedding {
  /// Largest accepted number of frequencies: beyond 2^63 the products 2^k·t carry no
  /// fractional part in any floating-point type, so the features would be meaningless.
  static constexpr Index max_frequencies = 64;

  /// 0: the raw time t; F > 0: the 2F features sin(2π·2^k·t), cos(2π·2^k·t).
  Index frequencies = 0;

  /// Throws std::invalid_argument unless 0 ≤ frequencies ≤ max_frequencies.
  void validate() const {
    if (frequencies < 0 || frequencies > max_frequencies) {
      detail::reject_argument("TimeEmbedding: frequencies", detail::is_value(frequencies),
                              "0 (raw time) to " + detail::to_text(max_frequencies));
    }
  }

  /// The number of input features of the time: 1 for the raw time, 2F otherwise.
  [[nodiscard]] Index feature_count() const { return frequencies == 0 ? 1 : 2 * frequencies; }

  /// Writes the features of time @p t into @p out (length feature_count()).
  template <class Scalar>
  void features(Scalar t, std::type_identity_t<VectorRef<Scalar>> out) const {
    if (frequencies == 0) {
      out(0) = t;
      return;
    }
    Scalar angular_frequency = Scalar(2 * std::numbers::pi);  // 2π·2^k, exact doubling
    for (Index k = 0; k < frequencies; ++k) {
      const Scalar angle = angular_frequency * t;
      out(k) = std::sin(angle);
      out(frequencies + k) = std::cos(angle);
      angular_frequency *= Scalar(2);
    }
  }

  friend bool operator==(const TimeEmbedding&, const TimeEmbedding&) = default;
};

}  // namespace flowmatch
