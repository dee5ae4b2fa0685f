/// @file objective.hpp
/// @brief Flow-matching objectives: a conditional path, a minibatch coupling of source and
/// data samples, a time distribution and (for conditional models) label dropout, combined into
/// the regression batches of train/flow_matching_loss.hpp.
///
/// One batch from source samples x₀ and data samples x₁ (both d×N):
///   1. couple: pair the columns of x₀ and x₁ (independent: as given; exact OT: the permutation
///      σ minimising Σ_i ‖x₀_i − x₁_σ(i)‖²; entropic OT: N pairs drawn from the Sinkhorn plan
///      of regularisation ε_reg, by PlanSampling);
///   2. draw t_i from the time distribution (U[0, 1], or logit-normal t = sigmoid(m + s·z),
///      z ~ N(0, 1)), redrawn while it hits an end excluded by the path;
///   3. draw ε ~ N(0, I) (d×N) and evaluate the path: x_t, u_t (train/conditional_paths.hpp);
///   4. with conditions c (k×N), replace each column by the null condition with probability p
///      (label dropout for classifier-free guidance; the null condition is the all-zeros column
///      unless set, as in guidance/classifier_free.hpp).
/// Conditions travel with their data column through the coupling.
///
/// Named objectives (path, coupling) and the torchcfm classes they correspond to:
///
/// | factory                | path, coupling                    | torchcfm class             |
/// |------------------------|-----------------------------------|----------------------------|
/// | independent(σ)         | straight(σ), independent          | ConditionalFlowMatcher     |
/// | optimal_transport(σ)   | straight(σ), exact OT             | ExactOptimalTransport-     |
/// |                        |                                   | ConditionalFlowMatcher     |
/// | schrodinger_bridge(σ)  | brownian_bridge(σ), entropic OT   | SchrodingerBridge-         |
/// |                        | with ε_reg = 2σ²                  | ConditionalFlowMatcher     |
/// | variance_preserving(σ) | variance_preserving(σ), indep.    | VariancePreserving-        |
/// |                        |                                   | ConditionalFlowMatcher     |
/// | target(σ_min)          | target(σ_min), independent        | TargetConditionalFlow-     |
/// |                        |                                   | Matcher                    |
///
/// torchcfm resamples exact-OT pairs with replacement from the plan; here exact OT uses the
/// permutation itself, so every sample of the batch is used once.
#pragma once

#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "flowmatch/core/errors.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/coupling/coupling.hpp"
#include "flowmatch/coupling/exact_ot.hpp"
#include "flowmatch/coupling/sinkhorn.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/likelihood/standard_normal.hpp"
#include "flowmatch/train/conditional_paths.hpp"
#include "flowmatch/train/flow_matching_loss.hpp"
#include "flowmatch/train/time_sampler.hpp"

namespace flowmatch {

/// How source and data samples of a minibatch are paired.
enum class CouplingKind {
  independent,  ///< column i of x₀ with column i of x₁.
  exact_ot,     ///< the exact OT permutation under squared Euclidean cost.
  entropic_ot,  ///< pairs drawn from the entropic OT (Sinkhorn) plan.
};

/// The couplings that code compiled for an objective can run: a template argument of
/// FlowMatchingObjective::make_batch_into and of FlowMatchingTrainer. Choosing the coupling at
/// run time (FlowMatchingObjective::coupling) compiles the exact and the entropic OT solvers
/// into every translation unit that makes batches, about a fifth of the compile time of a
/// program that trains (the README's "Compile times" gives the figures); a program that only
/// pairs samples independently leaves them out with CouplingSupport::independent.
enum class CouplingSupport {
  all,          ///< every CouplingKind, chosen at run time (the default).
  independent,  ///< CouplingKind::independent only: the OT solvers are not compiled.
};

/// The distribution of training times (sampled by train/time_sampler.hpp).
template <class Scalar = double>
struct TimeDistribution {
  bool logit_normal = false;  ///< false: U[0, 1]; true: sigmoid(location + scale·z).
  Scalar location = 0;        ///< m of the logit-normal distribution (finite).
  Scalar scale = 1;           ///< s of the logit-normal distribution (finite, > 0).

