/// @file source.hpp
/// @brief The source distribution p₀ of discrete flow matching: uniform, masked or given per
/// position.
///
/// A source is a factorised distribution over token sequences, p₀(x) = Π_l p₀(x_l; l):
///
///   - uniform: p₀(j; l) = 1/K for every token of the vocabulary;
///   - masked: all the mass on one extra mask token K, so the chain has K + 1 states;
///   - given: any K×L matrix of per-position distributions (column l is position l).
///
/// Draws are categorical draws in double precision from one uniform variate each; a source
/// sample reads one word per token from the counter-based stream of its sequence
/// (detail/sample_noise.hpp), so sequence n of a sample depends only on the generator's key and
/// on n, never on the size or split of the batch.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/categorical.hpp"
#include "flowmatch/detail/sample_noise.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/discrete/tokens.hpp"

namespace flowmatch {

/// The kind of a DiscreteSource.
enum class SourceKind {
  uniform,  ///< p₀ uniform over the K tokens.
  masked,   ///< p₀ a point mass on the mask token K.
  given,    ///< p₀ a given K×L matrix of per-position distributions.
};

/// A factorised source distribution over token sequences (see the file comment). The scalar
/// type is that of the given probabilities and of probabilities(); draws are in double.
template <class Scalar = double>
class DiscreteSource {
 public:
  using scalar_type = Scalar;

  /// The uniform source over @p vocabulary >= 2 tokens.
  static DiscreteSource uniform(Index vocabulary) {
    detail::require_count("DiscreteSource::uniform: vocabulary", vocabulary, Index(2));
    return DiscreteSource(SourceKind::uniform, vocabulary, Matrix<double>());
  }

  /// The masked source over @p vocabulary >= 1 data tokens: every token is the mask token
  /// K = vocabulary.
  static DiscreteSource masked(Index vocabulary) {
    detail::require_count("DiscreteSource::masked: vocabulary", vocabulary, Index(1));
    return DiscreteSource(SourceKind::masked, vocabulary, Matrix<double>());
  }

  /// The source with the per-position distributions @p probabilities (K×L, K >= 2, L >= 1,
  /// each column finite, non-negative and summing to 1 within @p tolerance).
  static DiscreteSource given(const ConstMatrixRef<Scalar>& probabilities,
                              double tolerance = detail::default_probability_tolerance<Scalar>()) {
    detail::require_count("DiscreteSource::given: probabilities rows (vocabulary)",
                          probabilities.rows(), Index(2));
    detail::require_count("DiscreteSource::given: probabilities columns (length)",
                          probabilities.cols(), Index(1));
    detail::require_distributions("DiscreteSource::given", "probabilities",
                                  probabilities.reshaped(), probabilities.rows(), tolerance);
    return DiscreteSource(SourceKind::given, probabilities.rows(),
                          probabilities.template cast<double>());
  }

  /// What kind of source this is.
  [[nodiscard]] SourceKind kind() const { return kind_; }
  /// K, the number of data tokens (the mask token excluded).
  [[nodiscard]] Index vocabulary() const { return vocabulary_; }
  /// Whether the source is masked (the chain then has the extra mask token K).
  [[nodiscard]] bool masked() const { return kind_ == SourceKind::masked; }
  /// The number of states of a token: K + 1 for a masked source, K otherwise.
  [[nodiscard]] Index states() const { return masked() ? vocabulary_ + 1 : vocabulary_; }
  /// The mask token K of a masked source; throws std::invalid_argument for another kind.
  [[nodiscard]] Token mask_token() const {
    if (!masked()) {
      detail::reject_argument("DiscreteSource::mask_token: source", "is not masked",
                              "a masked source (DiscreteSource::masked)");
    }
    return vocabulary_;
  }
  /// The sequence length L of a given source; empty for uniform and masked (any length).
  [[nodiscard]] std::optional<Index> length() const {
    if (kind_ == SourceKind::given) return cumulative_.cols();
    return std::nullopt;
  }

  /// p₀(token; position), for a token in [0, states()) and a position valid for the source.
  [[nodiscard]] double probability(Token token, Index position) const {
    switch (kind_) {
      case SourceKind::uniform:
        return 1.0 / static_cast<double>(vocabulary_);
      case SourceKind::masked:
        return token == vocabulary_ ? 1.0 : 0.0;
      case SourceKind::given:
        break;
    }
    return probabilities_(token, position);
  }

  /// The states()×L matrix of p₀ over the states of a token at each of @p length positions.
  [[nodiscard]] Matrix<Scalar> probabilities(Index length) const {
    check_length("DiscreteSource::probabilities: length", length);
    Matrix<Scalar> result(states(), length);
    for (Index position = 0; position < length; ++position) {
      for (Index token = 0; token < states(); ++token) {
        result(token, position) = static_cast<Scalar>(probability(token, position));
      }
    }
    return result;
  }

