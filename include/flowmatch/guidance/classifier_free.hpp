/// @file classifier_free.hpp
/// @brief Classifier-free guidance: a conditional field and its conditions as a VelocityField.
///
/// Given a conditional field u_t(x | c) (see conditional_field.hpp), per-sample conditions
/// c_1, …, c_m (each k×N) and per-sample guidance weights w_1, …, w_m (each length N), the
/// guided velocity of sample j is
///
///     u = u_null + Σ_i w_ij·(u_{c_i} − u_null) = (1 − Σ_i w_ij)·u_null + Σ_i w_ij·u_{c_i},
///
/// where u_null = u_t(x | ∅) uses the null condition (the all-zeros column unless configured).
/// With one condition this is u = (1 − w)·u_null + w·u_cond: w = 0 is the unconditional field,
/// w = 1 the conditional one, w > 1 extrapolates away from the unconditional prediction.
/// The other common convention, u = u_cond + s·(u_cond − u_null), is the same with w = 1 + s;
/// choose it with GuidanceConvention::scale and give s instead of w.
///
/// A guidance schedule λ(t) scales the guidance strength over time: the weight in force at time
/// t is w(t) = 1 + λ(t)·(w − 1). The default λ ≡ 1 keeps w; guidance_interval(a, b) gives λ = 1
/// on [a, b) and 0 elsewhere, where the field is then the plain conditional field (w = 1).
///
/// Evaluation: by default the conditional and null predictions of the whole batch come from a
/// single call of the underlying field on a stacked batch [x, …, x, x_null] (one GEMM pass for a
/// network); GuidanceEvaluation::separate makes one call per condition set plus one for the
/// null condition instead. Samples whose null coefficient 1 − Σ_i w_ij is exactly 0 (for
/// instance w = 1 with one condition) are left out of the null evaluation.
///
/// Derivatives: every member of the field protocol (field/capabilities.hpp) that the conditional
/// field offers in conditional form, the guided field offers in plain form, by the same
/// combination; so does every derivative that forward mode takes of a conditional field generic
/// over its scalar type (a generic lambda `[](auto t, const auto& x, const auto& c)`). The guided
/// velocity is linear in the conditional predictions, so its Jacobian is J = Σ_i w_i J_{c_i} + (1 −
/// Σ_i w_i) J_null per sample, and likewise its divergence, its Jacobian-vector and vector-Jacobian
/// products and the gradient of its divergence combine the conditional ones with the same weights.
/// Log-likelihoods (exact or Hutchinson), exact scores and encodings of guided samples therefore
/// work as for any field. Every member also accepts m copies of the batch side by side (m·N
/// columns, column j·N + n a copy of sample n, as Hutchinson's probes and forward mode use); each
/// copy is guided as the batch.
///
/// The wrapper keeps its stacking buffers between calls (no allocation per call once sized), so
/// one wrapper must not be called from several threads at once; use one wrapper per thread.
#pragma once

#include <array>
#include <concepts>
#include <cstddef>
#include <functional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/field/field_adapter.hpp"
#include "flowmatch/likelihood/conditioned_field.hpp"