  /// U[0, 1].
  static TimeDistribution uniform() { return {}; }
  /// t = sigmoid(m + s·z), z ~ N(0, 1).
  static TimeDistribution logit_normal_with(Scalar location, Scalar scale) {
    return {true, location, scale};
  }

  /// Throws std::invalid_argument if logit_normal and location is not finite or scale is not
  /// finite and > 0.
  void validate() const {
    if (logit_normal) detail::require_logit_normal("TimeDistribution", location, scale);
  }

  /// @p count independent draws in [0, 1], using only @p generator.
  template <std::uniform_random_bit_generator Generator>
  [[nodiscard]] Vector<Scalar> sample(Index count, Generator& generator) const {
    if (!logit_normal) return sample_uniform_times<Scalar>(count, generator);
    return sample_logit_normal_times<Scalar>(count, generator, location, scale);
  }

  /// As sample(), one draw per entry of @p times, without allocating.
  template <std::uniform_random_bit_generator Generator>
  void sample_into(VectorRef<Scalar> times, Generator& generator) const {
    if (!logit_normal) {
      sample_uniform_times_into<Scalar>(times, generator);
    } else {
      sample_logit_normal_times_into<Scalar>(times, generator, location, scale);
    }
  }
};

namespace detail {

/// Throws std::invalid_argument naming @p name unless 0 ≤ @p value ≤ 1.
template <class Scalar>
void require_probability(std::string_view name, Scalar value) {
  if (!(value >= Scalar(0) && value <= Scalar(1))) {
    reject_argument(name, is_value(value), "in [0, 1]");
  }
}

}  // namespace detail

/// Replaces each column of @p cond (k×N) by @p null_condition (length k; empty = zeros) with
/// probability @p probability, one Bernoulli draw per column from @p generator.
/// @throws std::invalid_argument unless probability lies in [0, 1], cond is finite and
///         null_condition is empty or of length k.
template <class Scalar, std::uniform_random_bit_generator Generator>
void drop_conditions(MatrixRef<Scalar> cond, Scalar probability,
                     const ConstVectorRef<Scalar>& null_condition, Generator& generator) {
  if (!(probability >= Scalar(0) && probability <= Scalar(1))) {
    detail::reject_argument("drop_conditions: probability", detail::is_value(probability),
                            "in [0, 1]");
  }
  detail::require_finite("drop_conditions: cond", cond);
  if (null_condition.size() != 0) {
    detail::require_shape("drop_conditions: null_condition", null_condition, cond.rows(), 1);
  }
  std::bernoulli_distribution drop(static_cast<double>(probability));
  for (Index col = 0; col < cond.cols(); ++col) {
    if (!drop(generator)) continue;
    if (null_condition.size() == 0) {
      cond.col(col).setZero();
    } else {
      cond.col(col) = null_condition;
    }
  }
}

/// A flow-matching objective (see the file comment).
template <class Scalar = double>
struct FlowMatchingObjective {
  ConditionalPath<Scalar> path = ConditionalPath<Scalar>::straight(Scalar(0));  ///< x_t, u_t.
  CouplingKind coupling = CouplingKind::independent;     ///< pairing of x₀ and x₁.
  Scalar entropic_regularisation = 0;                    ///< ε_reg (> 0) for entropic_ot.
  PlanSampling plan_sampling = PlanSampling::flattened;  ///< pair drawing for entropic_ot.
  Index sinkhorn_max_iterations = 1000;                  ///< Sinkhorn cap for entropic_ot.
  /// The Sinkhorn stopping tolerance for entropic_ot: the L1 row-marginal error of the plan.
  Scalar sinkhorn_tolerance = SinkhornOptions<Scalar>{}.tolerance;
  /// Receives the progress of an entropic coupling that runs for longer than a quarter of a
  /// second (SinkhornOptions::progress), for instance to show it on a training progress line.
  std::function<void(const SinkhornProgress<Scalar>&)> coupling_progress;
  /// Receives every entropic coupling that stopped at sinkhorn_max_iterations before reaching
  /// sinkhorn_tolerance (its marginal_error says how far its marginals are from uniform); the
  /// batch is still drawn from that plan. Set it to report such couplings: nothing else does.
  std::function<void(const SinkhornResult<Scalar>&)> coupling_not_converged;
  TimeDistribution<Scalar> time{};  ///< distribution of t.
  Scalar label_dropout = 0;         ///< p, the probability of the null condition, in [0, 1].
  Vector<Scalar> null_condition;    ///< the null condition; empty = zeros.

