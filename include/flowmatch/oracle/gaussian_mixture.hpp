/// @file gaussian_mixture.hpp
/// @brief A Gaussian mixture in R^d with closed-form density and score, and exact sampling.
///
/// p(x) = Σ_k w_k N(x; μ_k, Σ_k). Each covariance is stored with its symmetric eigendecomposition
/// Σ_k = Q_k Λ_k Q_kᵀ, so that the law of α·x + σ·z (x ~ p, z ~ N(0, I) independent), the
/// mixture Σ_k w_k N(α μ_k, C_k) with C_k = α²Σ_k + σ²I = Q_k (α²Λ_k + σ²I) Q_kᵀ, is diagonal in
/// the same bases for every α, σ. Densities and scores are then computed without any matrix
/// inverse, and component posteriors by log-sum-exp, so far-away points do not underflow.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "flowmatch/core/errors.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"

// After core/types.hpp, which includes Eigen's core module (detail/eigen_core.hpp).
#include <Eigen/Eigenvalues>

namespace flowmatch {

/// A Gaussian mixture p(x) = Σ_k w_k N(x; μ_k, Σ_k) in R^d with K components.
///
/// Weights must be finite and positive; they are normalised by their sum, so any positive
/// weights (for instance counts) are accepted and weights() returns the normalised ones.
/// Covariances must be symmetric positive definite (full) or positive (diagonal).
template <class Scalar = double>
class GaussianMixture {
 public:
  using scalar_type = Scalar;

  /// A mixture with full covariances.
  /// @param weights length K, finite and > 0 (normalised to sum to 1).
  /// @param means d×K, column k is μ_k, finite.
  /// @param covariances K matrices of shape d×d, finite, symmetric (up to rounding: the
  ///        symmetric part is used) and positive definite: the smallest eigenvalue must exceed
  ///        d·ε·(largest eigenvalue), ε the machine epsilon of Scalar.
  /// @throws std::invalid_argument naming the argument and the component otherwise.
  static GaussianMixture with_covariances(const Vector<Scalar>& weights,
                                          const Matrix<Scalar>& means,
                                          const std::vector<Matrix<Scalar>>& covariances);

  /// A mixture with diagonal covariances Σ_k = diag(variances.col(k)).
  /// @param weights length K, finite and > 0 (normalised to sum to 1).
  /// @param means d×K, column k is μ_k, finite.
  /// @param variances d×K, finite and > 0.
  /// @throws std::invalid_argument naming the argument and the component otherwise.
  static GaussianMixture with_diagonal_covariances(const Vector<Scalar>& weights,
                                                   const Matrix<Scalar>& means,
                                                   const Matrix<Scalar>& variances);

  /// The dimension d.
  [[nodiscard]] Index dim() const { return means_.rows(); }
  /// The number of components K.
  [[nodiscard]] Index components() const { return means_.cols(); }
  /// The normalised weights w (length K, summing to 1).
  [[nodiscard]] const Vector<Scalar>& weights() const { return weights_; }
  /// The means, d×K (column k is μ_k).
  [[nodiscard]] const Matrix<Scalar>& means() const { return means_; }
  /// The covariance Σ_k (d×d). @throws std::invalid_argument unless 0 <= k < K.
  [[nodiscard]] const Matrix<Scalar>& covariance(Index k) const {
    return covariances_[checked_component(k)];
  }
  /// The orthogonal eigenvectors Q_k of Σ_k (d×d). @throws std::invalid_argument unless
  /// 0 <= k < K.
  [[nodiscard]] const Matrix<Scalar>& eigenvectors(Index k) const {
    return eigenvectors_[checked_component(k)];
  }
  /// The eigenvalues of every Σ_k, d×K: column k is Λ_k, in the order of eigenvectors(k).
  [[nodiscard]] const Matrix<Scalar>& eigenvalues() const { return eigenvalues_; }

  /// The law of α·x + σ·z for x from this mixture and z ~ N(0, I) independent:
  /// Σ_k w_k N(α μ_k, α²Σ_k + σ²I), sharing the eigenvectors Q_k.
  /// @throws std::invalid_argument if α or σ is not finite or a covariance becomes singular
  ///         (α = σ = 0).
  [[nodiscard]] GaussianMixture scaled_plus_noise(Scalar alpha, Scalar sigma) const;

  /// Draws @p n independent samples (d×n): a component k with probability w_k, then
  /// μ_k + Q_k Λ_k^{1/2} z with z ~ N(0, I). Uses only @p generator.
  /// @throws std::invalid_argument if n < 0.
  template <class Generator>
  [[nodiscard]] Matrix<Scalar> sample(Index n, Generator& generator) const;

