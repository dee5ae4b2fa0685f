/// @file integrate.hpp
/// @brief Fixed-step integration of a velocity field on a manifold: Euler, midpoint and RK4
/// with every stage kept on the manifold, in either direction of time.
///
/// One step of an explicit Runge-Kutta method (stages i = 1..s, coefficients a, b, c) from a
/// point x at time t with step h (negative when integrating backwards):
///
///     Y_i = R_x(h·Σ_{j<i} a_ij·k_j),  k_i = P_{Y_i} u(t + c_i·h, Y_i),  x ← R_x(h·Σ_i b_i·k_i)
///
/// where P_y is the tangent projection at y and R_x the step map of the stepping mode:
///
/// - ManifoldStepping::projection: R_x(w) = π(x + w), the nearest point of x + w. This is the
///   method applied in the ambient space to the field y ↦ P_{π(y)} u(π(y)), which agrees with
///   u on the manifold and is tangent there, so the method keeps its order (1, 2, 4).
/// - ManifoldStepping::exponential: R_x(w) = exp_x(w), Euler being x ← exp_x(h·u). The method
///   runs in the normal coordinates w of x = exp_x(w), where the flow obeys
///   ẇ = D(log_x)(exp_x w)[u]: each stage velocity k_i, tangent at Y_i, is pulled back to T_x
///   as D(log_x)(Y_i)[k_i] (Manifold::log_differential) before the stages are combined, so the
///   method keeps its order here too.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "flowmatch/core/errors.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/time_grid.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/field/capabilities.hpp"
#include "flowmatch/manifold/manifold.hpp"
#include "flowmatch/solver/options.hpp"
#include "flowmatch/solver/result.hpp"

namespace flowmatch {

/// The explicit Runge-Kutta methods of integrate_on_manifold.
enum class ManifoldMethod {
  euler,     ///< First order, one evaluation per step.
  midpoint,  ///< Second order, two evaluations per step.
  rk4,       ///< Classical fourth order, four evaluations per step.
};

/// How a step returns to the manifold (see the file comment).
enum class ManifoldStepping {
  projection,   ///< x ← π(x + h·Σ b_i k_i), each stage point projected too.
  exponential,  ///< x ← exp_x(h·Σ b_i k̃_i) with k̃_i = D(log_x)(Y_i)[k_i], stages likewise.
};

/// Settings of integrate_on_manifold.
template <class Scalar = double>
struct ManifoldSolverOptions {
  /// The observer of the Euclidean solvers (SolverOptions::Observer): called with the time
  /// reached, the state there and the statistics so far.
  using Observer = typename SolverOptions<Scalar>::Observer;

  /// The integration method.
  ManifoldMethod method = ManifoldMethod::rk4;
  /// How steps and stages return to the manifold.
  ManifoldStepping stepping = ManifoldStepping::projection;
  /// Each grid interval of length L is split into ceil(L/h) equal steps (a ratio within a few
  /// rounding errors of an integer is not rounded up); without it, one step per interval.
  std::optional<Scalar> step_size;
  /// Keep the state at every grid time in SolveResult::trajectory.
  bool return_trajectory = false;
  /// Optional observer called after each step, as SolverOptions::observer: t runs in the
  /// direction of integration and ends on each grid time exactly; the state is the
  /// dimension()×N points, on the manifold (log_likelihood_on_manifold passes the
  /// (dimension() + 1)×N state of log_likelihood: the points, then a row with the integral of
  /// the divergence from t = 1). An exception it throws ends the integration and propagates.
  Observer observer;
};

namespace detail {

/// The coefficients of an explicit Runge-Kutta method with at most four stages.
template <class Scalar>
struct ManifoldTableau {
  std::size_t stages;                            ///< s.
  std::array<std::array<Scalar, 4>, 4> weights;  ///< a_ij, j < i.
  std::array<Scalar, 4> combination;             ///< b_i.
  std::array<Scalar, 4> nodes;                   ///< c_i.
};

/// The tableau of @p method; throws std::invalid_argument for a value outside the enumeration.
template <class Scalar>
ManifoldTableau<Scalar> manifold_tableau(ManifoldMethod method) {
  const Scalar half(0.5), sixth = Scalar(1) / Scalar(6), third = Scalar(1) / Scalar(3);
  switch (method) {
    case ManifoldMethod::euler:
      return {1, {}, {Scalar(1)}, {Scalar(0)}};
    case ManifoldMethod::midpoint:
      return {2, {{{}, {half}}}, {Scalar(0), Scalar(1)}, {Scalar(0), half}};
    case ManifoldMethod::rk4:
      return {4,
              {{{}, {half}, {Scalar(0), half}, {Scalar(0), Scalar(0), Scalar(1)}}},
              {sixth, third, third, sixth},
              {Scalar(0), half, half, Scalar(1)}};
  }
  reject_argument("ManifoldSolverOptions: method", is_value(static_cast<int>(method)),
                  "ManifoldMethod::euler, midpoint or rk4");
}

/// Throws numerical_error naming @p what, the time and the first non-finite sample (column of
/// a matrix, entry of a vector), if any.
template <class Derived, class Scalar>
void require_finite_on_manifold(const char* what, const Eigen::DenseBase<Derived>& values,
                                Scalar t) {
  const Index column = first_nonfinite_index(values);
  if (column >= 0) {
    throw numerical_error("integrate_on_manifold: non-finite " + std::string(what) +
                              " at t = " + to_text(t) + " in column " + to_text(column),
                          static_cast<double>(t), column);
  }
}

/// The fixed-step integrator of integrate_on_manifold: its buffers and one step. With a
/// @p Rate other than std::nullptr_t it also integrates one scalar per sample,
/// dℓ/dt = rate(t, x), called as `rate(t, points, velocity, VectorRef out)` at every stage
/// with the field's ambient velocity at the stage's points, before the tangent projection (the
/// log-density change of log_likelihood_on_manifold, whose divergence needs the velocity and
/// so costs no evaluation of its own), with the same tableau.
template <Manifold M, class Field, class Rate = std::nullptr_t>
class ManifoldStepper {
 public:
  using Scalar = typename M::scalar_type;
  /// Whether the stepper integrates a scalar per sample besides the points.
  static constexpr bool accumulates = !std::is_same_v<Rate, std::nullptr_t>;

