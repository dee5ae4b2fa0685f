/// @file loss.hpp
/// @brief The training losses of a probability denoiser on the mixture path: the generalized
/// KL divergence and the cross-entropy.
///
/// For a token with current value x_t, data value x₁, δ = δ(x_t = x₁) and the denoiser's
/// probabilities p(·) at its position, the generalized KL loss is
///
///     ℓ = −κ̇_t/(1 − κ_t)·[p(x_t) − δ + (1 − δ)·log p(x₁)],
///
/// the rate-matching term of the path-space KL between the conditional chain (rate
/// κ̇/(1 − κ) towards x₁) and the model's chain (rates κ̇/(1 − κ)·p(j) towards j ≠ x_t); p(x_t)
/// is 0 for the mask token. It is ≥ 0: for δ = 1 it is κ̇/(1 − κ)·(1 − p(x₁)), and for δ = 0,
/// −log p(x₁) ≥ −log(1 − p(x_t)) ≥ p(x_t). The cross-entropy is −log p(x₁). A probability 0 of
/// x₁ gives +inf (never NaN: the log is not taken where δ = 1).
#pragma once

#include <cmath>
#include <limits>
#include <string_view>
#include <utility>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/discrete/mixture_path.hpp"
#include "flowmatch/discrete/source.hpp"
#include "flowmatch/discrete/tokens.hpp"
#include "flowmatch/scheduler/scheduler.hpp"

namespace flowmatch {

/// How a per-token loss is reduced.
enum class Reduction {
  mean,  ///< the mean over all L·N tokens (a 1×1 result).
  sum,   ///< the sum over all tokens (a 1×1 result).
  none,  ///< the L×N matrix of per-token losses.
};

namespace detail {

/// @p per_token (L×N) reduced by @p reduction.
template <class Scalar>
Matrix<Scalar> reduce_loss(Matrix<Scalar> per_token, Reduction reduction) {
  switch (reduction) {
    case Reduction::mean:
      return Matrix<Scalar>::Constant(1, 1, per_token.mean());
    case Reduction::sum:
      return Matrix<Scalar>::Constant(1, 1, per_token.sum());
    case Reduction::none:
      break;
  }
  return per_token;
}

/// Checks x₁ (L×N in [0, K)) and the (K·L)×N posterior named "<function>: ...".
template <class Scalar>
void require_loss_posterior(std::string_view function, const ConstTokenRef& x1,
                            const ConstMatrixRef<Scalar>& posterior, Index vocabulary,
                            double tolerance) {
  require_tokens(argument_name(function, "x1"), x1, vocabulary, false);
  if (posterior.rows() != vocabulary * x1.rows() || posterior.cols() != x1.cols()) {
    require_shape(argument_name(function, "posterior"), posterior, vocabulary * x1.rows(),
                  x1.cols());
  }
  require_distributions(function, "posterior", posterior, vocabulary, tolerance);
}

}  // namespace detail

/// The generalized KL loss of the file comment.
/// @param path the mixture path (κ̇/(1 − κ)).
/// @param source the source, for the vocabulary K and the mask token.
/// @param t the N per-sequence times, each where κ_t < 1 (std::domain_error otherwise).
/// @param x_t the L×N tokens on the path, in [0, source.states()).
/// @param x1 the L×N data tokens, in [0, K).
/// @param posterior the denoiser's (K·L)×N output at (t, x_t), distributions within @p tolerance.
/// @param reduction mean, sum (1×1 results) or none (L×N).
template <ConvexScheduler S>
Matrix<typename S::scalar_type> generalized_kl_loss(
    const MixturePath<S>& path, const DiscreteSource<typename S::scalar_type>& source,
    const ConstVectorRef<typename S::scalar_type>& t, const ConstTokenRef& x_t,
    const ConstTokenRef& x1, const ConstMatrixRef<typename S::scalar_type>& posterior,
    Reduction reduction = Reduction::mean,
    double tolerance = detail::default_probability_tolerance<typename S::scalar_type>()) {
  using Scalar = typename S::scalar_type;
  const Index vocabulary = source.vocabulary();
  detail::require_tokens("generalized_kl_loss: x_t", x_t, vocabulary, source.masked());
  detail::require_shape("generalized_kl_loss: x1", x1, x_t.rows(), x_t.cols());
  detail::require_loss_posterior<Scalar>("generalized_kl_loss", x1, posterior, vocabulary,
                                         tolerance);
  detail::require_sequence_times("generalized_kl_loss", t, x_t.cols());
  Matrix<Scalar> loss(x_t.rows(), x_t.cols());
  for (Index sequence = 0; sequence < x_t.cols(); ++sequence) {
    const Scalar jump_rate = path.jump_rate(t(sequence));
    for (Index position = 0; position < x_t.rows(); ++position) {
      const auto probabilities = position_distribution(posterior, vocabulary, position, sequence);
      const Token current = x_t(position, sequence);
      const Token target = x1(position, sequence);
      const Scalar p_target = probabilities(target);
      // δ = 1: κ̇/(1 − κ)·(1 − p(x₁)); δ = 0: −κ̇/(1 − κ)·(p(x_t) + log p(x₁)).
      loss(position, sequence) =
          current == target
              ? jump_rate * (Scalar(1) - p_target)
              : -jump_rate * ((current < vocabulary ? probabilities(current) : Scalar(0)) +
                              std::log(p_target));
    }
  }
  return detail::reduce_loss(std::move(loss), reduction);
}

/// The cross-entropy −log p(x₁) of the denoiser's (K·L)×N @p posterior at the L×N data tokens
/// @p x1 (in [0, vocabulary)), reduced by @p reduction.
template <class Scalar>
Matrix<Scalar> cross_entropy_loss(
    const ConstTokenRef& x1, const ConstMatrixRef<Scalar>& posterior, Index vocabulary,
    Reduction reduction = Reduction::mean,
    double tolerance = detail::default_probability_tolerance<Scalar>()) {
  detail::require_count("cross_entropy_loss: vocabulary", vocabulary, Index(1));
  detail::require_loss_posterior<Scalar>("cross_entropy_loss", x1, posterior, vocabulary,
                                         tolerance);
  Matrix<Scalar> loss(x1.rows(), x1.cols());
  for (Index sequence = 0; sequence < x1.cols(); ++sequence) {
    for (Index position = 0; position < x1.rows(); ++position) {
      loss(position, sequence) = -std::log(
          position_distribution(posterior, vocabulary, position, sequence)(x1(position, sequence)));
    }
  }
  return detail::reduce_loss(std::move(loss), reduction);
}

}  // namespace flowmatch
