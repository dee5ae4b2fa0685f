/// @file denoiser.hpp
/// @brief The Denoiser concept: a model of the posterior p(x₁ | x_t) at every position.
///
/// A denoiser over a vocabulary of K data tokens is a type with the const members
///
///     Index vocabulary();                                  // K
///     void operator()(ConstVectorRef<Scalar> t,            // N per-sequence times
///                     ConstTokenRef x_t,                   // L×N tokens (mask token K allowed)
///                     MatrixRef<Scalar> posterior);        // (K·L)×N, written
///
/// that writes at each position of each sequence a distribution over the K data tokens, in the
/// layout of discrete/tokens.hpp (rows l·K … l·K + K − 1 of column n: position l of sequence n;
/// a network's [N, L, K] C-order output). The times are per sequence, because training pairs
/// every sequence with its own time; a sampler passes N equal times. The posterior matrix is
/// sized by the caller; the mask token is never a value of x₁, so it has no row.
#pragma once

#include <concepts>
#include <string_view>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/discrete/tokens.hpp"

namespace flowmatch {

/// A model of p(x₁ | x_t) per position with scalar type @p Scalar (see the file comment).
template <class D, class Scalar>
concept Denoiser = requires(const D& denoiser, const ConstVectorRef<Scalar>& t,
                            const ConstTokenRef& x_t, MatrixRef<Scalar> posterior) {
  { denoiser.vocabulary() } -> std::convertible_to<Index>;
  denoiser(t, x_t, posterior);
};

namespace detail {

/// Evaluates @p denoiser at (@p t, @p x_t) into @p posterior (resized to (K·L)×N) and throws
/// std::invalid_argument, named "<function>: denoiser output", unless every position holds a
/// distribution within @p tolerance (a denoiser's output is checked like an argument: it is the
/// caller's model).
template <class Scalar, Denoiser<Scalar> D>
void evaluate_posterior(std::string_view function, const D& denoiser,
                        const ConstVectorRef<Scalar>& t, const ConstTokenRef& x_t,
                        Matrix<Scalar>& posterior, double tolerance) {
  const Index vocabulary = denoiser.vocabulary();
  posterior.resize(vocabulary * x_t.rows(), x_t.cols());
  denoiser(t, x_t, MatrixRef<Scalar>(posterior));
  require_distributions(function, "denoiser output", posterior, vocabulary, tolerance);
}

}  // namespace detail

}  // namespace flowmatch