  /// I-CFM: straight paths with smoothing σ, independent coupling.
  static FlowMatchingObjective independent(Scalar sigma) {
    return with(ConditionalPath<Scalar>::straight(sigma), CouplingKind::independent);
  }
  /// OT-CFM: straight paths with smoothing σ, exact minibatch OT coupling.
  static FlowMatchingObjective optimal_transport(Scalar sigma) {
    return with(ConditionalPath<Scalar>::straight(sigma), CouplingKind::exact_ot);
  }
  /// SB-CFM: Brownian bridges of scale σ, entropic OT coupling with ε_reg = 2σ².
  /// @throws std::invalid_argument unless σ is finite and > 0.
  static FlowMatchingObjective schrodinger_bridge(Scalar sigma) {
    detail::require_positive("FlowMatchingObjective::schrodinger_bridge: sigma", sigma);
    FlowMatchingObjective objective =
        with(ConditionalPath<Scalar>::brownian_bridge(sigma), CouplingKind::entropic_ot);
    objective.entropic_regularisation = 2 * sigma * sigma;
    return objective;
  }
  /// VP-CFM: trigonometric paths with smoothing σ, independent coupling.
  static FlowMatchingObjective variance_preserving(Scalar sigma) {
    return with(ConditionalPath<Scalar>::variance_preserving(sigma), CouplingKind::independent);
  }
  /// Lipman's target CFM with σ_min, independent coupling.
  static FlowMatchingObjective target(Scalar sigma_min) {
    return with(ConditionalPath<Scalar>::target(sigma_min), CouplingKind::independent);
  }
  /// Any path with any coupling.
  static FlowMatchingObjective with(ConditionalPath<Scalar> path, CouplingKind coupling) {
    FlowMatchingObjective objective;
    objective.path = std::move(path);
    objective.coupling = coupling;
    return objective;
  }

  /// Throws std::invalid_argument for an invalid setting: coupling outside the enumeration or
  /// outside what @p support runs, entropic_ot with ε_reg not finite and > 0,
  /// sinkhorn_max_iterations < 1, sinkhorn_tolerance < 0 or not finite, an invalid time
  /// distribution, or label_dropout outside [0, 1].
  void validate(CouplingSupport support = CouplingSupport::all) const {
    if (coupling != CouplingKind::independent && coupling != CouplingKind::exact_ot &&
        coupling != CouplingKind::entropic_ot) {
      detail::reject_argument("FlowMatchingObjective: coupling",
                              detail::is_value(static_cast<int>(coupling)),
                              "CouplingKind::independent, exact_ot or entropic_ot");
    }
    if (support == CouplingSupport::independent && coupling != CouplingKind::independent) {
      detail::reject_argument(
          "FlowMatchingObjective: coupling",
          coupling == CouplingKind::exact_ot ? "is exact_ot" : "is entropic_ot",
          "CouplingKind::independent for code compiled with CouplingSupport::independent");
    }
    if (coupling == CouplingKind::entropic_ot) {
      detail::require_positive("FlowMatchingObjective: entropic_regularisation (entropic_ot)",
                               entropic_regularisation);
    }
    detail::require_count<Index>("FlowMatchingObjective: sinkhorn_max_iterations",
                                 sinkhorn_max_iterations, 1);
    detail::require_nonnegative("FlowMatchingObjective: sinkhorn_tolerance", sinkhorn_tolerance);
    time.validate();
    detail::require_probability("FlowMatchingObjective: label_dropout", label_dropout);
  }

  /// N times from the time distribution, redrawing any t the path excludes.
  /// @throws std::invalid_argument for an invalid time distribution or count < 0.
  template <std::uniform_random_bit_generator Generator>
  [[nodiscard]] Vector<Scalar> sample_times(Index count, Generator& generator) const {
    detail::require_count<Index>("FlowMatchingObjective::sample_times: count", count, 0);
    Vector<Scalar> times(count);
    sample_times_into(times, generator);
    return times;
  }

