/// @file labelled_discrete_joint.hpp
/// @brief An exact oracle of guided discrete flow matching: a joint distribution of token
/// sequences and class labels, every state enumerable, and its exact conditional and
/// unconditional posteriors on the mixture path.
///
/// A labelled joint p(x, y) = π(y)·p(x | y) over C labels and the K^L sequences of each class
/// (DiscreteJoint). The unconditional data distribution is the mixture
///
///     p(x) = Σ_y π(y)·p(x | y),
///
/// and the posteriors p(x₁ | x_t, y) and p(x₁ | x_t) are those of the joints p(· | y) and p(·)
/// (oracle/discrete_joint.hpp): the path's likelihood p(x_t | x₁) does not depend on y.
/// LabelledDiscreteJointPosterior is a ConditionalDenoiser (discrete/conditional_denoiser.hpp)
/// whose null label C gives p(x₁ | x_t).
#pragma once

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/categorical.hpp"
#include "flowmatch/detail/sample_noise.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/discrete/conditional_denoiser.hpp"
#include "flowmatch/discrete/mixture_path.hpp"
#include "flowmatch/discrete/source.hpp"
#include "flowmatch/discrete/tokens.hpp"
#include "flowmatch/oracle/discrete_joint.hpp"
#include "flowmatch/scheduler/scheduler.hpp"

namespace flowmatch {

/// A joint distribution π(y)·p(x | y) of labels y ∈ [0, C) and token sequences (see the file
/// comment).
class LabelledDiscreteJoint {
 public:
  /// @param classes the C >= 1 class-conditional joints p(x | y), of one vocabulary and length.
  /// @param label_probabilities π, C entries, finite, >= 0, summing to 1 within 1e-9.
  /// @throws std::invalid_argument otherwise.
  LabelledDiscreteJoint(std::vector<DiscreteJoint> classes, Vector<double> label_probabilities)
      : classes_(std::move(classes)),
        label_probabilities_(std::move(label_probabilities)),
        marginal_(mixture(classes_, label_probabilities_)) {}

  /// C.
  [[nodiscard]] Index labels() const { return static_cast<Index>(classes_.size()); }
  /// p(x | y) of label @p label in [0, C).
  /// @throws std::invalid_argument for a label outside [0, C).
  [[nodiscard]] const DiscreteJoint& conditional(Index label) const {
    if (label < 0 || label >= labels()) {
      detail::reject_argument("LabelledDiscreteJoint::conditional: label", detail::is_value(label),
                              "a class label in [0, " + detail::to_text(labels()) + ")");
    }
    return classes_[static_cast<std::size_t>(label)];
  }
  /// The mixture p(x) = Σ_y π(y)·p(x | y).
  [[nodiscard]] const DiscreteJoint& marginal() const { return marginal_; }
  /// π.
  [[nodiscard]] const Vector<double>& label_probabilities() const { return label_probabilities_; }

  /// @p count >= 1 exact draws of (x, y): y ~ π, then x ~ p(· | y). One 64-bit key from
  /// @p generator; sequence n reads the words 0 and 1 of its stream (detail/sample_noise.hpp).
  template <std::uniform_random_bit_generator Generator>
  [[nodiscard]] LabelledTokens sample(Index count, Generator& generator) const {
    detail::require_count("LabelledDiscreteJoint::sample: count", count, Index(1));
    const std::uint64_t key = std::uniform_int_distribution<std::uint64_t>()(generator);
    const DiscreteJoint& first = classes_.front();
    LabelledTokens drawn{TokenMatrix(first.length(), count), LabelVector(count)};
    for (Index sequence = 0; sequence < count; ++sequence) {
      detail::SampleStream stream(key, static_cast<std::uint64_t>(sequence), 0);
      const Index label =
          detail::categorical_index(label_probabilities_, detail::unit_uniform(stream));
      const DiscreteJoint& joint = classes_[static_cast<std::size_t>(label)];
      const Index index =
          detail::categorical_index(joint.probabilities(), detail::unit_uniform(stream));
      drawn.labels(sequence) = label;
      for (Index position = 0; position < first.length(); ++position) {
        drawn.tokens(position, sequence) = joint.token_of(index, position);
      }
    }
    return drawn;
  }

