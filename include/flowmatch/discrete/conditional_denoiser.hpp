/// @file conditional_denoiser.hpp
/// @brief The ConditionalDenoiser concept: a model of p(x₁ | x_t, y) for a class label y per
/// sequence, with a null label for the unconditional posterior p(x₁ | x_t).
///
/// A conditional denoiser over K data tokens and C class labels is a Denoiser
/// (discrete/denoiser.hpp) — its plain call is the unconditional posterior — with the const
/// members
///
///     Index labels();                                      // C
///     void operator()(ConstVectorRef<Scalar> t,            // N per-sequence times
///                     ConstTokenRef x_t,                   // L×N tokens
///                     ConstLabelRef labels,                // N labels in [0, C]
///                     MatrixRef<Scalar> posterior);        // (K·L)×N, written
///
/// Label y ∈ [0, C) asks for p(x₁ | x_t, y); the null label C asks for p(x₁ | x_t), so one call
/// with a batch that stacks the conditional and the null labels gives both posteriors (what
/// classifier-free guidance needs at every step). A network learns both by label dropout: during
/// training each label is replaced by the null label with a probability p_uncond.
#pragma once

#include <concepts>
#include <string>
#include <string_view>

#include <Eigen/Core>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/discrete/denoiser.hpp"
#include "flowmatch/discrete/tokens.hpp"

namespace flowmatch {

/// One class label per sequence: a length-N column of integers.
using LabelVector = Eigen::Matrix<Token, Eigen::Dynamic, 1>;
/// A read-only view of a LabelVector.
using ConstLabelRef = Eigen::Ref<const LabelVector>;

/// A batch of labelled sequences: L×N tokens and their N labels.
struct LabelledTokens {
  TokenMatrix tokens;  ///< L×N tokens, one column per sequence.
  LabelVector labels;  ///< N labels, labels(n) that of column n.
};

/// A model of p(x₁ | x_t, y) per position with scalar type @p Scalar (see the file comment).
template <class D, class Scalar>
concept ConditionalDenoiser = Denoiser<D, Scalar> &&
    requires(const D& denoiser, const ConstVectorRef<Scalar>& t, const ConstTokenRef& x_t,
             const ConstLabelRef& labels, MatrixRef<Scalar> posterior) {
  { denoiser.labels() } -> std::convertible_to<Index>;
  denoiser(t, x_t, labels, posterior);
};

namespace detail {

/// Throws std::invalid_argument, named @p name, unless @p labels has @p count entries, each in
/// [0, classes) or, with @p null_allowed, in [0, classes] (the null label being classes).
inline void require_labels(std::string_view name, const ConstLabelRef& labels, Index count,
                           Index classes, bool null_allowed) {
  if (labels.size() != count) {
    reject_argument(name, "has " + to_text(labels.size()) + " entries",
                    to_text(count) + " (one label per sequence)");
  }
  const Index end = null_allowed ? classes + 1 : classes;
  for (Index sequence = 0; sequence < labels.size(); ++sequence) {
    if (labels(sequence) >= 0 && labels(sequence) < end) continue;
    reject_argument(std::string(name) + "(" + to_text(sequence) + ")", is_value(labels(sequence)),
                    null_allowed ? "a label in [0, " + to_text(classes) + "], " + to_text(classes) +
                                       " being the null label"
                                 : "a class label in [0, " + to_text(classes) + ")");
  }
}

/// As evaluate_posterior, for the conditional call with @p labels (checked against the
/// denoiser's label count, the null label allowed).
template <class Scalar, ConditionalDenoiser<Scalar> D>
void evaluate_conditional_posterior(std::string_view function, const D& denoiser,
                                    const ConstVectorRef<Scalar>& t, const ConstTokenRef& x_t,
                                    const ConstLabelRef& labels, Matrix<Scalar>& posterior,
                                    double tolerance) {
  const Index vocabulary = denoiser.vocabulary();
  posterior.resize(vocabulary * x_t.rows(), x_t.cols());
  denoiser(t, x_t, labels, MatrixRef<Scalar>(posterior));
  require_distributions(function, "denoiser output", posterior, vocabulary, tolerance);
}

}  // namespace detail

}  // namespace flowmatch
