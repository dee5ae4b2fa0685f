/// @file standard_normal.hpp
/// @brief The standard normal source N(0, I): its log-density and score, the default source
/// of the likelihood and score computations.
#pragma once

#include <cmath>
#include <numbers>

#include "flowmatch/core/types.hpp"

namespace flowmatch {

/// The standard normal distribution N(0, I) in R^d, for batches of any dimension.
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

  /// ∇log N(x; 0, I) = −x for each column of @p x.
  template <class Derived>
  Matrix<typename Derived::Scalar> score(const Eigen::MatrixBase<Derived>& x) const {
    return -x;
  }
};

}  // namespace flowmatch
