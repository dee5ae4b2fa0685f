/// @file discrete_joint.hpp
/// @brief An exact oracle of discrete flow matching: a joint distribution over a few positions
/// and a small vocabulary, every sequence enumerable, and its exact posterior on the mixture
/// path.
///
/// A joint p_data over the K^L sequences x ∈ {0..K−1}^L (positions may be correlated). Under the
/// mixture path with a factorised source p₀,
///
///     p(x_t | x₁) = Π_l [(1 − κ_t)·p₀(x_t,l; l) + κ_t·δ(x_t,l = x₁,l)],
///
/// so by Bayes' rule p(x₁ | x_t) ∝ p_data(x₁)·p(x_t | x₁), and the posterior of one position is
/// its marginal, the sum over the other positions of x₁. DiscreteJointPosterior computes it by
/// enumerating all K^L sequences (O(K^L·L) per sequence of the batch): exact and independent of
/// the sampler, for tests.
///
/// Sequences are numbered by index(x) = Σ_l x_l·K^l (position 0 varies fastest).
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <utility>
#include <vector>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/categorical.hpp"
#include "flowmatch/detail/sample_noise.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/discrete/mixture_path.hpp"
#include "flowmatch/discrete/source.hpp"
#include "flowmatch/discrete/tokens.hpp"
#include "flowmatch/scheduler/scheduler.hpp"

namespace flowmatch {

/// A distribution over the K^L token sequences of length L, given by its probabilities.
class DiscreteJoint {
 public:
  /// @param probabilities p(x) of the K^L sequences by index (see the file comment): finite,
  ///        non-negative, summing to 1 within 1e-9.
  /// @param vocabulary K >= 2.
  /// @param length L >= 1.
  DiscreteJoint(Vector<double> probabilities, Index vocabulary, Index length)
      : probabilities_(std::move(probabilities)), vocabulary_(vocabulary), length_(length) {
    detail::require_count("DiscreteJoint: vocabulary", vocabulary, Index(2));
    detail::require_count("DiscreteJoint: length", length, Index(1));
    Index sequences = 1;
    for (Index position = 0; position < length; ++position) sequences *= vocabulary;
    detail::require_shape("DiscreteJoint: probabilities", probabilities_, sequences, 1);
    detail::require_distributions("DiscreteJoint", "probabilities", probabilities_, sequences,
                                  1e-9);
    tokens_.resize(length, sequences);
    for (Index index = 0; index < sequences; ++index) {
      Index rest = index;
      for (Index position = 0; position < length; ++position) {
        tokens_(position, index) = rest % vocabulary;
        rest /= vocabulary;
      }
    }
  }

  /// K.
  [[nodiscard]] Index vocabulary() const { return vocabulary_; }
  /// L.
  [[nodiscard]] Index length() const { return length_; }
  /// K^L, the number of sequences.
  [[nodiscard]] Index sequences() const { return probabilities_.size(); }
  /// p(x) of every sequence by index.
  [[nodiscard]] const Vector<double>& probabilities() const { return probabilities_; }

  /// The index Σ_l x_l·K^l of column @p sequence of @p tokens (L×N, tokens in [0, K)).
  [[nodiscard]] Index index_of(const ConstTokenRef& tokens, Index sequence) const {
    Index index = 0;
    for (Index position = length_ - 1; position >= 0; --position) {
      index = index * vocabulary_ + tokens(position, sequence);
    }
    return index;
  }

  /// The token at @p position of the sequence numbered @p index.
  [[nodiscard]] Token token_of(Index index, Index position) const {
    return tokens_(position, index);
  }

  /// log p(x) of every column of @p tokens (L×N, tokens in [0, K)); −inf where p(x) = 0.
  [[nodiscard]] Vector<double> log_probability(const ConstTokenRef& tokens) const {
    detail::require_tokens("DiscreteJoint::log_probability: tokens", tokens, vocabulary_, false,
                           length_);
    Vector<double> result(tokens.cols());
    for (Index sequence = 0; sequence < tokens.cols(); ++sequence) {
      result(sequence) = std::log(probabilities_(index_of(tokens, sequence)));
    }
    return result;
  }

  /// @p count >= 1 exact draws (L×count); one 64-bit key from @p generator, one word of its
  /// stream per sequence (detail/sample_noise.hpp).
  template <std::uniform_random_bit_generator Generator>
  [[nodiscard]] TokenMatrix sample(Index count, Generator& generator) const {
    detail::require_count("DiscreteJoint::sample: count", count, Index(1));
    const std::uint64_t key = std::uniform_int_distribution<std::uint64_t>()(generator);
    TokenMatrix tokens(length_, count);
    for (Index sequence = 0; sequence < count; ++sequence) {
      detail::SampleStream stream(key, static_cast<std::uint64_t>(sequence), 0);
      const Index index = detail::categorical_index(probabilities_, detail::unit_uniform(stream));
      for (Index position = 0; position < length_; ++position) {
        tokens(position, sequence) = token_of(index, position);
      }
    }
    return tokens;
  }

