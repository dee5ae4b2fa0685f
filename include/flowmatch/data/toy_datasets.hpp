/// @file toy_datasets.hpp
/// @brief Two-dimensional toy distributions for flow-matching experiments: checkerboard,
/// eight Gaussians, two moons and concentric circles.
///
/// Every sampler returns a 2×n batch (one column per sample) of independent draws, using only
/// the caller's generator, and throws std::invalid_argument for n < 0 or an invalid parameter.
///
/// - Checkerboard: uniform on the 8 "black" squares of side 2 of the 4×4 board on [−4, 4]²:
///   square (i, j) = [−4 + 2i, −2 + 2i) × [−4 + 2j, −2 + 2j), i, j ∈ {0, 1, 2, 3}, is black
///   when i + j is even. Mean 0, covariance [[16/3, 1], [1, 16/3]].
/// - Eight Gaussians: an equal-weight mixture of N(μ_k, s²I), μ_k = r·(cos(kπ/4), sin(kπ/4)),
///   k = 0, …, 7 (default r = 5, s² = 0.1). Mean 0, covariance (r²/2 + s²)·I.
/// - Two moons: with probability 1/2 the upper arc (cos θ, sin θ), otherwise the lower arc
///   (1 − cos θ, 1/2 − sin θ), θ ~ U[0, π], plus N(0, noise²·I) (default noise 0.05).
///   Mean (1/2, 1/4), covariance [[3/4, 1/8 − 1/π], [1/8 − 1/π, 9/16 − 1/π]] + noise²·I.
/// - Circles: with probability 1/2 radius r_outer, otherwise r_inner, a uniform angle, plus
///   N(0, noise²·I). Mean 0, covariance ((r_outer² + r_inner²)/4 + noise²)·I.
#pragma once

#include <cmath>
#include <numbers>
#include <random>
#include <stdexcept>
#include <string>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/oracle/gaussian_mixture.hpp"