namespace flowmatch {

/// How guidance weights are given.
enum class GuidanceConvention {
  weight,  ///< u = (1 − w)·u_null + w·u_cond (w = 1: conditional).
  scale,   ///< u = u_cond + s·(u_cond − u_null), i.e. w = 1 + s (s = 0: conditional).
};

/// How the conditional and null predictions are computed.
enum class GuidanceEvaluation {
  stacked,   ///< One call of the field on all condition sets and the null condition side by side.
  separate,  ///< One call per condition set and one for the null condition.
};

/// Options of a guided field.
template <class Scalar>
struct GuidanceOptions {
  GuidanceConvention convention = GuidanceConvention::weight;
  GuidanceEvaluation evaluation = GuidanceEvaluation::stacked;
  /// The null condition (k entries); empty means the all-zeros column.
  Vector<Scalar> null_condition;
};

/// The schedule λ(t) = 1 on [begin, end) and 0 elsewhere: guidance acts only inside the interval.
///
/// The guided field is discontinuous in t at both ends: give them to the solver as
/// SolverOptions::tstops = {begin, end} (`--tstops` on the command line). Every method then
/// ends a step on each, evaluates each side only with its own field, and an adaptive method
/// restarts its step selection there, which gives exactly the result of switching fields at
/// the interval's ends in one solve. Without the stops, a step across an end mixes the two
/// fields (a stage at the end of a step, as in heun2, rk4, rk38 and the adaptive methods,
/// evaluates the next piece's field), and an adaptive method spends rejected steps on it.
template <class Scalar>
std::function<Scalar(Scalar)> guidance_interval(Scalar begin, Scalar end) {
  detail::require_unit_time("guidance_interval: begin", begin);
  detail::require_unit_time("guidance_interval: end", end);
  if (!(begin <= end)) {
    detail::reject_argument("guidance_interval: begin", detail::is_value(begin),
                            "<= end (" + detail::to_text(end) + ")");
  }
  return [begin, end](Scalar t) { return (t >= begin && t < end) ? Scalar(1) : Scalar(0); };
}

/// A conditional field guided by one or more condition sets: an ordinary in-place VelocityField.
template <class Scalar, class Field>
requires ConditionalVelocityField<std::unwrap_reference_t<Field>, Scalar>
class GuidedField : public FieldAdapter<GuidedField<Scalar, Field>, Field> {
  using Base = FieldAdapter<GuidedField<Scalar, Field>, Field>;

 public:
  /// @param field the conditional field (by value, or std::cref(field): see field_adapter.hpp).
  /// @param condition_dim k, the number of rows of every condition.
  /// @param options convention, evaluation strategy and null condition.
  GuidedField(Field field, Index condition_dim, GuidanceOptions<Scalar> options = {})
      : Base(std::move(field)), options_(std::move(options)) {
    detail::require_count<Index>("GuidedField: condition_dim", condition_dim, 0);
    if (options_.null_condition.size() == 0) {
      options_.null_condition = Vector<Scalar>::Zero(condition_dim);
    }
    detail::require_shape("GuidedField: null_condition", options_.null_condition, condition_dim, 1);
    detail::require_finite("GuidedField: null_condition", options_.null_condition);
  }

  /// Adds a condition set (k×N) guided with one weight for every sample; returns its index.
  Index add_condition(Matrix<Scalar> condition, Scalar weight) {
    const Index samples = condition.cols();
    return add_condition(std::move(condition), Vector<Scalar>::Constant(samples, weight));
  }

  /// Adds a condition set (k×N) guided with per-sample weights (length N); returns its index.
  /// All condition sets must have the same number of samples.
  Index add_condition(Matrix<Scalar> condition, Vector<Scalar> weights) {
    Term term;
    terms_.push_back(std::move(term));
    try {
      set_condition(static_cast<Index>(terms_.size()) - 1, std::move(condition));
      set_weights(static_cast<Index>(terms_.size()) - 1, std::move(weights));
    } catch (...) {
      terms_.pop_back();
      throw;
    }
    return static_cast<Index>(terms_.size()) - 1;
  }

  /// Replaces the conditions of set @p term (same shape rules as add_condition).
  void set_condition(Index term, Matrix<Scalar> condition) {
    Term& target = checked_term(term);
    detail::require_shape("GuidedField: condition", condition, condition_dim(), -1);
    detail::require_finite("GuidedField: condition", condition);
    if (terms_.size() > 1 && condition.cols() != other_term_samples(term)) {
      detail::reject_argument(
          "GuidedField: condition", "has " + detail::to_text(condition.cols()) + " samples",
          "the " + detail::to_text(other_term_samples(term)) + " of the other condition sets");
    }
    if (target.weights.size() != 0 && target.weights.size() != condition.cols()) {
      detail::reject_argument(
          "GuidedField: condition", "has " + detail::to_text(condition.cols()) + " samples",
          "one per weight (" + detail::to_text(target.weights.size()) + " weights)");
    }
    target.condition = std::move(condition);
  }

