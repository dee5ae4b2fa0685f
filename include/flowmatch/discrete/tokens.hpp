/// @file tokens.hpp
/// @brief The batch layouts of discrete flow matching: token batches and per-position
/// distributions, and their argument checks.
///
/// **Tokens.** A batch of N sequences of L tokens is an L×N column-major matrix of Token
/// (std::int64_t): one column per sequence, as a batch of points is one column per sample. It
/// is the memory of a C-order NumPy int64 array of shape [N, L] (the integer type of NumPy's
/// and PyTorch's indices), so a token .npy file maps onto it without a copy or a conversion.
/// A token is an integer in [0, V), where V is the number of states of the chain: the data
/// vocabulary K, or K + 1 for a masked source, whose mask token is K.
///
/// **Distributions.** Per-position distributions over the K data tokens (a denoiser's
/// posterior p(x₁ | x_t)) form a (K·L)×N matrix: column n is sequence n, and its rows
/// l·K, …, l·K + K − 1 hold the distribution at position l (position-major blocks of K). This
/// is the memory of a C-order array of shape [N, L, K], the layout of a network's logits over a
/// sequence, and each position's distribution is a contiguous segment.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"

namespace flowmatch {

/// One token: an index into the vocabulary (the mask token of a masked source included).
using Token = std::int64_t;

/// An L×N batch of token sequences, one column per sequence.
using TokenMatrix = Eigen::Matrix<Token, Eigen::Dynamic, Eigen::Dynamic>;

/// Read-only view of a token batch (a whole matrix or a block of whole columns).
using ConstTokenRef = Eigen::Ref<const TokenMatrix>;

/// The distribution at position @p position of sequence @p sequence in a (K·L)×N matrix of
/// per-position distributions over @p vocabulary = K tokens (see the file comment).
template <class Derived>
auto position_distribution(const Eigen::MatrixBase<Derived>& distributions, Index vocabulary,
                           Index position, Index sequence) {
  return distributions.col(sequence).segment(position * vocabulary, vocabulary);
}

/// The writable view of position_distribution.
template <class Derived>
auto position_distribution(Eigen::MatrixBase<Derived>& distributions, Index vocabulary,
                           Index position, Index sequence) {
  return distributions.col(sequence).segment(position * vocabulary, vocabulary);
}

namespace detail {

/// Throws std::invalid_argument unless @p tokens is an L×N batch with L, N >= 1 (L = @p length
/// when it is >= 0) whose tokens are in [0, vocabulary + 1) with a mask token (@p masked) and
/// in [0, vocabulary) without one. A mask token where there is none is named as such.
inline void require_tokens(std::string_view name, const ConstTokenRef& tokens, Index vocabulary,
                           bool masked, Index length = -1) {
  if (tokens.rows() == 0 || tokens.cols() == 0 || (length >= 0 && tokens.rows() != length)) {
    reject_argument(name, "has shape " + to_text(tokens.rows()) + "x" + to_text(tokens.cols()),
                    (length >= 0 ? to_text(length) : std::string("L")) +
                        "xN with L, N >= 1 (one column per sequence)");
  }
  const Index states = masked ? vocabulary + 1 : vocabulary;
  if (tokens.minCoeff() >= 0 && tokens.maxCoeff() < states) return;
  for (Index sequence = 0; sequence < tokens.cols(); ++sequence) {
    for (Index position = 0; position < tokens.rows(); ++position) {
      const Token token = tokens(position, sequence);
      if (token >= 0 && token < states) continue;
      const std::string place =
          " in column " + to_text(sequence) + " (row " + to_text(position) + ")";
      if (token == vocabulary && !masked) {
        reject_argument(name, "has the mask token " + to_text(token) + place,
                        "tokens in [0, " + to_text(vocabulary) +
                            "): only the states of a masked source include the mask token");
      }
      reject_argument(name, "has token " + to_text(token) + place,
                      "tokens in [0, " + to_text(states) + ")");
    }
  }
}

/// Throws unless @p t holds the times of @p sequences sequences: std::invalid_argument for a
/// length other than @p sequences, std::domain_error for an entry outside [0, 1] or NaN, named
/// "<function>: t[<n>]".
template <class Scalar>
void require_sequence_times(std::string_view function, const ConstVectorRef<Scalar>& t,
                            Index sequences) {
  if (t.size() != sequences) require_shape(argument_name(function, "t"), t, sequences, 1);
  for (Index sequence = 0; sequence < t.size(); ++sequence) {
    if (t(sequence) >= Scalar(0) && t(sequence) <= Scalar(1)) continue;
    require_unit_time(argument_name(function, "t[" + to_text(sequence) + "]"), t(sequence));
  }
}

/// The default tolerance on the sum of a distribution given in @p Scalar: 10·√ε (1.5e-7 in
/// double, 3.5e-3 in float, where a softmax over a large vocabulary loses digits).
template <class Scalar>
Scalar default_probability_tolerance() {
  return Scalar(10) * std::sqrt(std::numeric_limits<Scalar>::epsilon());
}

/// Throws std::invalid_argument, named "<function>: <argument>", unless every block of
/// @p vocabulary rows of every column of @p distributions (the layout of the file comment) is a
/// distribution: finite, non-negative entries whose sum is within @p tolerance of 1.
template <class Derived>
void require_distributions(std::string_view function, std::string_view argument,
                           const Eigen::MatrixBase<Derived>& distributions, Index vocabulary,
                           double tolerance) {
  const Index positions = distributions.rows() / vocabulary;
  for (Index sequence = 0; sequence < distributions.cols(); ++sequence) {
    for (Index position = 0; position < positions; ++position) {
      const auto block = position_distribution(distributions, vocabulary, position, sequence);
      const double sum = static_cast<double>(block.sum());
      // A NaN or infinite entry makes the sum non-finite; a negative one shows in minCoeff.
      if (std::isfinite(sum) && std::abs(sum - 1.0) <= tolerance && block.minCoeff() >= 0) {
        continue;
      }
      reject_argument(
          argument_name(function, argument),
          "has a distribution summing to " + to_text(sum) + " with smallest entry " +
              to_text(block.minCoeff()) + " at position " + to_text(position) + " of column " +
              to_text(sequence),
          "finite non-negative probabilities summing to 1 within " + to_text(tolerance));
    }
  }
}

}  // namespace detail

}  // namespace flowmatch