namespace flowmatch {

namespace detail {

/// Adds N(0, noise²) to every entry of @p batch.
template <class Scalar, class Generator>
void add_gaussian_noise(Matrix<Scalar>& batch, Scalar noise, Generator& generator) {
  if (noise == Scalar(0)) return;
  std::normal_distribution<double> normal(0.0, static_cast<double>(noise));
  for (Scalar& value : batch.reshaped()) value += static_cast<Scalar>(normal(generator));
}

}  // namespace detail

/// n samples of the checkerboard (see the file comment): a black square chosen uniformly among
/// the 8, then a uniform point in it.
template <class Scalar = double, class Generator>
[[nodiscard]] Matrix<Scalar> sample_checkerboard(Index n, Generator& generator) {
  detail::require_count<Index>("sample_checkerboard: n", n, 0);
  std::uniform_int_distribution<int> column(0, 3);
  std::uniform_int_distribution<int> pair(0, 1);
  std::uniform_real_distribution<double> offset(0.0, 2.0);
  Matrix<Scalar> batch(2, n);
  for (Index k = 0; k < n; ++k) {
    const int i = column(generator);
    const int j = 2 * pair(generator) + i % 2;  // i + j even
    batch(0, k) = static_cast<Scalar>(-4.0 + 2.0 * i + offset(generator));
    batch(1, k) = static_cast<Scalar>(-4.0 + 2.0 * j + offset(generator));
  }
  return batch;
}

/// The eight-Gaussians mixture as a GaussianMixture (for exact densities and scores):
/// weights 1/8, means r·(cos(kπ/4), sin(kπ/4)), covariances s²·I (r = @p radius, default 5;
/// s = @p standard_deviation, default √0.1).
/// @throws std::invalid_argument unless radius is finite and ≥ 0 and the standard deviation
///         finite and > 0.
template <class Scalar = double>
[[nodiscard]] GaussianMixture<Scalar> eight_gaussians(
    Scalar radius = Scalar(5), Scalar standard_deviation = Scalar(0.31622776601683794)) {
  detail::require_nonnegative("eight_gaussians: radius", radius);
  detail::require_positive("eight_gaussians: standard_deviation", standard_deviation);
  Matrix<Scalar> means(2, 8);
  for (Index k = 0; k < 8; ++k) {
    const Scalar angle = std::numbers::pi_v<Scalar> * Scalar(k) / Scalar(4);
    means(0, k) = radius * std::cos(angle);
    means(1, k) = radius * std::sin(angle);
  }
  return GaussianMixture<Scalar>::with_diagonal_covariances(
      Vector<Scalar>::Constant(8, Scalar(1)), means,
      Matrix<Scalar>::Constant(2, 8, standard_deviation * standard_deviation));
}

/// n samples of the eight-Gaussians mixture (see eight_gaussians).
template <class Scalar = double, class Generator>
[[nodiscard]] Matrix<Scalar> sample_eight_gaussians(
    Index n, Generator& generator, Scalar radius = Scalar(5),
    Scalar standard_deviation = Scalar(0.31622776601683794)) {
  detail::require_count<Index>("sample_eight_gaussians: n", n, 0);
  return eight_gaussians(radius, standard_deviation).sample(n, generator);
}

/// n samples of two moons: with probability 1/2 the upper arc (cos θ, sin θ), otherwise the
/// lower arc (1 − cos θ, 1/2 − sin θ), θ ~ U[0, π], plus N(0, noise²·I) (default noise 0.05).
/// From E cos θ = E cos θ sin θ = 0, E sin θ = 2/π, E cos²θ = E sin²θ = 1/2: mean (1/2, 1/4),
/// covariance [[3/4, 1/8 − 1/π], [1/8 − 1/π, 9/16 − 1/π]] + noise²·I.
/// @throws std::invalid_argument if n < 0 or noise is not finite and ≥ 0.
template <class Scalar = double, class Generator>
[[nodiscard]] Matrix<Scalar> sample_two_moons(Index n, Generator& generator,
                                              Scalar noise = Scalar(0.05)) {
  detail::require_count<Index>("sample_two_moons: n", n, 0);
  detail::require_nonnegative("sample_two_moons: noise", noise);
  std::uniform_real_distribution<double> angle(0.0, std::numbers::pi);
  std::bernoulli_distribution lower(0.5);
  Matrix<Scalar> batch(2, n);
  for (Index k = 0; k < n; ++k) {
    const double theta = angle(generator);
    if (lower(generator)) {
      batch(0, k) = static_cast<Scalar>(1.0 - std::cos(theta));
      batch(1, k) = static_cast<Scalar>(0.5 - std::sin(theta));
    } else {
      batch(0, k) = static_cast<Scalar>(std::cos(theta));
      batch(1, k) = static_cast<Scalar>(std::sin(theta));
    }
  }
  detail::add_gaussian_noise(batch, noise, generator);
  return batch;
}

/// n samples of two concentric circles: with probability 1/2 radius @p outer_radius (default
/// 1), otherwise @p inner_radius (default 1/2), at an angle ~ U[0, 2π), plus N(0, noise²·I)
/// (default noise 0.05).
/// @throws std::invalid_argument if n < 0, a radius is not finite and ≥ 0 or noise is not
///         finite and ≥ 0.
template <class Scalar = double, class Generator>
[[nodiscard]] Matrix<Scalar> sample_circles(Index n, Generator& generator,
                                            Scalar outer_radius = Scalar(1),
                                            Scalar inner_radius = Scalar(0.5),
                                            Scalar noise = Scalar(0.05)) {
  detail::require_count<Index>("sample_circles: n", n, 0);
  detail::require_nonnegative("sample_circles: outer_radius", outer_radius);
  detail::require_nonnegative("sample_circles: inner_radius", inner_radius);
  detail::require_nonnegative("sample_circles: noise", noise);
  std::uniform_real_distribution<double> angle(0.0, 2.0 * std::numbers::pi);
  std::bernoulli_distribution inner(0.5);
  Matrix<Scalar> batch(2, n);
  for (Index k = 0; k < n; ++k) {
    const double theta = angle(generator);
    const double radius = inner(generator) ? inner_radius : outer_radius;
    batch(0, k) = static_cast<Scalar>(radius * std::cos(theta));
    batch(1, k) = static_cast<Scalar>(radius * std::sin(theta));
  }
  detail::add_gaussian_noise(batch, noise, generator);
  return batch;
}

}  // namespace flowmatch
