/// @file standard_normal.hpp
/// @brief The standard normal source N(0, I): its log-density and score, the default source
/// of the likelihood and score computations.
#pragma once

#include <cmath>
#include <numbers>
#include <random>
#include <stdexcept>
#include <string>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"

namespace flowmatch {

/// The standard normal distribution N(0, I) in R^d, for batches of any dimension: the source
/// (noise) distribution of flow matching.
///
/// A source distribution for log_likelihood is any callable `source(x)` mapping a d×N batch to
/// the length-N vector of log-densities; for exact_score and sample_with_score it must also
/// offer `source.score(x)`, the d×N batch of ∇log p_0. StandardNormal offers both.
struct StandardNormal {
  /// log N(x; 0, I) = −½‖x‖² − (d/2)·log(2π) for each column of @p x.
  template <class Derived>
  Vector<typename Derived::Scalar> operator()(const Eigen::MatrixBase<Derived>& x) const {
    using Scalar = typename Derived::Scalar;
    const Scalar log_normaliser = Scalar(0.5) * static_cast<Scalar>(x.rows()) *
                                  std::log(Scalar(2) * std::numbers::pi_v<Scalar>);
    return (Scalar(-0.5) * x.colwise().squaredNorm().array() - log_normaliser).matrix().transpose();
  }

  /// Draws a d×N batch of independent N(0, 1) entries from @p generator, in storage order
  /// (column by column). @throws std::invalid_argument if d or N is negative.
  template <class Scalar = double, std::uniform_random_bit_generator Generator>
  static Matrix<Scalar> sample(Index dim, Index count, Generator& generator) {
    if (dim < 0 || count < 0) {
      detail::reject_argument("StandardNormal::sample: shape",
                              "is " + detail::to_text(dim) + "x" + detail::to_text(count),
                              "sizes >= 0");
    }
    Matrix<Scalar> noise(dim, count);
    sample_into<Scalar>(noise, generator);
    return noise;
  }

  /// Fills @p noise (any shape) with independent N(0, 1) entries from @p generator, in storage
  /// order: the draws sample() makes for that shape, without allocating.
  template <class Scalar, std::uniform_random_bit_generator Generator>
  static void sample_into(MatrixRef<Scalar> noise, Generator& generator) {
    std::normal_distribution<Scalar> normal(Scalar(0), Scalar(1));
    for (Index col = 0; col < noise.cols(); ++col) {
      for (Scalar& value : noise.col(col)) value = normal(generator);
    }
  }

  /// ∇log N(x; 0, I) = −x for each column of @p x.
  template <class Derived>
  Matrix<typename Derived::Scalar> score(const Eigen::MatrixBase<Derived>& x) const {
    return -x;
  }
};

}  // namespace flowmatch
