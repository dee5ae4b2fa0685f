/// @file rates.hpp
/// @brief The jump rates of the chain that follows a mixture path, from a posterior.
///
/// With the posterior p_j = p(x₁,l = j | x_t) at a position whose current token is x_t,l, the
/// marginal chain of the mixture path jumps at the rates
///
///     u_t(j) = κ̇_t/(1 − κ_t)·(p_j − δ(j = x_t,l)),   j in [0, V),
///
/// the expectation over x₁ ~ p of the conditional rates κ̇/(1 − κ)·(δ(j = x₁) − δ(j = x_t)). The
/// rates to other tokens are ≥ 0 and the rates of a position sum to zero (the entry of the
/// current token is minus the total rate of leaving it). The mask token of a masked source
/// (j = K) has p_K = 0.
#pragma once

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/discrete/mixture_path.hpp"
#include "flowmatch/discrete/source.hpp"
#include "flowmatch/discrete/tokens.hpp"
#include "flowmatch/scheduler/scheduler.hpp"

namespace flowmatch {

/// The rates u_t(j) of the file comment for a batch: a (V·L)×N matrix, V = source.states(),
/// position-major blocks of V as in discrete/tokens.hpp.
/// @param path the mixture path (κ_t, κ̇_t).
/// @param source the source, for the vocabulary and the mask token.
/// @param t the N per-sequence times, each where κ_t < 1 (std::domain_error otherwise).
/// @param x_t the L×N current tokens, in [0, V).
/// @param posterior the (K·L)×N posterior, each position a distribution within @p tolerance.
template <ConvexScheduler S>
Matrix<typename S::scalar_type> mixture_rates(
    const MixturePath<S>& path, const DiscreteSource<typename S::scalar_type>& source,
    const ConstVectorRef<typename S::scalar_type>& t, const ConstTokenRef& x_t,
    const ConstMatrixRef<typename S::scalar_type>& posterior,
    double tolerance = detail::default_probability_tolerance<typename S::scalar_type>()) {
  using Scalar = typename S::scalar_type;
  const Index vocabulary = source.vocabulary();
  const Index states = source.states();
  detail::require_tokens("mixture_rates: x_t", x_t, vocabulary, source.masked());
  detail::require_sequence_times("mixture_rates", t, x_t.cols());
  detail::require_shape("mixture_rates: posterior", posterior, vocabulary * x_t.rows(), x_t.cols());
  detail::require_distributions("mixture_rates", "posterior", posterior, vocabulary, tolerance);
  Matrix<Scalar> rates = Matrix<Scalar>::Zero(states * x_t.rows(), x_t.cols());
  for (Index sequence = 0; sequence < x_t.cols(); ++sequence) {
    const Scalar jump_rate = path.jump_rate(t(sequence));
    for (Index position = 0; position < x_t.rows(); ++position) {
      auto rate = position_distribution(rates, states, position, sequence);
      rate.head(vocabulary) =
          jump_rate * position_distribution(posterior, vocabulary, position, sequence);
      rate(x_t(position, sequence)) -= jump_rate;
    }
  }
  return rates;
}

}  // namespace flowmatch