  /// A stepper for rows×cols batches; throws std::invalid_argument for a method or stepping
  /// outside its enumeration.
  ManifoldStepper(const M& manifold, const Field& field,
                  const ManifoldSolverOptions<Scalar>& options, Index rows, Index cols,
                  Rate rate = {})
      : manifold_(manifold),
        field_(field),
        rate_(std::move(rate)),
        stepping_(options.stepping),
        tableau_(manifold_tableau<Scalar>(options.method)),
        slopes_(tableau_.stages, Matrix<Scalar>(rows, cols)),
        rates_(accumulates ? tableau_.stages : 0, Vector<Scalar>(cols)),
        stage_(rows, cols),
        increment_(rows, cols) {
    if (stepping_ != ManifoldStepping::projection && stepping_ != ManifoldStepping::exponential) {
      reject_argument("ManifoldSolverOptions: stepping", is_value(static_cast<int>(stepping_)),
                      "ManifoldStepping::projection or exponential");
    }
  }

  /// Advances @p point (and, when the stepper accumulates, @p accumulated) from @p t by @p step
  /// (either sign), counting the evaluations in @p stats.
  void step(Matrix<Scalar>& point, Vector<Scalar>* accumulated, Scalar t, Scalar step,
            SolverStats& stats) {
    for (std::size_t i = 0; i < tableau_.stages; ++i) {
      if (i == 0) {
        stage_ = point;
      } else {
        increment_.setZero();
        for (std::size_t j = 0; j < i; ++j) {
          if (tableau_.weights[i][j] != Scalar(0)) {
            increment_ += (step * tableau_.weights[i][j]) * slopes_[j];
          }
        }
        retract(point, stage_);
      }
      const Scalar stage_time = t + tableau_.nodes[i] * step;
      evaluate_velocity<Scalar>(field_, stage_time, stage_, slopes_[i]);
      ++stats.nfe;
      require_finite_on_manifold("velocity", slopes_[i], stage_time);
      if constexpr (accumulates) {
        rate_(stage_time, ConstMatrixRef<Scalar>(stage_), ConstMatrixRef<Scalar>(slopes_[i]),
              VectorRef<Scalar>(rates_[i]));
        require_finite_on_manifold("rate", rates_[i], stage_time);
      }
      manifold_.project_tangents(stage_, slopes_[i], slopes_[i]);
      if (stepping_ == ManifoldStepping::exponential) {
        manifold_.log_differential(point, stage_, slopes_[i], slopes_[i]);
      }
    }
    if constexpr (accumulates) {
      for (std::size_t i = 0; i < tableau_.stages; ++i) {
        if (tableau_.combination[i] != Scalar(0)) {
          *accumulated += (step * tableau_.combination[i]) * rates_[i];
        }
      }
    }
    increment_.setZero();
    for (std::size_t i = 0; i < tableau_.stages; ++i) {
      if (tableau_.combination[i] != Scalar(0)) {
        increment_ += (step * tableau_.combination[i]) * slopes_[i];
      }
    }
    retract(point, stage_);
    point.swap(stage_);
    require_finite_on_manifold("state", point, t + step);
  }

 private:
  /// out = R_x(increment_): π(x + w) or exp_x(P_x w) (w is tangent up to rounding).
  void retract(const Matrix<Scalar>& point, Matrix<Scalar>& out) {
    if (stepping_ == ManifoldStepping::projection) {
      out = point + increment_;
      manifold_.project_points(out, out);
    } else {
      manifold_.project_tangents(point, increment_, increment_);
      manifold_.exp(point, increment_, out);
    }
  }