  /// As sample_times, one time per entry of @p times, without allocating.
  /// @throws std::invalid_argument for an invalid time distribution.
  template <std::uniform_random_bit_generator Generator>
  void sample_times_into(VectorRef<Scalar> times, Generator& generator) const {
    time.validate();
    time.sample_into(times, generator);
    if (!path.open_interval()) return;
    for (Index k = 0; k < times.size(); ++k) {
      while (times(k) <= Scalar(0) || times(k) >= Scalar(1)) {
        time.sample_into(times.segment(k, 1), generator);
      }
    }
  }

  /// The pairs (i_k, j_k) of the coupling of @p x0 and @p x1 (both d×N): source column
  /// source[k] goes with data column data[k].
  /// @throws std::invalid_argument for bad shapes, non-finite entries or an invalid setting.
  template <std::uniform_random_bit_generator Generator>
  [[nodiscard]] std::pair<std::vector<Index>, std::vector<Index>> couple(
      const Matrix<Scalar>& x0, const Matrix<Scalar>& x1, Generator& generator) const {
    validate();
    detail::require_batch_pair("FlowMatchingObjective::couple", x0, x1, true);
    const Index count = x0.cols();
    std::vector<Index> source(static_cast<std::size_t>(count));
    std::vector<Index> data(static_cast<std::size_t>(count));
    for (Index k = 0; k < count; ++k) source[k] = data[k] = k;
    if (coupling == CouplingKind::exact_ot) {
      data = exact_ot_pairing(x0, x1).column_of_row;
    } else if (coupling == CouplingKind::entropic_ot) {
      SinkhornOptions<Scalar> options;
      options.epsilon = entropic_regularisation;
      options.max_iterations = sinkhorn_max_iterations;
      options.tolerance = sinkhorn_tolerance;
      options.progress = coupling_progress;
      const SinkhornResult<Scalar> result = sinkhorn(squared_euclidean_cost(x0, x1), options);
      if (!result.converged && coupling_not_converged) coupling_not_converged(result);
      const Matrix<Scalar> plan = result.plan();
      draw_plan_pairs(plan, generator, source, data);
    }
    return {std::move(source), std::move(data)};
  }

  /// A regression batch from source samples @p x0 and data samples @p x1 (both d×N, finite):
  /// coupling, times, smoothing noise and path, drawn from @p generator in that order.
  /// @throws std::invalid_argument for bad shapes, non-finite entries or an invalid setting.
  template <std::uniform_random_bit_generator Generator>
  [[nodiscard]] FlowMatchingBatch<Scalar> make_batch(const Matrix<Scalar>& x0,
                                                     const Matrix<Scalar>& x1,
                                                     Generator& generator) const {
    FlowMatchingBatch<Scalar> batch;
    make_batch_into(x0, x1, generator, batch);
    return batch;
  }

  /// As make_batch, with conditions @p cond (k×N, one per data column, finite) that follow
  /// their data column through the coupling and are then dropped with probability
  /// label_dropout (drawn last).
  template <std::uniform_random_bit_generator Generator>
  [[nodiscard]] FlowMatchingBatch<Scalar> make_batch(const Matrix<Scalar>& x0,
                                                     const Matrix<Scalar>& x1,
                                                     const Matrix<Scalar>& cond,
                                                     Generator& generator) const {
    FlowMatchingBatch<Scalar> batch;
    make_batch_into(x0, x1, cond, generator, batch);
    return batch;
  }

  /// As make_batch, into @p batch, whose matrices are reused: with the independent coupling,
  /// once they have the batch's shape, nothing is allocated. The same draws as make_batch.
  /// With @p support CouplingSupport::independent the OT couplings are not compiled, and an
  /// objective with another coupling is rejected (std::invalid_argument).
  template <CouplingSupport support = CouplingSupport::all,
            std::uniform_random_bit_generator Generator>
  void make_batch_into(const Matrix<Scalar>& x0, const Matrix<Scalar>& x1, Generator& generator,
                       FlowMatchingBatch<Scalar>& batch) const {
    fill_batch<support>(x0, x1, nullptr, generator, batch);
  }