  /// Replaces the per-sample weights of set @p term (given in the configured convention).
  void set_weights(Index term, Vector<Scalar> weights) {
    Term& target = checked_term(term);
    detail::require_shape("GuidedField: weights", weights, target.condition.cols(), 1);
    detail::require_finite("GuidedField: weights", weights);
    if (options_.convention == GuidanceConvention::scale) weights.array() += Scalar(1);
    target.weights = std::move(weights);
  }

  /// Sets the guidance schedule λ(t) (see the file comment); an empty function means λ ≡ 1.
  void set_schedule(std::function<Scalar(Scalar)> schedule) { schedule_ = std::move(schedule); }

  /// k, the number of rows of every condition.
  [[nodiscard]] Index condition_dim() const { return options_.null_condition.size(); }

  /// Number of condition sets.
  [[nodiscard]] Index condition_sets() const { return static_cast<Index>(terms_.size()); }

  /// Number of samples the conditions are for (0 before any condition set is added).
  [[nodiscard]] Index samples() const {
    return terms_.empty() ? 0 : terms_.front().condition.cols();
  }

  /// The plain form of every conditional member of the wrapped field, and of every derivative
  /// that forward mode takes of it (ConditionallyDerivable), for Scalar.
  template <class Tag, class S>
  static constexpr bool offers =
      std::same_as<S, Scalar> ? ConditionallyDerivable<Tag, typename Base::wrapped_type, Scalar>
                              : false;

  /// Evaluates the capability at the stacked conditions and combines the results (see the file
  /// comment); x holds one column per conditioned sample, or m copies of the batch.
  template <class Tag, class... Args>
  void forward(Tag tag, Scalar t, const ConstMatrixRef<Scalar>& x, Args... args) const {
    forward_stacked(tag, t, x, std::index_sequence_for<Args...>{}, args...);
  }

 private:
  struct Term {
    Matrix<Scalar> condition;
    Vector<Scalar> weights;
  };

  Term& checked_term(Index term) {
    if (term < 0 || term >= condition_sets()) {
      throw std::out_of_range("GuidedField: no condition set " + detail::to_text(term));
    }
    return terms_[static_cast<std::size_t>(term)];
  }

  Index other_term_samples(Index term) const { return terms_[term == 0 ? 1 : 0].condition.cols(); }

  /// Checks x, computes the weights in force at t and the samples that need the null
  /// prediction, and stacks the inputs: condition set i occupies columns [i·N, (i+1)·N) of
  /// the stacked batch, the null columns follow. Returns the number of stacked columns.
  Index stack_inputs(Scalar t, const ConstMatrixRef<Scalar>& x) const {
    if (terms_.empty()) throw std::logic_error("GuidedField: no condition set was added");
    const Index batch = x.cols();
    if (batch != samples()) {
      detail::reject_argument("GuidedField: x", "has " + detail::to_text(batch) + " samples",
                              "the " + detail::to_text(samples()) + " of the conditions");
    }
    const Scalar strength = schedule_ ? schedule_(t) : Scalar(1);
    detail::require_finite_value("GuidedField: schedule value", strength);
    const Index sets = condition_sets();

    // Weights in force, w(t) = 1 + λ(t)(w − 1), and the null coefficient 1 − Σ_i w_i(t).
    effective_weights_.resize(batch, sets);
    for (Index set = 0; set < sets; ++set) {
      effective_weights_.col(set).array() =
          Scalar(1) + strength * (terms_[set].weights.array() - Scalar(1));
    }
    null_coefficient_ = Vector<Scalar>::Ones(batch) - effective_weights_.rowwise().sum();
    null_samples_.clear();
    for (Index sample = 0; sample < batch; ++sample) {
      if (null_coefficient_(sample) != Scalar(0)) null_samples_.push_back(sample);
    }
    const Index nulls = static_cast<Index>(null_samples_.size());

    // Buffers sized for the largest stack, (m + 1)·N columns, so they never shrink and regrow.
    const Index capacity = (sets + 1) * batch;
    if (stacked_x_.rows() != x.rows() || stacked_x_.cols() != capacity) {
      stacked_x_.resize(x.rows(), capacity);
      stacked_condition_.resize(condition_dim(), capacity);
    }
    for (Index set = 0; set < sets; ++set) {
      stacked_x_.middleCols(set * batch, batch) = x;
      stacked_condition_.middleCols(set * batch, batch) = terms_[set].condition;
    }
    for (Index slot = 0; slot < nulls; ++slot) {
      stacked_x_.col(sets * batch + slot) = x.col(null_samples_[slot]);
      stacked_condition_.col(sets * batch + slot) = options_.null_condition;
    }
    return sets * batch + nulls;
  }

