/// @file time_sampler.hpp
/// @brief Distributions of the training time t ∈ [0, 1]: uniform, and logit-normal
/// t = sigmoid(m + s·z), z ~ N(0, 1) (Esser et al., 2024), which puts more weight on
/// intermediate times.
///
/// The logit-normal density is
///
///     p(t) = exp(−(logit t − m)²/(2s²)) / (s·√(2π)·t·(1 − t)),   logit t = log(t/(1 − t)),
///
/// its median is sigmoid(m), and for m = 0 it is symmetric about 1/2.
#pragma once

#include <cmath>
#include <numbers>
#include <random>
#include <stdexcept>
#include <string>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"

namespace flowmatch {

namespace detail {

/// Throws std::invalid_argument unless location is finite and scale finite and > 0.
template <class Scalar>
void require_logit_normal(const char* function, Scalar location, Scalar scale) {
  if (!std::isfinite(location)) {
    require_finite_value(argument_name(function, "location").c_str(), location);
  }
  if (!(scale > Scalar(0)) || !std::isfinite(scale)) {
    require_positive(argument_name(function, "scale"), scale);
  }
}

}  // namespace detail

/// Fills @p times with independent draws from U[0, 1), one per entry, without allocating.
template <class Scalar, class Generator>
void sample_uniform_times_into(VectorRef<Scalar> times, Generator& generator) {
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  for (Scalar& time : times) time = static_cast<Scalar>(uniform(generator));
}

/// n times drawn independently from U[0, 1), one per sample (a length-n vector).
/// @throws std::invalid_argument if n < 0.
template <class Scalar = double, class Generator>
[[nodiscard]] Vector<Scalar> sample_uniform_times(Index n, Generator& generator) {
  detail::require_count<Index>("sample_uniform_times: n", n, 0);
  Vector<Scalar> times(n);
  sample_uniform_times_into<Scalar>(times, generator);
  return times;
}

/// Fills @p times with independent draws from the logit-normal distribution t = sigmoid(m + s·z),
/// z ~ N(0, 1), m = @p location, s = @p scale, without allocating.
/// @throws std::invalid_argument if location is not finite or scale is not finite and > 0.
template <class Scalar, class Generator>
void sample_logit_normal_times_into(VectorRef<Scalar> times, Generator& generator, Scalar location,
                                    Scalar scale) {
  detail::require_logit_normal("sample_logit_normal_times", location, scale);
  std::normal_distribution<double> normal(static_cast<double>(location),
                                          static_cast<double>(scale));
  for (Scalar& time : times) time = static_cast<Scalar>(1.0 / (1.0 + std::exp(-normal(generator))));
}

/// n times drawn independently from the logit-normal distribution: t = sigmoid(m + s·z),
/// z ~ N(0, 1), m = @p location, s = @p scale (a length-n vector in [0, 1]).
/// @throws std::invalid_argument if n < 0, location is not finite or scale is not finite and
///         > 0.
template <class Scalar = double, class Generator>
[[nodiscard]] Vector<Scalar> sample_logit_normal_times(Index n, Generator& generator,
                                                       Scalar location = Scalar(0),
                                                       Scalar scale = Scalar(1)) {
  detail::require_count<Index>("sample_logit_normal_times: n", n, 0);
  Vector<Scalar> times(n);
  sample_logit_normal_times_into<Scalar>(times, generator, location, scale);
  return times;
}

/// The logit-normal density p(t) of the file comment; 0 at t = 0 and t = 1.
/// @throws std::invalid_argument for an invalid location or scale; std::domain_error unless t
///         lies in [0, 1].
template <class Scalar>
[[nodiscard]] Scalar logit_normal_density(Scalar t, Scalar location, Scalar scale) {
  detail::require_logit_normal("logit_normal_density", location, scale);
  detail::require_unit_time("logit_normal_density: t", t);
  if (t == Scalar(0) || t == Scalar(1)) return Scalar(0);
  const Scalar standardised = (std::log(t / (Scalar(1) - t)) - location) / scale;
  return std::exp(-standardised * standardised / Scalar(2)) /
         (scale * std::sqrt(Scalar(2) * std::numbers::pi_v<Scalar>) * t * (Scalar(1) - t));
}

}  // namespace flowmatch