  /// As make_batch with conditions, into @p batch (see the other make_batch_into).
  template <CouplingSupport support = CouplingSupport::all,
            std::uniform_random_bit_generator Generator>
  void make_batch_into(const Matrix<Scalar>& x0, const Matrix<Scalar>& x1,
                       const Matrix<Scalar>& cond, Generator& generator,
                       FlowMatchingBatch<Scalar>& batch) const {
    detail::require_shape("FlowMatchingObjective::make_batch: cond", cond, -1, x1.cols());
    if (cond.rows() < 1) {
      detail::reject_argument("FlowMatchingObjective::make_batch: cond", "has no rows",
                              "a k×N matrix, k >= 1");
    }
    detail::require_finite("FlowMatchingObjective::make_batch: cond", cond);
    fill_batch<support>(x0, x1, &cond, generator, batch);
  }

 private:
  template <CouplingSupport support, class Generator>
  void fill_batch(const Matrix<Scalar>& x0, const Matrix<Scalar>& x1, const Matrix<Scalar>* cond,
                  Generator& generator, FlowMatchingBatch<Scalar>& batch) const {
    validate(support);
    if (coupling == CouplingKind::independent) {
      detail::require_batch_pair("FlowMatchingObjective::couple", x0, x1, true);
      fill_paired_batch(x0, x1, generator, batch);
      if (cond != nullptr) batch.cond = *cond;
    } else if constexpr (support == CouplingSupport::all) {
      const auto [source, data] = couple(x0, x1, generator);
      const Index count = x0.cols();
      Matrix<Scalar> paired_x0(x0.rows(), count);
      Matrix<Scalar> paired_x1(x1.rows(), count);
      for (Index k = 0; k < count; ++k) {
        paired_x0.col(k) = x0.col(source[k]);
        paired_x1.col(k) = x1.col(data[k]);
      }
      fill_paired_batch(paired_x0, paired_x1, generator, batch);
      if (cond != nullptr) {
        batch.cond.resize(cond->rows(), count);
        for (Index k = 0; k < count; ++k) batch.cond.col(k) = cond->col(data[k]);
      }
    }
    if (cond != nullptr) {
      drop_conditions<Scalar>(batch.cond, label_dropout, null_condition, generator);
    } else {
      batch.cond.resize(0, 0);
    }
  }

  // Times, smoothing noise and the path for the pairs (column k of x0 with column k of x1).
  // The noise is drawn into u_t, which the path then overwrites with the target velocity.
  template <class Generator>
  void fill_paired_batch(const Matrix<Scalar>& x0, const Matrix<Scalar>& x1, Generator& generator,
                         FlowMatchingBatch<Scalar>& batch) const {
    const Index count = x0.cols();
    batch.t.resize(count);
    batch.x_t.resize(x0.rows(), count);
    batch.u_t.resize(x0.rows(), count);
    sample_times_into(batch.t, generator);
    StandardNormal::sample_into<Scalar>(batch.u_t, generator);
    path.sample_into(x0, x1, batch.u_t, batch.t, batch.x_t, batch.u_t);
  }

  // N pairs from the plan as plan_sampling says, by index (see sample_pairs_from_plan).
  template <class Generator>
  void draw_plan_pairs(const Matrix<Scalar>& plan, Generator& generator, std::vector<Index>& source,
                       std::vector<Index>& data) const {
    if (plan_sampling == PlanSampling::flattened) {
      const auto cumulative = detail::cumulative_sums(plan.reshaped());
      for (std::size_t k = 0; k < source.size(); ++k) {
        const Index flat = detail::draw_from_cumulative(cumulative, generator);
        source[k] = flat % plan.rows();  // column-major: flat = i + N·j
        data[k] = flat / plan.rows();
      }
      return;
    }
    for (Index row = 0; row < plan.rows(); ++row) {
      const auto cumulative = detail::cumulative_sums(plan.row(row));
      if (!(cumulative.back() > Scalar(0))) {
        throw numerical_error("FlowMatchingObjective::couple: the entropic plan's row " +
                                  detail::to_text(row) + " has mass 0 (epsilon too small)",
                              0.0);
      }
      data[static_cast<std::size_t>(row)] = detail::draw_from_cumulative(cumulative, generator);
    }
  }
};

}  // namespace flowmatch