  /// Calls @p evaluate(begin, count) on the stacked columns: once on all of them, or once per
  /// condition set and once for the null columns.
  template <class Evaluate>
  void evaluate_stacked(Index total, Evaluate&& evaluate) const {
    if (options_.evaluation == GuidanceEvaluation::stacked) {
      evaluate(0, total);
      return;
    }
    const Index batch = samples();
    for (Index set = 0; set < condition_sets(); ++set) evaluate(set * batch, batch);
    if (total > condition_sets() * batch) {
      evaluate(condition_sets() * batch, total - condition_sets() * batch);
    }
  }

  /// forward(): stacks x, the conditions and every input argument like stack_inputs, calls the
  /// capability on the stacked columns and combines every output argument, copy by copy.
  template <class Tag, std::size_t... Slot, class... Args>
  void forward_stacked(Tag, Scalar t, const ConstMatrixRef<Scalar>& x, std::index_sequence<Slot...>,
                       Args... args) const {
    std::vector<Matrix<Scalar>>& buffers = argument_buffers_[capability::index<Tag>];
    buffers.resize(sizeof...(Args));
    const Index batch = samples();
    // A width that is no multiple of N is passed on whole, for stack_inputs to reject.
    const bool copies = batch > 0 && x.cols() > 0 && x.cols() % batch == 0;
    const Index width = copies ? batch : x.cols();
    const Index copy_count = copies ? x.cols() / batch : 1;
    for (Index copy = 0; copy < copy_count; ++copy) {
      const Index begin = copy * width;
      const Index total = stack_inputs(t, x.middleCols(begin, width));
      (stack_argument(args, begin, buffers[Slot]), ...);
      evaluate_stacked(total, [&](Index first, Index count) {
        detail::derive_conditional(
            Tag{}, this->field(), t, ConstMatrixRef<Scalar>(stacked_x_.middleCols(first, count)),
            ConstMatrixRef<Scalar>(stacked_condition_.middleCols(first, count)),
            stacked_view<Args>(buffers[Slot], first, count)...);
      });
      (combine_argument(buffers[Slot], args, begin, width), ...);
    }
  }

  template <class Ref>
  static constexpr bool is_input = std::is_same_v<Ref, ConstMatrixRef<Scalar>>;
  template <class Ref>
  static constexpr bool is_per_sample = Ref::ColsAtCompileTime == 1;

  /// An input (tangent, cotangent) is stacked like x; an output buffer is only sized (one row
  /// for a per-sample output).
  template <class Ref>
  void stack_argument(const Ref& argument, Index begin, Matrix<Scalar>& buffer) const {
    if constexpr (is_input<Ref>) {
      const Index batch = samples();
      const Index sets = condition_sets();
      buffer.resize(argument.rows(), stacked_x_.cols());
      for (Index set = 0; set < sets; ++set) {
        buffer.middleCols(set * batch, batch) = argument.middleCols(begin, batch);
      }
      for (Index slot = 0; slot < static_cast<Index>(null_samples_.size()); ++slot) {
        buffer.col(sets * batch + slot) = argument.col(begin + null_samples_[slot]);
      }
    } else {
      buffer.resize(is_per_sample<Ref> ? 1 : argument.rows(), stacked_x_.cols());
    }
  }

  /// The stacked columns [first, first + count) of an argument's buffer, as the argument's type.
  template <class Ref>
  static Ref stacked_view(Matrix<Scalar>& buffer, Index first, Index count) {
    if constexpr (is_per_sample<Ref>) {
      return Eigen::Map<Vector<Scalar>>(buffer.data() + first, count);
    } else {
      return Ref(buffer.middleCols(first, count));
    }
  }