  /// A token drawn from p₀(·; position) with the uniform variate @p uniform in [0, 1); O(1) for
  /// the uniform and masked sources, O(log K) for a given one.
  [[nodiscard]] Token draw(Index position, double uniform) const {
    switch (kind_) {
      case SourceKind::uniform:
        return std::min<Token>(static_cast<Token>(uniform * static_cast<double>(vocabulary_)),
                               vocabulary_ - 1);
      case SourceKind::masked:
        return vocabulary_;
      case SourceKind::given:
        break;
    }
    return search(position, uniform * cumulative_(vocabulary_ - 1, position));
  }

  /// A token drawn from p₀(·; position) conditioned on differing from @p excluded,
  /// p₀(j)/(1 − p₀(excluded)) for j ≠ excluded, with the uniform variate @p uniform; requires
  /// p₀(excluded) < 1. O(1) for the uniform and masked sources, O(log K) for a given one.
  [[nodiscard]] Token draw_excluding(Index position, Token excluded, double uniform) const {
    switch (kind_) {
      case SourceKind::uniform: {
        // Uniform over the K − 1 other tokens: draw in [0, K − 1) and step over the excluded one.
        const Token other = std::min<Token>(
            static_cast<Token>(uniform * static_cast<double>(vocabulary_ - 1)), vocabulary_ - 2);
        return other < excluded ? other : other + 1;
      }
      case SourceKind::masked:
        return vocabulary_;
      case SourceKind::given:
        break;
    }
    // Draw a point of the cumulative mass with the excluded token's interval cut out: the
    // target u·(1 − p₀(e)), moved up by p₀(e) once it reaches the start of e's interval.
    const double before = excluded > 0 ? cumulative_(excluded - 1, position) : 0.0;
    const double mass = probabilities_(excluded, position);
    double target = uniform * (cumulative_(vocabulary_ - 1, position) - mass);
    if (target >= before) target += mass;
    const Token token = search(position, target);
    if (token != excluded) return token;
    // Rounding landed on the excluded interval: take the nearest token with mass.
    for (Token other = excluded + 1; other < vocabulary_; ++other) {
      if (probability(other, position) > 0) return other;
    }
    Token other = excluded - 1;
    while (other > 0 && probability(other, position) <= 0) --other;
    return other;
  }

  /// An L×N sample of @p sequences >= 1 sequences of @p length >= 1 tokens; one 64-bit key is
  /// drawn from @p generator (see the file comment).
  template <std::uniform_random_bit_generator Generator>
  [[nodiscard]] TokenMatrix sample(Index length, Index sequences, Generator& generator) const {
    check_length("DiscreteSource::sample: length", length);
    detail::require_count("DiscreteSource::sample: sequences", sequences, Index(1));
    const std::uint64_t key = std::uniform_int_distribution<std::uint64_t>()(generator);
    TokenMatrix tokens(length, sequences);
    for (Index sequence = 0; sequence < sequences; ++sequence) {
      detail::SampleStream stream(key, static_cast<std::uint64_t>(sequence), 0);
      for (Index position = 0; position < length; ++position) {
        tokens(position, sequence) = draw(position, detail::unit_uniform(stream));
      }
    }
    return tokens;
  }

  /// Throws std::invalid_argument (named @p name) unless @p length >= 1 and, for a given
  /// source, equal to its length.
  void check_length(std::string_view name, Index length) const {
    detail::require_count(name, length, Index(1));
    if (kind_ == SourceKind::given && length != cumulative_.cols()) {
      detail::reject_argument(name, detail::is_value(length),
                              detail::to_text(cumulative_.cols()) + " (the given source's length)");
    }
  }

 private:
  // @p probabilities: the K×L matrix of a given source, empty for the other kinds.
  DiscreteSource(SourceKind kind, Index vocabulary, Matrix<double> probabilities)
      : kind_(kind),
        vocabulary_(vocabulary),
        probabilities_(std::move(probabilities)),
        cumulative_(probabilities_) {
    for (Index position = 0; position < cumulative_.cols(); ++position) {
      for (Index token = 1; token < vocabulary_; ++token) {
        cumulative_(token, position) += cumulative_(token - 1, position);
      }
    }
  }

  // The first token with mass whose cumulative probability exceeds @p target.
  Token search(Index position, double target) const {
    const auto column = cumulative_.col(position);
    const auto found = std::upper_bound(column.begin(), column.end(), target);
    Token token = std::min<Token>(static_cast<Token>(found - column.begin()), vocabulary_ - 1);
    while (token > 0 && probability(token, position) <= 0) --token;
    return token;
  }

  SourceKind kind_;
  Index vocabulary_;
  // Given source: probabilities_(j, l) = p₀(j; l) and cumulative_(j, l) = Σ_{i ≤ j} p₀(i; l),
  // in double; empty otherwise.
  Matrix<double> probabilities_;
  Matrix<double> cumulative_;
};

}  // namespace flowmatch