  /// log p(x) for each column of @p x (d×N): a length-N vector.
  /// @throws std::invalid_argument if x does not have d rows or is not finite;
  ///         flowmatch::numerical_error if a point is so far away that its squared
  ///         Mahalanobis distance overflows.
  [[nodiscard]] Vector<Scalar> log_prob(const ConstMatrixRef<Scalar>& x) const;

  /// The score ∇ log p(x) for each column of @p x (d×N): a d×N matrix.
  /// @throws as log_prob, and flowmatch::numerical_error if a result is not finite.
  [[nodiscard]] Matrix<Scalar> score(const ConstMatrixRef<Scalar>& x) const;

 private:
  GaussianMixture(Vector<Scalar> weights, Matrix<Scalar> means,
                  std::vector<Matrix<Scalar>> covariances, std::vector<Matrix<Scalar>> eigenvectors,
                  Matrix<Scalar> eigenvalues)
      : weights_(std::move(weights)),
        means_(std::move(means)),
        covariances_(std::move(covariances)),
        eigenvectors_(std::move(eigenvectors)),
        eigenvalues_(std::move(eigenvalues)) {}

  /// Validates the weights and means; returns the normalised weights.
  static Vector<Scalar> checked_weights(const Vector<Scalar>& weights, const Matrix<Scalar>& means);

  [[nodiscard]] std::size_t checked_component(Index k) const {
    if (k < 0 || k >= components()) {
      detail::reject_argument("GaussianMixture: component index", detail::is_value(k),
                              "in [0, " + detail::to_text(components()) + ")");
    }
    return static_cast<std::size_t>(k);
  }

  void check_points(const ConstMatrixRef<Scalar>& x) const {
    detail::require_shape("GaussianMixture: x", x, dim(), -1);
    detail::require_finite("GaussianMixture: x", x);
  }

  Vector<Scalar> weights_;
  Matrix<Scalar> means_;
  std::vector<Matrix<Scalar>> covariances_;
  std::vector<Matrix<Scalar>> eigenvectors_;
  Matrix<Scalar> eigenvalues_;
};

namespace detail {

/// Columns per block in the batched mixture computations: bounds the workspace and keeps it
/// in cache for batches of any size.
inline constexpr Index mixture_block_columns = 512;

/// Calls block(start, count) for consecutive column blocks that cover [0, columns).
template <class Function>
void for_each_column_block(Index columns, Function&& block) {
  for (Index start = 0; start < columns; start += mixture_block_columns) {
    block(start, std::min(mixture_block_columns, columns - start));
  }
}

/// Throws flowmatch::numerical_error naming @p what and the first non-finite sample, if any;
/// column j of @p result is sample first_sample + j of the batch.
template <class Derived>
void require_finite_result(const char* what, const Eigen::DenseBase<Derived>& result, double time,
                           Index first_sample = 0) {
  const Index col = first_nonfinite_index(result);
  if (col >= 0) {
    const Index sample = first_sample + col;
    throw numerical_error(std::string(what) + " is not finite at sample " + to_text(sample) +
                              " (t = " + to_text(time) + ")",
                          time, sample);
  }
}

/// The component posterior of a mixture at a block of n points.
template <class Scalar>
struct MixturePosterior {
  /// Y_k = Q_kᵀ(x − m_k): the offsets from each centre in that component's eigenbasis (d×n).
  std::vector<Matrix<Scalar>> residuals;
  /// γ_k(x) = w_k N(x; m_k, C_k) / p(x), K×n; each column sums to 1.
  Matrix<Scalar> responsibilities;
  /// log p(x), length n.
  Vector<Scalar> log_density;
};

/// The mixture Σ_k w_k N(m_k, C_k) with m_k = α μ_k and C_k = α²Σ_k + σ²I = Q_k diag(c_k) Q_kᵀ,
/// c_k = α²λ_k + σ², evaluated in each component's eigenbasis. Refers to @p mixture, which must
/// outlive it.
template <class Scalar>
class ScaledMixture {
 public:
  /// @param time only reported by numerical errors.
  ScaledMixture(const GaussianMixture<Scalar>& mixture, Scalar alpha, Scalar sigma, double time)
      : mixture_(mixture),
        time_(time),
        centres_(alpha * mixture.means()),
        variances_((alpha * alpha) * mixture.eigenvalues().array() + sigma * sigma),
        log_normalisers_(mixture.components()) {
    if (!(variances_.array() > Scalar(0)).all() || !variances_.allFinite()) {
      reject_argument<std::domain_error>(
          "GaussianMixture: alpha and sigma",
          "are " + to_text(alpha) + " and " + to_text(sigma) +
              ", which give a singular or non-finite covariance",
          "alpha^2 * lambda + sigma^2 finite and > 0 for every eigenvalue lambda");
    }
    // log w_k − ½ log det C_k − (d/2) log 2π.
    const Scalar log_two_pi = std::log(Scalar(2) * std::numbers::pi_v<Scalar>);
    for (Index k = 0; k < mixture.components(); ++k) {
      log_normalisers_(k) = std::log(mixture.weights()(k)) -
                            Scalar(0.5) * variances_.col(k).array().log().sum() -
                            Scalar(0.5) * Scalar(mixture.dim()) * log_two_pi;
    }
  }