  /// An output receives the guided combination of its stacked results; an input nothing.
  template <class Ref>
  void combine_argument(const Matrix<Scalar>& buffer, Ref& argument, Index begin,
                        Index width) const {
    if constexpr (is_per_sample<Ref>) {
      combine(buffer, Eigen::Map<Matrix<Scalar>>(argument.data() + begin, 1, width));
    } else if constexpr (!is_input<Ref>) {
      combine(buffer, argument.middleCols(begin, width));
    }
  }

  /// out = Σ_i w_i ⊙ stacked_i + (1 − Σ_i w_i) ⊙ stacked_null, column by column (stacked has the
  /// layout of stack_inputs; rows are the velocity components, or one row of divergences).
  template <class Out>
  void combine(const Matrix<Scalar>& stacked, Out&& out) const {
    const Index batch = samples();
    const Index sets = condition_sets();
    out.noalias() = stacked.leftCols(batch) * effective_weights_.col(0).asDiagonal();
    for (Index set = 1; set < sets; ++set) {
      out.noalias() +=
          stacked.middleCols(set * batch, batch) * effective_weights_.col(set).asDiagonal();
    }
    for (Index slot = 0; slot < static_cast<Index>(null_samples_.size()); ++slot) {
      const Index sample = null_samples_[slot];
      out.col(sample) += null_coefficient_(sample) * stacked.col(sets * batch + slot);
    }
  }

  GuidanceOptions<Scalar> options_;
  std::vector<Term> terms_;
  std::function<Scalar(Scalar)> schedule_;
  mutable Matrix<Scalar> effective_weights_;
  mutable Vector<Scalar> null_coefficient_;
  mutable std::vector<Index> null_samples_;
  mutable Matrix<Scalar> stacked_x_;
  mutable Matrix<Scalar> stacked_condition_;
  // Per capability, one buffer per argument after x: stacked inputs, stacked outputs.
  mutable std::array<std::vector<Matrix<Scalar>>, capability::count> argument_buffers_;
};

/// Guides @p field with one condition set and one weight for every sample.
template <class Scalar, class Field>
GuidedField<Scalar, Field> classifier_free_guidance(Field field, Matrix<Scalar> condition,
                                                    Scalar weight,
                                                    GuidanceOptions<Scalar> options = {}) {
  GuidedField<Scalar, Field> guided(std::move(field), condition.rows(), std::move(options));
  guided.add_condition(std::move(condition), weight);
  return guided;
}

/// Guides @p field with one condition set and per-sample weights.
template <class Scalar, class Field>
GuidedField<Scalar, Field> classifier_free_guidance(Field field, Matrix<Scalar> condition,
                                                    Vector<Scalar> weights,
                                                    GuidanceOptions<Scalar> options = {}) {
  GuidedField<Scalar, Field> guided(std::move(field), condition.rows(), std::move(options));
  guided.add_condition(std::move(condition), std::move(weights));
  return guided;
}

/// Guides @p field with one condition set (k×N, any Eigen expression) and one weight for every
/// sample; the scalar type is the condition's.
template <class Field, class Condition>
GuidedField<typename Condition::Scalar, Field> classifier_free_guidance(
    Field field, const Eigen::MatrixBase<Condition>& condition, typename Condition::Scalar weight,
    GuidanceOptions<typename Condition::Scalar> options = {}) {
  GuidedField<typename Condition::Scalar, Field> guided(std::move(field), condition.rows(),
                                                        std::move(options));
  guided.add_condition(condition, weight);
  return guided;
}

/// Guides @p field with one condition set and per-sample weights (length N).
template <class Field, class Condition, MatrixOf<typename Condition::Scalar> Weights>
GuidedField<typename Condition::Scalar, Field> classifier_free_guidance(
    Field field, const Eigen::MatrixBase<Condition>& condition,
    const Eigen::MatrixBase<Weights>& weights,
    GuidanceOptions<typename Condition::Scalar> options = {}) {
  GuidedField<typename Condition::Scalar, Field> guided(std::move(field), condition.rows(),
                                                        std::move(options));
  guided.add_condition(condition, weights);
  return guided;
}

}  // namespace flowmatch