 private:
  // Σ_y π(y)·p(x | y), after checking the classes and π (see the constructor).
  static DiscreteJoint mixture(const std::vector<DiscreteJoint>& classes,
                               const Vector<double>& label_probabilities) {
    if (classes.empty()) {
      detail::reject_argument("LabelledDiscreteJoint: classes", "is empty", "C >= 1 joints");
    }
    const Index count = static_cast<Index>(classes.size());
    detail::require_shape("LabelledDiscreteJoint: label_probabilities", label_probabilities, count,
                          1);
    detail::require_distributions("LabelledDiscreteJoint", "label_probabilities",
                                  label_probabilities, count, 1e-9);
    const DiscreteJoint& first = classes.front();
    Vector<double> probabilities = Vector<double>::Zero(first.sequences());
    for (Index label = 0; label < count; ++label) {
      const DiscreteJoint& joint = classes[static_cast<std::size_t>(label)];
      if (joint.vocabulary() != first.vocabulary() || joint.length() != first.length()) {
        detail::reject_argument("LabelledDiscreteJoint: classes[" + detail::to_text(label) + "]",
                                "has another vocabulary or length", "those of classes[0]");
      }
      probabilities += label_probabilities(label) * joint.probabilities();
    }
    return DiscreteJoint(probabilities / probabilities.sum(), first.vocabulary(), first.length());
  }

  std::vector<DiscreteJoint> classes_;
  Vector<double> label_probabilities_;
  DiscreteJoint marginal_;  // the mixture p(x)
};

/// The exact posteriors p(x₁ | x_t, y) and p(x₁ | x_t) of a LabelledDiscreteJoint: a
/// ConditionalDenoiser with C labels whose null label C (and plain call) is the unconditional
/// posterior.
template <ConvexScheduler S>
class LabelledDiscreteJointPosterior {
 public:
  using Scalar = typename S::scalar_type;

  /// @param joint the labelled data distribution.
  /// @param path the mixture path.
  /// @param source the source, over the joint's vocabulary.
  LabelledDiscreteJointPosterior(const LabelledDiscreteJoint& joint, const MixturePath<S>& path,
                                 const DiscreteSource<Scalar>& source) {
    for (Index label = 0; label < joint.labels(); ++label) {
      posteriors_.emplace_back(joint.conditional(label), path, source);
    }
    posteriors_.emplace_back(joint.marginal(), path, source);  // the null label
  }

  /// K.
  [[nodiscard]] Index vocabulary() const { return posteriors_.front().vocabulary(); }
  /// C.
  [[nodiscard]] Index labels() const { return static_cast<Index>(posteriors_.size()) - 1; }

  /// p(x₁ | x_t) into @p posterior ((K·L)×N), as DiscreteJointPosterior.
  void operator()(const ConstVectorRef<Scalar>& t, const ConstTokenRef& x_t,
                  MatrixRef<Scalar> posterior) const {
    posteriors_.back()(t, x_t, posterior);
  }

  /// p(x₁ | x_t, y) for the label y = labels(n) of each column n (the null label C: p(x₁ | x_t)),
  /// each label's columns evaluated together.
  void operator()(const ConstVectorRef<Scalar>& t, const ConstTokenRef& x_t,
                  const ConstLabelRef& labels, MatrixRef<Scalar> posterior) const {
    detail::require_labels("LabelledDiscreteJointPosterior: labels", labels, x_t.cols(),
                           this->labels(), true);
    detail::require_shape("LabelledDiscreteJointPosterior: posterior", posterior,
                          vocabulary() * x_t.rows(), x_t.cols());
    for (Index label = 0; label <= this->labels(); ++label) {
      std::vector<Index> columns;
      for (Index sequence = 0; sequence < labels.size(); ++sequence) {
        if (labels(sequence) == label) columns.push_back(sequence);
      }
      if (columns.empty()) continue;
      const auto count = static_cast<Index>(columns.size());
      Vector<Scalar> times(count);
      TokenMatrix tokens(x_t.rows(), count);
      for (Index column = 0; column < count; ++column) {
        times(column) = t(columns[static_cast<std::size_t>(column)]);
        tokens.col(column) = x_t.col(columns[static_cast<std::size_t>(column)]);
      }
      Matrix<Scalar> part(posterior.rows(), count);
      posteriors_[static_cast<std::size_t>(label)](times, tokens, part);
      for (Index column = 0; column < count; ++column) {
        posterior.col(columns[static_cast<std::size_t>(column)]) = part.col(column);
      }
    }
  }

 private:
  std::vector<DiscreteJointPosterior<S>> posteriors_;  // C conditional ones, then the null one
};

}  // namespace flowmatch