  const M& manifold_;
  const Field& field_;
  Rate rate_;
  ManifoldStepping stepping_;
  ManifoldTableau<Scalar> tableau_;
  std::vector<Matrix<Scalar>> slopes_;
  std::vector<Vector<Scalar>> rates_;
  Matrix<Scalar> stage_;
  Matrix<Scalar> increment_;
};

/// Runs @p stepper through the grid @p times (checked) from result.state: the steps of each
/// interval (options.step_size, else one), the statistics, the observer after each step and,
/// with options.return_trajectory, the state at each grid time. With @p accumulated, the
/// observer sees the points with the accumulated scalars as one more row.
template <class Stepper, class Scalar>
void run_manifold_grid(Stepper& stepper, std::span<const Scalar> times,
                       const ManifoldSolverOptions<Scalar>& options, SolveResult<Scalar>& result,
                       std::type_identity_t<Vector<Scalar>*> accumulated) {
  result.times.assign(times.begin(), times.end());
  if (options.return_trajectory) result.trajectory.push_back(result.state);
  Matrix<Scalar> augmented;  // the observed state with the accumulated row
  const auto observe = [&](Scalar t) {
    if (!options.observer) return;
    if (accumulated == nullptr) {
      options.observer(t, result.state, result.stats);
      return;
    }
    augmented.resize(result.state.rows() + 1, result.state.cols());
    augmented.topRows(result.state.rows()) = result.state;
    augmented.bottomRows(1) = accumulated->transpose();
    options.observer(t, augmented, result.stats);
  };
  for (std::size_t interval = 0; interval + 1 < times.size(); ++interval) {
    const Scalar start = times[interval], end = times[interval + 1];
    const std::size_t steps =
        options.step_size ? fixed_step_count(end - start, *options.step_size) : 1;
    const Scalar step = (end - start) / static_cast<Scalar>(steps);
    for (std::size_t k = 0; k < steps; ++k) {
      const Scalar t = start + static_cast<Scalar>(k) * step;
      // The last step ends on the grid time exactly.
      const bool last = k + 1 == steps;
      const Scalar length = last ? end - t : step;
      stepper.step(result.state, accumulated, t, length, result.stats);
      ++result.stats.accepted;
      const double size = std::abs(static_cast<double>(length));
      result.stats.min_step =
          result.stats.accepted == 1 ? size : std::min(result.stats.min_step, size);
      result.stats.max_step = std::max(result.stats.max_step, size);
      observe(last ? end : start + static_cast<Scalar>(k + 1) * step);
    }
    if (options.return_trajectory) result.trajectory.push_back(result.state);
  }
}

/// Throws std::invalid_argument unless the step size of @p options, if set, is positive.
template <class Scalar>
void validate_manifold_options(const ManifoldSolverOptions<Scalar>& options) {
  if (options.step_size) require_positive("ManifoldSolverOptions: step_size", *options.step_size);
}

}  // namespace detail

/// Integrates the velocity field @p field on @p manifold from the points @p x at times[0]
/// through the grid @p times (strictly monotone in [0, 1], increasing for sampling, decreasing
/// for encoding), keeping every stage on the manifold (see the file comment). The field's
/// velocities are projected onto the tangent spaces, so an ambient field works as it is.
/// @param x dimension()×N points on the manifold (within detail::manifold_tolerance).
/// @return the state at the last grid time, the state at every grid time with
/// options.return_trajectory, the grid and the statistics (nfe: one evaluation of the field
/// per stage, so stages × steps; accepted: every step), as SolverOptions' fixed-step methods
/// report them; options.observer sees every step.
/// Throws std::invalid_argument for bad shapes, non-finite or off-manifold points, a bad grid
/// or options, std::domain_error for grid times outside [0, 1], and numerical_error with the
/// time and the first bad column when a velocity or a state becomes non-finite.
template <Manifold M, VelocityField<typename M::scalar_type> Field>
SolveResult<typename M::scalar_type> integrate_on_manifold(
    const M& manifold, const Field& field, const ConstMatrixRef<typename M::scalar_type>& x,
    std::span<const typename M::scalar_type> times,
    const ManifoldSolverOptions<typename M::scalar_type>& options = {}) {
  using Scalar = typename M::scalar_type;
  detail::require_on_manifold("integrate_on_manifold: x", manifold, x);
  detail::validate_grid("integrate_on_manifold", times);
  detail::validate_manifold_options(options);
  detail::ManifoldStepper<M, Field> stepper(manifold, field, options, x.rows(), x.cols());
  SolveResult<Scalar> result;
  result.state = x;
  detail::run_manifold_grid(stepper, times, options, result, nullptr);
  return result;
}

/// integrate_on_manifold with the grid written as a braced list: `{0.0, 1.0}`.
template <Manifold M, VelocityField<typename M::scalar_type> Field>
SolveResult<typename M::scalar_type> integrate_on_manifold(
    const M& manifold, const Field& field, const ConstMatrixRef<typename M::scalar_type>& x,
    std::initializer_list<typename M::scalar_type> times,
    const ManifoldSolverOptions<typename M::scalar_type>& options = {}) {
  return integrate_on_manifold(manifold, field, x, detail::grid_span(times), options);
}

}  // namespace flowmatch