  /// The eigenvalues c_k of every C_k (d×K).
  [[nodiscard]] const Matrix<Scalar>& variances() const { return variances_; }

  /// Fills @p out with the residuals, responsibilities and log-density at the points @p x,
  /// which are the samples first_sample, first_sample + 1, ... of a batch.
  /// @throws flowmatch::numerical_error if a point is so far from every component that its
  ///         log-density overflows.
  void posterior(const ConstMatrixRef<Scalar>& x, Index first_sample,
                 MixturePosterior<Scalar>& out) const {
    const Index components = mixture_.components();
    out.residuals.resize(static_cast<std::size_t>(components));
    out.responsibilities.resize(components, x.cols());
    Matrix<Scalar> centred(x.rows(), x.cols());
    for (Index k = 0; k < components; ++k) {
      Matrix<Scalar>& residual = out.residuals[static_cast<std::size_t>(k)];
      centred = x.colwise() - centres_.col(k);
      residual.noalias() = mixture_.eigenvectors(k).transpose() * centred;
      // log w_k N(x; m_k, C_k) = log normaliser − ½ Σ_i Y_ik² / c_ik.
      out.responsibilities.row(k) =
          (log_normalisers_(k) -
           Scalar(0.5) *
               (residual.array().square().colwise() / variances_.col(k).array()).colwise().sum())
              .matrix();
    }
    // Log-sum-exp over the components of each column.
    const Eigen::Matrix<Scalar, 1, Eigen::Dynamic> largest =
        out.responsibilities.colwise().maxCoeff();
    require_finite_result("the log-density (point too far from every component)", largest, time_,
                          first_sample);
    out.responsibilities = (out.responsibilities.rowwise() - largest).array().exp().matrix();
    const Eigen::Matrix<Scalar, 1, Eigen::Dynamic> total = out.responsibilities.colwise().sum();
    out.responsibilities.array().rowwise() /= total.array();
    out.log_density = (largest.array() + total.array().log()).transpose().matrix();
  }

  /// The whitened residuals C_k⁻¹(x − m_k) of component k in its eigenbasis: Y_k / c_k.
  [[nodiscard]] auto whitened(const MixturePosterior<Scalar>& posterior, Index k) const {
    return posterior.residuals[static_cast<std::size_t>(k)].array().colwise() /
           variances_.col(k).array();
  }

  /// The score Σ_k γ_k s_k with s_k = −C_k⁻¹(x − m_k) = −Q_k (Y_k / c_k), into @p out (d×n).
  void posterior_score(const MixturePosterior<Scalar>& posterior, MatrixRef<Scalar> out) const {
    out.setZero();
    Matrix<Scalar> weighted;
    for (Index k = 0; k < mixture_.components(); ++k) {
      weighted =
          (whitened(posterior, k).rowwise() * posterior.responsibilities.row(k).array()).matrix();
      out.noalias() -= mixture_.eigenvectors(k) * weighted;
    }
  }

  /// log p(x) at every column of @p x (checked by the caller), block by block.
  [[nodiscard]] Vector<Scalar> log_prob(const ConstMatrixRef<Scalar>& x) const {
    Vector<Scalar> out(x.cols());
    MixturePosterior<Scalar> block;
    for_each_column_block(x.cols(), [&](Index start, Index count) {
      posterior(x.middleCols(start, count), start, block);
      out.segment(start, count) = block.log_density;
    });
    return out;
  }

