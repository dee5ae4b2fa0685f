// A test helper: the marginal velocity of the CondOT path to a Gaussian mixture with diagonal
// covariances, written as a generic lambda over its scalar type from the plain formula,
// independently of the library's oracle class, so that forward mode differentiates it.
#pragma once

#include <cmath>
#include <numbers>
#include <type_traits>
#include <vector>

#include "flowmatch/core/types.hpp"
#include "flowmatch/oracle/gaussian_mixture.hpp"

namespace flowmatch_test {

using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::Vector;

/// A small 2-D mixture with diagonal covariances.
struct DiagonalMixture {
  Vector<double> weights;
  Matrix<double> means;      // d×K
  Matrix<double> variances;  // d×K

  static DiagonalMixture two_dimensional() {
    DiagonalMixture mixture;
    mixture.weights = Vector<double>(3);
    mixture.weights << 0.5, 0.3, 0.2;
    mixture.means = Matrix<double>(2, 3);
    mixture.means << -1.0, 1.5, 0.5,  //
        0.5, -0.5, 1.5;
    mixture.variances = Matrix<double>(2, 3);
    mixture.variances << 0.4, 0.6, 0.3,  //
        0.5, 0.3, 0.8;
    return mixture;
  }

  [[nodiscard]] flowmatch::GaussianMixture<double> oracle() const {
    return flowmatch::GaussianMixture<double>::with_diagonal_covariances(weights, means, variances);
  }

  /// u_t(x) = Σ_k γ_k(x) [μ_k + a_k ∘ (x − t μ_k)] under CondOT (α = t, σ = 1 − t), with
  /// c_k = t² λ_k + (1 − t)², a_k = (t λ_k − (1 − t))/c_k and γ_k ∝ w_k N(x; t μ_k, diag c_k).
  [[nodiscard]] auto field() const {
    return [mixture = *this](auto t, const auto& x) {
      using T = typename std::decay_t<decltype(x)>::Scalar;
      const T time(t);
      const T one(1);
      const T half(0.5);
      const Index components = mixture.weights.size();
      Matrix<T> logits(components, x.cols());
      Matrix<T> velocity = Matrix<T>::Zero(x.rows(), x.cols());
      std::vector<Matrix<T>> conditional(static_cast<std::size_t>(components));
      for (Index k = 0; k < components; ++k) {
        const Vector<T> mean = mixture.means.col(k).cast<T>();
        const Vector<T> lambda = mixture.variances.col(k).cast<T>();
        const Vector<T> variance =
            (time * time * lambda.array() + (one - time) * (one - time)).matrix();
        const Vector<T> gain = ((time * lambda.array() - (one - time)) / variance.array()).matrix();
        const Matrix<T> offset = x.colwise() - time * mean;
        logits.row(k) =
            (T(std::log(mixture.weights(k))) -
             half * (offset.array().square().colwise() / variance.array()).colwise().sum() -
             half * (T(2.0 * std::numbers::pi) * variance.array()).log().sum())
                .matrix();
        conditional[static_cast<std::size_t>(k)] =
            (offset.array().colwise() * gain.array()).matrix().colwise() + mean;
      }
      const Matrix<T> unnormalised = logits.array().exp().matrix();
      const Matrix<T> total = unnormalised.colwise().sum();
      for (Index k = 0; k < components; ++k) {
        velocity += (conditional[static_cast<std::size_t>(k)].array().rowwise() *
                     (unnormalised.row(k).array() / total.array()))
                        .matrix();
      }
      return velocity;
    };
  }
};

}  // namespace flowmatch_test
