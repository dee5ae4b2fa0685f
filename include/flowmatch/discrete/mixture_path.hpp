/// @file mixture_path.hpp
/// @brief The mixture path of discrete flow matching: each token of x_t is the token of x₁
/// with probability κ_t and the token of x₀ otherwise.
///
/// Given a source sequence x₀ ~ p₀ and a data sequence x₁, the path is factorised over
/// positions:
///
///     p_t(x_t | x₀, x₁) = Π_l [(1 − κ_t)·δ(x_t,l = x₀,l) + κ_t·δ(x_t,l = x₁,l)],
///
/// with κ the α of a ConvexScheduler (κ_0 = 0, κ_1 = 1, non-decreasing; κ̇ its d_alpha). The
/// chain that follows it jumps a token that is not yet x₁'s to x₁'s at the rate κ̇_t/(1 − κ_t)
/// (jump_rate).
///
/// Randomness: sample draws one 64-bit key from the caller's generator; sequence n reads one
/// word per position from its own counter-based stream of that key and n
/// (detail/sample_noise.hpp), so it does not depend on the other sequences of the batch.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <stdexcept>
#include <utility>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/categorical.hpp"
#include "flowmatch/detail/sample_noise.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/discrete/tokens.hpp"
#include "flowmatch/scheduler/scheduler.hpp"

namespace flowmatch {

/// The mixture path with κ_t = scheduler.alpha(t) (see the file comment).
template <ConvexScheduler S>
class MixturePath {
 public:
  using scheduler_type = S;
  using scalar_type = typename S::scalar_type;

  /// @param scheduler a convex scheduler whose α is 0 at t = 0, 1 at t = 1 (within 4 rounding
  ///        errors) and non-decreasing on 17 equally spaced times, with σ = 1 − α there (within
  ///        4 rounding errors); otherwise throws std::invalid_argument.
  explicit MixturePath(S scheduler = S()) : scheduler_(std::move(scheduler)) {
    using Scalar = scalar_type;
    const Scalar slack = Scalar(4) * std::numeric_limits<Scalar>::epsilon();
    const Scalar start = scheduler_.alpha(Scalar(0));
    const Scalar end = scheduler_.alpha(Scalar(1));
    const char* expectation = "kappa from 0 at t = 0 to 1 at t = 1, non-decreasing";
    if (!(std::abs(start) <= slack)) {
      detail::reject_argument("MixturePath: scheduler kappa(0)", detail::is_value(start),
                              expectation);
    }
    if (!(std::abs(end - Scalar(1)) <= slack)) {
      detail::reject_argument("MixturePath: scheduler kappa(1)", detail::is_value(end),
                              expectation);
    }
    constexpr int probes = 16;
    Scalar previous = start;
    for (int probe = 1; probe <= probes; ++probe) {
      const Scalar t = Scalar(probe) / Scalar(probes);
      const Scalar kappa = scheduler_.alpha(t);
      if (!(kappa >= previous)) {
        detail::reject_argument("MixturePath: scheduler kappa(" + detail::to_text(t) + ")",
                                detail::is_value(kappa) + ", below kappa(" +
                                    detail::to_text(t - Scalar(1) / probes) +
                                    ") = " + detail::to_text(previous),
                                expectation);
      }
      previous = kappa;
      const Scalar sigma = scheduler_.sigma(t);
      if (!(std::abs(kappa + sigma - Scalar(1)) <= slack)) {
        detail::reject_argument(
            "MixturePath: scheduler sigma(" + detail::to_text(t) + ")",
            detail::is_value(sigma) + " with kappa " + detail::to_text(kappa),
            "sigma = 1 - kappa (a convex scheduler; 1 - kappa is read from sigma)");
      }
    }
  }

  /// The scheduler.
  [[nodiscard]] const S& scheduler() const { return scheduler_; }

  /// κ_t, the probability that a token of x_t is x₁'s; throws std::domain_error outside [0, 1].
  [[nodiscard]] scalar_type kappa(scalar_type t) const { return scheduler_.alpha(t); }

  /// κ̇_t; throws std::domain_error outside [0, 1] and where the scheduler's is infinite.
  [[nodiscard]] scalar_type d_kappa(scalar_type t) const { return scheduler_.d_alpha(t); }

  /// 1 − κ_t, as the scheduler's σ_t (which keeps its precision as t → 1).
  [[nodiscard]] scalar_type remaining(scalar_type t) const { return scheduler_.sigma(t); }

  /// κ̇_t/(1 − κ_t), the rate of the jump to x₁'s token, with 1 − κ_t = σ_t; throws
  /// std::domain_error where σ_t = 0 (at t = 1), where the rate is infinite.
  [[nodiscard]] scalar_type jump_rate(scalar_type t) const {
    const scalar_type sigma = remaining(t);
    if (!(sigma > scalar_type(0))) {
      detail::reject_argument<std::domain_error>(
          "MixturePath::jump_rate: t", detail::is_value(t) + ", where kappa is 1",
          "a time where kappa < 1 (the jump rate kappa'/(1 - kappa) is infinite there)");
    }
    return d_kappa(t) / sigma;
  }

  /// x_t for the pairs (x₀, x₁) at the per-sequence times @p t: each token is x₁'s with
  /// probability κ_t of its sequence, x₀'s otherwise. @p x0 and @p x1 are L×N with tokens
  /// >= 0 (the caller's vocabulary is not checked here), @p t has N finite entries in [0, 1].
  template <std::uniform_random_bit_generator Generator>
  [[nodiscard]] TokenMatrix sample(const ConstTokenRef& x0, const ConstTokenRef& x1,
                                   const ConstVectorRef<scalar_type>& t,
                                   Generator& generator) const {
    // The path does not know the vocabulary: tokens need only be non-negative.
    const Index any_vocabulary = std::numeric_limits<Token>::max();
    detail::require_tokens("MixturePath::sample: x0", x0, any_vocabulary, false);
    detail::require_tokens("MixturePath::sample: x1", x1, any_vocabulary, false, x0.rows());
    detail::require_shape("MixturePath::sample: x1", x1, x0.rows(), x0.cols());
    detail::require_sequence_times("MixturePath::sample", t, x0.cols());
    const std::uint64_t key = std::uniform_int_distribution<std::uint64_t>()(generator);
    TokenMatrix x_t(x0.rows(), x0.cols());
    for (Index sequence = 0; sequence < x0.cols(); ++sequence) {
      const double kappa_t = static_cast<double>(kappa(t(sequence)));
      detail::SampleStream stream(key, static_cast<std::uint64_t>(sequence), 0);
      for (Index position = 0; position < x0.rows(); ++position) {
        x_t(position, sequence) = detail::unit_uniform(stream) < kappa_t ? x1(position, sequence)
                                                                         : x0(position, sequence);
      }
    }
    return x_t;
  }

 private:
  S scheduler_;
};

}  // namespace flowmatch