  /// ∇ log p(x) at every column of @p x (checked by the caller), block by block.
  /// @throws flowmatch::numerical_error if a result is not finite.
  [[nodiscard]] Matrix<Scalar> score(const ConstMatrixRef<Scalar>& x) const {
    Matrix<Scalar> out(x.rows(), x.cols());
    MixturePosterior<Scalar> block;
    for_each_column_block(x.cols(), [&](Index start, Index count) {
      posterior(x.middleCols(start, count), start, block);
      posterior_score(block, out.middleCols(start, count));
    });
    require_finite_result("the score", out, time_);
    return out;
  }

 private:
  const GaussianMixture<Scalar>& mixture_;
  double time_;
  Matrix<Scalar> centres_;          // m_k = α μ_k (d×K)
  Matrix<Scalar> variances_;        // c_k = α²λ_k + σ² (d×K)
  Vector<Scalar> log_normalisers_;  // log w_k − ½ log det C_k − (d/2) log 2π (K)
};

}  // namespace detail

template <class Scalar>
Vector<Scalar> GaussianMixture<Scalar>::checked_weights(const Vector<Scalar>& weights,
                                                        const Matrix<Scalar>& means) {
  if (weights.size() < 1) {
    detail::reject_argument("GaussianMixture: weights", "has 0 entries", "at least 1");
  }
  for (Index k = 0; k < weights.size(); ++k) {
    if (!(std::isfinite(weights(k)) && weights(k) > Scalar(0))) {
      detail::require_positive("GaussianMixture: weight of component " + detail::to_text(k),
                               weights(k));
    }
  }
  if (means.rows() < 1) {
    detail::reject_argument("GaussianMixture: means",
                            "has shape 0x" + detail::to_text(means.cols()),
                            "at least 1 row (d >= 1)");
  }
  detail::require_shape("GaussianMixture: means", means, -1, weights.size());
  detail::require_finite("GaussianMixture: means", means);
  const Scalar total = weights.sum();
  if (!std::isfinite(total)) {
    detail::reject_argument("GaussianMixture: weights", "sum to " + detail::to_text(total),
                            "a finite sum");
  }
  return weights / total;
}

template <class Scalar>
GaussianMixture<Scalar> GaussianMixture<Scalar>::with_covariances(
    const Vector<Scalar>& weights, const Matrix<Scalar>& means,
    const std::vector<Matrix<Scalar>>& covariances) {
  Vector<Scalar> normalised = checked_weights(weights, means);
  const Index dim = means.rows();
  const Index components = means.cols();
  if (static_cast<Index>(covariances.size()) != components) {
    detail::reject_argument("GaussianMixture: covariances",
                            "has " + detail::to_text(covariances.size()) + " entries",
                            "one per component (" + detail::to_text(components) + ")");
  }
  const Scalar epsilon = std::numeric_limits<Scalar>::epsilon();
  std::vector<Matrix<Scalar>> symmetric;
  std::vector<Matrix<Scalar>> eigenvectors;
  Matrix<Scalar> eigenvalues(dim, components);
  for (Index k = 0; k < components; ++k) {
    const Matrix<Scalar>& covariance = covariances[static_cast<std::size_t>(k)];
    const std::string name = "GaussianMixture: covariance of component " + detail::to_text(k);
    detail::require_shape(name, covariance, dim, dim);
    detail::require_finite(name, covariance);
    const Scalar scale = covariance.cwiseAbs().maxCoeff();
    const Scalar asymmetry = (covariance - covariance.transpose()).cwiseAbs().maxCoeff();
    if (asymmetry > Scalar(100) * epsilon * scale) {
      detail::reject_argument(name,
                              "has max |S - S^T| = " + detail::to_text(asymmetry) +
                                  " for max |S| = " + detail::to_text(scale),
                              "a symmetric matrix");
    }
    symmetric.push_back(Scalar(0.5) * (covariance + covariance.transpose()));
    const Eigen::SelfAdjointEigenSolver<Matrix<Scalar>> solver(symmetric.back());
    if (solver.info() != Eigen::Success) {
      detail::reject_argument(name, "has no eigendecomposition", "a symmetric matrix");
    }
    // Eigenvalues come in increasing order.
    const Scalar smallest = solver.eigenvalues()(0);
    const Scalar largest = solver.eigenvalues()(dim - 1);
    if (!(smallest > Scalar(dim) * epsilon * largest) || !(largest > Scalar(0))) {
      detail::reject_argument(name,
                              "has eigenvalues in [" + detail::to_text(smallest) + ", " +
                                  detail::to_text(largest) + "]",
                              "positive definite, the smallest > d*epsilon*largest");
    }
    eigenvectors.push_back(solver.eigenvectors());
    eigenvalues.col(k) = solver.eigenvalues();
  }
  return GaussianMixture(std::move(normalised), means, std::move(symmetric),
                         std::move(eigenvectors), std::move(eigenvalues));
}

template <class Scalar>
GaussianMixture<Scalar> GaussianMixture<Scalar>::with_diagonal_covariances(
    const Vector<Scalar>& weights, const Matrix<Scalar>& means, const Matrix<Scalar>& variances) {
  Vector<Scalar> normalised = checked_weights(weights, means);
  const Index dim = means.rows();
  const Index components = means.cols();
  detail::require_shape("GaussianMixture: variances", variances, dim, components);
  std::vector<Matrix<Scalar>> covariances;
  std::vector<Matrix<Scalar>> eigenvectors;
  for (Index k = 0; k < components; ++k) {
    for (Index i = 0; i < dim; ++i) {
      if (!(std::isfinite(variances(i, k)) && variances(i, k) > Scalar(0))) {
        detail::require_positive("GaussianMixture: variance " + detail::to_text(i) +
                                     " of component " + detail::to_text(k),
                                 variances(i, k));
      }
    }
    covariances.push_back(variances.col(k).asDiagonal());
    eigenvectors.push_back(Matrix<Scalar>::Identity(dim, dim));
  }
  return GaussianMixture(std::move(normalised), means, std::move(covariances),
                         std::move(eigenvectors), variances);
}

template <class Scalar>
GaussianMixture<Scalar> GaussianMixture<Scalar>::scaled_plus_noise(Scalar alpha,
                                                                   Scalar sigma) const {
  detail::require_finite_value("GaussianMixture::scaled_plus_noise: alpha", alpha);
  detail::require_finite_value("GaussianMixture::scaled_plus_noise: sigma", sigma);
  Matrix<Scalar> eigenvalues = (alpha * alpha) * eigenvalues_.array() + sigma * sigma;
  if (!(eigenvalues.array() > Scalar(0)).all() || !eigenvalues.allFinite()) {
    detail::reject_argument("GaussianMixture::scaled_plus_noise: alpha and sigma",
                            "are " + detail::to_text(alpha) + " and " + detail::to_text(sigma) +
                                ", which give a singular or non-finite covariance",
                            "alpha^2 * lambda + sigma^2 finite and > 0 for every eigenvalue "
                            "lambda");
  }
  std::vector<Matrix<Scalar>> covariances;
  for (const Matrix<Scalar>& covariance : covariances_) {
    covariances.push_back((alpha * alpha) * covariance);
    covariances.back().diagonal().array() += sigma * sigma;
  }
  return GaussianMixture(weights_, alpha * means_, std::move(covariances), eigenvectors_,
                         std::move(eigenvalues));
}

template <class Scalar>
template <class Generator>
Matrix<Scalar> GaussianMixture<Scalar>::sample(Index n, Generator& generator) const {
  detail::require_count<Index>("GaussianMixture::sample: n", n, 0);
  std::discrete_distribution<Index> pick_component(weights_.data(),
                                                   weights_.data() + weights_.size());
  std::normal_distribution<Scalar> standard_normal;
  // Q_k Λ_k^{1/2}: maps N(0, I) to N(0, Σ_k).
  std::vector<Matrix<Scalar>> square_roots;
  for (Index k = 0; k < components(); ++k) {
    square_roots.push_back(eigenvectors_[static_cast<std::size_t>(k)] *
                           eigenvalues_.col(k).cwiseSqrt().asDiagonal());
  }
  Matrix<Scalar> samples(dim(), n);
  Vector<Scalar> noise(dim());
  for (Index col = 0; col < n; ++col) {
    const Index k = pick_component(generator);
    for (Index i = 0; i < dim(); ++i) noise(i) = standard_normal(generator);
    samples.col(col) = means_.col(k);
    samples.col(col).noalias() += square_roots[static_cast<std::size_t>(k)] * noise;
  }
  return samples;
}

template <class Scalar>
Vector<Scalar> GaussianMixture<Scalar>::log_prob(const ConstMatrixRef<Scalar>& x) const {
  check_points(x);
  return detail::ScaledMixture<Scalar>(*this, Scalar(1), Scalar(0), 1.0).log_prob(x);
}

template <class Scalar>
Matrix<Scalar> GaussianMixture<Scalar>::score(const ConstMatrixRef<Scalar>& x) const {
  check_points(x);
  return detail::ScaledMixture<Scalar>(*this, Scalar(1), Scalar(0), 1.0).score(x);
}

}  // namespace flowmatch