 private:
  Vector<double> probabilities_;
  Index vocabulary_;
  Index length_;
  TokenMatrix tokens_;  // column index: the tokens of the sequence numbered index
};

/// The exact posterior p(x₁,l | x_t) of a DiscreteJoint under a mixture path and a source: a
/// Denoiser (discrete/denoiser.hpp), computed in double and written in the path's scalar type.
template <ConvexScheduler S>
class DiscreteJointPosterior {
 public:
  using Scalar = typename S::scalar_type;

  /// @param joint the data distribution.
  /// @param path the mixture path.
  /// @param source the source, over the joint's vocabulary (and of its length if given).
  DiscreteJointPosterior(DiscreteJoint joint, MixturePath<S> path, DiscreteSource<Scalar> source)
      : joint_(std::move(joint)), path_(std::move(path)), source_(std::move(source)) {
    if (source_.vocabulary() != joint_.vocabulary()) {
      detail::reject_argument("DiscreteJointPosterior: source vocabulary",
                              detail::is_value(source_.vocabulary()),
                              detail::to_text(joint_.vocabulary()) + " (the joint's vocabulary)");
    }
    source_.check_length("DiscreteJointPosterior: joint length", joint_.length());
  }

  /// K.
  [[nodiscard]] Index vocabulary() const { return joint_.vocabulary(); }

  /// Writes p(x₁,l | x_t) at the per-sequence times @p t into @p posterior ((K·L)×N); throws
  /// std::domain_error where x_t has probability 0 under the path. A column equal to an earlier
  /// one, at the same time, copies its posterior (a batch holds at most V^L distinct columns).
  void operator()(const ConstVectorRef<Scalar>& t, const ConstTokenRef& x_t,
                  MatrixRef<Scalar> posterior) const {
    const Index vocabulary = joint_.vocabulary();
    const Index length = joint_.length();
    detail::require_tokens("DiscreteJointPosterior: x_t", x_t, vocabulary, source_.masked(),
                           length);
    detail::require_sequence_times("DiscreteJointPosterior", t, x_t.cols());
    detail::require_shape("DiscreteJointPosterior: posterior", posterior, vocabulary * length,
                          x_t.cols());
    Vector<double> marginal(vocabulary * length);
    // computed[pattern]: the last column whose tokens read pattern = Σ_l x_t,l·V^l, or -1.
    Index patterns = 1;
    for (Index position = 0; position < length; ++position) patterns *= source_.states();
    std::vector<Index> computed(static_cast<std::size_t>(patterns), -1);
    for (Index sequence = 0; sequence < x_t.cols(); ++sequence) {
      Index pattern = 0;
      for (Index position = length - 1; position >= 0; --position) {
        pattern = pattern * source_.states() + x_t(position, sequence);
      }
      Index& earlier = computed[static_cast<std::size_t>(pattern)];
      if (earlier >= 0 && t(earlier) == t(sequence)) {
        posterior.col(sequence) = posterior.col(earlier);
        continue;
      }
      earlier = sequence;
      const double kappa = static_cast<double>(path_.kappa(t(sequence)));
      const double remaining = static_cast<double>(path_.remaining(t(sequence)));  // 1 − κ
      marginal.setZero();
      double total = 0;
      for (Index index = 0; index < joint_.sequences(); ++index) {
        // p_data(x₁)·Π_l [(1 − κ)·p₀(x_t,l) + κ·δ(x_t,l = x₁,l)], 1 − κ = σ.
        double weight = joint_.probabilities()(index);
        for (Index position = 0; position < length && weight > 0; ++position) {
          const Token current = x_t(position, sequence);
          weight *= remaining * source_.probability(current, position) +
                    (current == joint_.token_of(index, position) ? kappa : 0.0);
        }
        if (weight <= 0) continue;
        total += weight;
        for (Index position = 0; position < length; ++position) {
          marginal(position * vocabulary + joint_.token_of(index, position)) += weight;
        }
      }
      if (!(total > 0)) {
        detail::reject_argument<std::domain_error>(
            "DiscreteJointPosterior: x_t column " + detail::to_text(sequence),
            "has probability 0 under the path at t = " + detail::to_text(t(sequence)),
            "tokens reachable from the source and the data");
      }
      posterior.col(sequence) = (marginal / total).template cast<Scalar>();
    }
  }

 private:
  DiscreteJoint joint_;
  MixturePath<S> path_;
  DiscreteSource<Scalar> source_;
};

}  // namespace flowmatch
