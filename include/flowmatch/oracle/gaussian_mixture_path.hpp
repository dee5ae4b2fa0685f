/// @file gaussian_mixture_path.hpp
/// @brief The affine path from N(0, I) to a Gaussian mixture, with its exact density, score,
/// marginal velocity, divergence and its gradient, and Jacobian products: the closed-form
/// reference of flowmatch.
///
/// x_t = α_t x₁ + σ_t x₀ with x₀ ~ N(0, I) and x₁ ~ p₁ = Σ_k w_k N(μ_k, Σ_k) independent.
///
///   p_t = Σ_k w_k N(m_k, C_k),  m_k = α_t μ_k,  C_k = α_t²Σ_k + σ_t²I;
///   γ_k(x) = w_k N(x; m_k, C_k) / p_t(x)  (posterior of component k, by log-sum-exp);
///   s_k(x) = −C_k⁻¹(x − m_k),  score s = ∇log p_t = Σ_k γ_k s_k.
///
/// Within component k, (x₁, x₀, x_t) are jointly Gaussian with Cov(x₁, x_t) = α Σ_k and
/// Cov(x₀, x_t) = σ I, so E[x₁ | x_t = x, k] = μ_k + α Σ_k C_k⁻¹(x − m_k) and
/// E[x₀ | x_t = x, k] = σ C_k⁻¹(x − m_k). The conditional velocity is therefore
///
///   u_k(x) = α̇ μ_k + A_k (x − m_k),  A_k = (α α̇ Σ_k + σ σ̇ I) C_k⁻¹ = ½ Ċ_k C_k⁻¹  (symmetric),
///
/// and the marginal velocity u_t(x) = E[α̇ x₁ + σ̇ x₀ | x_t = x] = Σ_k γ_k u_k. Since
/// ∇γ_k = γ_k (s_k − s), its Jacobian is ∂u/∂x = Σ_k γ_k [A_k + u_k (s_k − s)ᵀ], hence
///
///   div u = Σ_k γ_k [tr A_k + (s_k − s)·u_k],
///   (∂u/∂x) v = Σ_k γ_k [A_k v + u_k ((s_k − s)·v)],
///   (∂u/∂x)ᵀ w = Σ_k γ_k [A_k w + (s_k − s)(u_k·w)].
///
/// With Σ_k = Q_k Λ_k Q_kᵀ, both C_k and A_k are diagonal in the basis Q_k, with eigenvalues
/// c = α²λ + σ² and a = (α α̇ λ + σ σ̇)/c; nothing is inverted, and every formula holds on all of
/// [0, 1] (C_0 = I, C_1 = Σ_k), except where the scheduler itself is singular (VP's σ̇ at t = 1
/// throws from the scheduler).
#pragma once

#include <string>
#include <utility>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/oracle/gaussian_mixture.hpp"
#include "flowmatch/scheduler/scheduler.hpp"

namespace flowmatch {

/// The affine path from N(0, I) (t = 0) to a Gaussian mixture (t = 1) under scheduler @p S,
/// with all its quantities in closed form (see the file comment for the formulas).
///
/// It is an in-place VelocityField with an exact divergence (HasDivergence), exact
/// Jacobian-vector and vector-Jacobian products (HasJvp, HasVjp) and the exact gradient of the
/// divergence (HasDivergenceGradient). Every member validates
/// its arguments: x must be d×N and finite, t in [0, 1]; a non-finite result throws
/// flowmatch::numerical_error.
template <Scheduler S>
class GaussianMixturePath {
 public:
  using scheduler_type = S;
  using scalar_type = typename S::scalar_type;

  /// The path to @p data under @p scheduler.
  explicit GaussianMixturePath(GaussianMixture<scalar_type> data, S scheduler = S{})
      : data_(std::move(data)),
        scheduler_(std::move(scheduler)),
        projected_means_(data_.dim(), data_.components()) {
    for (Index k = 0; k < data_.components(); ++k) {
      projected_means_.col(k).noalias() = data_.eigenvectors(k).transpose() * data_.means().col(k);
    }
  }

  /// The dimension d.
  [[nodiscard]] Index dim() const { return data_.dim(); }
  /// The data distribution p₁.
  [[nodiscard]] const GaussianMixture<scalar_type>& data() const { return data_; }
  /// The scheduler.
  [[nodiscard]] const S& scheduler() const { return scheduler_; }

  /// The marginal p_t = Σ_k w_k N(α_t μ_k, α_t²Σ_k + σ_t²I) as a mixture.
  [[nodiscard]] GaussianMixture<scalar_type> marginal(scalar_type t) const {
    detail::require_unit_time("GaussianMixturePath: t", t);
    return data_.scaled_plus_noise(scheduler_.alpha(t), scheduler_.sigma(t));
  }

  /// log p_t(x) for each column of @p x (d×N): a length-N vector.
  [[nodiscard]] Vector<scalar_type> log_prob(scalar_type t,
                                             const ConstMatrixRef<scalar_type>& x) const {
    check_points("x", x, -1);
    return marginal_at(t).log_prob(x);
  }

  /// The score ∇log p_t(x) for each column of @p x (d×N): a d×N matrix.
  [[nodiscard]] Matrix<scalar_type> score(scalar_type t,
                                          const ConstMatrixRef<scalar_type>& x) const {
    check_points("x", x, -1);
    return marginal_at(t).score(x);
  }

  /// The marginal velocity u_t(x) = Σ_k γ_k u_k(x) into @p out (d×N).
  void operator()(scalar_type t, const ConstMatrixRef<scalar_type>& x,
                  MatrixRef<scalar_type> out) const {
    check_points("x", x, -1);
    detail::require_shape("GaussianMixturePath: out", out, dim(), x.cols());
    const Dynamics dynamics = dynamics_at(t);
    detail::MixturePosterior<scalar_type> block;
    const Matrix<scalar_type> scaled_means = dynamics.d_alpha * data_.means();
    Matrix<scalar_type> weighted;
    detail::for_each_column_block(x.cols(), [&](Index start, Index count) {
      dynamics.marginal.posterior(x.middleCols(start, count), start, block);
      auto velocity = out.middleCols(start, count);
      // Σ_k γ_k α̇ μ_k + Σ_k Q_k (γ_k a_k Y_k). The factors are evaluated into plain matrices
      // first, so every product of the oracle instantiates the same Eigen product kernel (a
      // product with an expression operand is a new instantiation: seconds of compile time).
      velocity.noalias() = scaled_means * block.responsibilities;
      for (Index k = 0; k < data_.components(); ++k) {
        weighted =
            (gained(dynamics, block, k).rowwise() * block.responsibilities.row(k).array()).matrix();
        velocity.noalias() += data_.eigenvectors(k) * weighted;
      }
    });
    detail::require_finite_result("GaussianMixturePath: velocity", out, static_cast<double>(t));
  }

  /// The exact divergence ∇·u_t at each column of @p x into @p out (length N).
  void divergence(scalar_type t, const ConstMatrixRef<scalar_type>& x,
                  VectorRef<scalar_type> out) const {
    check_points("x", x, -1);
    detail::require_shape("GaussianMixturePath: out", out, x.cols(), 1);
    const Dynamics dynamics = dynamics_at(t);
    const Eigen::Matrix<scalar_type, 1, Eigen::Dynamic> traces = dynamics.gains.colwise().sum();
    out.setZero();
    visit_components(
        dynamics, x,
        [&](Index start, Index count, Index k, const auto& responsibility,
            const Matrix<scalar_type>& velocity, const Matrix<scalar_type>& deviation) {
          // γ_k [tr A_k + (s_k − s)·u_k]; the dot product is basis-independent.
          out.segment(start, count).array() +=
              (responsibility.array() *
               (traces(k) + (deviation.array() * velocity.array()).colwise().sum()))
                  .transpose();
        });
    detail::require_finite_result("GaussianMixturePath: divergence", out, static_cast<double>(t));
  }

  /// The gradient of the divergence ∇(∇·u_t) at each column of @p x into @p out (d×N).
  /// With g_k = tr A_k + (s_k − s)·u_k and the Hessian H = ∇s = Σ_j γ_j (s_j s_jᵀ − C_j⁻¹) − s sᵀ,
  ///   ∇(∇·u) = Σ_k γ_k [(s_k − s) g_k + A_k (s_k − s) + C_k⁻¹ (u − u_k) − s_k (s_k·u)] + s (s·u),
  /// the last two terms being −H u.
  void divergence_gradient(scalar_type t, const ConstMatrixRef<scalar_type>& x,
                           MatrixRef<scalar_type> out) const {
    check_points("x", x, -1);
    detail::require_shape("GaussianMixturePath: out", out, dim(), x.cols());
    const Dynamics dynamics = dynamics_at(t);
    const Eigen::Matrix<scalar_type, 1, Eigen::Dynamic> traces = dynamics.gains.colwise().sum();
    Matrix<scalar_type> velocity(dim(), x.cols());
    (*this)(t, x, velocity);
    const Matrix<scalar_type> score = dynamics.marginal.score(x);
    out = (score.array().rowwise() * (score.array() * velocity.array()).colwise().sum()).matrix();
    Matrix<scalar_type> projected_velocity;
    Matrix<scalar_type> component_score;
    Matrix<scalar_type> term;
    visit_components(
        dynamics, x,
        [&](Index start, Index count, Index k, const auto& responsibility,
            const Matrix<scalar_type>& component_velocity, const Matrix<scalar_type>& deviation) {
          // Everything in the basis Q_k, where A_k and C_k⁻¹ are diagonal.
          const Matrix<scalar_type>& eigenvectors = data_.eigenvectors(k);
          projected_velocity.noalias() =
              eigenvectors.transpose() * velocity.middleCols(start, count);
          component_score.noalias() = eigenvectors.transpose() * score.middleCols(start, count);
          component_score += deviation;  // Q_kᵀ s_k
          const Eigen::Array<scalar_type, 1, Eigen::Dynamic> g =
              traces(k) + (deviation.array() * component_velocity.array()).colwise().sum();
          const Eigen::Array<scalar_type, 1, Eigen::Dynamic> score_dot_velocity =
              (component_score.array() * projected_velocity.array()).colwise().sum();
          term = (deviation.array().rowwise() * g +
                  deviation.array().colwise() * dynamics.gains.col(k).array() +
                  (projected_velocity - component_velocity).array().colwise() /
                      dynamics.marginal.variances().col(k).array() -
                  component_score.array().rowwise() * score_dot_velocity)
                     .matrix();
          term.array().rowwise() *= responsibility.array();
          out.middleCols(start, count).noalias() += eigenvectors * term;
        });
    detail::require_finite_result("GaussianMixturePath: divergence_gradient", out,
                                  static_cast<double>(t));
  }

  /// The Jacobian-vector product (∂u_t/∂x)·tangent for each column, into @p out (d×N).
  void jvp(scalar_type t, const ConstMatrixRef<scalar_type>& x,
           const ConstMatrixRef<scalar_type>& tangent, MatrixRef<scalar_type> out) const {
    jacobian_product(t, x, "tangent", tangent, out, false);
  }

  /// The vector-Jacobian product (∂u_t/∂x)ᵀ·cotangent for each column, into @p out (d×N).
  void vjp(scalar_type t, const ConstMatrixRef<scalar_type>& x,
           const ConstMatrixRef<scalar_type>& cotangent, MatrixRef<scalar_type> out) const {
    jacobian_product(t, x, "cotangent", cotangent, out, true);
  }

 private:
  using Scalar = scalar_type;

  /// Everything about the path at one time that does not depend on x.
  struct Dynamics {
    detail::ScaledMixture<Scalar> marginal;  // p_t in the eigenbases
    Scalar d_alpha;                          // α̇_t
    Matrix<Scalar> gains;  // eigenvalues a = (α α̇ λ + σ σ̇)/c of every A_k (d×K)
  };

  /// Throws unless @p points is dim()×cols (any count for cols < 0) and finite; the name is
  /// composed only when a check fails.
  void check_points(const char* name, const ConstMatrixRef<Scalar>& points, Index cols) const {
    if (points.rows() == dim() && (cols < 0 || points.cols() == cols) && points.allFinite()) return;
    const std::string label = detail::argument_name("GaussianMixturePath", name);
    detail::require_shape(label, points, dim(), cols);
    detail::require_finite(label, points);
  }

  [[nodiscard]] detail::ScaledMixture<Scalar> marginal_at(Scalar t) const {
    detail::require_unit_time("GaussianMixturePath: t", t);
    return detail::ScaledMixture<Scalar>(data_, scheduler_.alpha(t), scheduler_.sigma(t),
                                         static_cast<double>(t));
  }

  [[nodiscard]] Dynamics dynamics_at(Scalar t) const {
    detail::ScaledMixture<Scalar> marginal = marginal_at(t);
    const SchedulerValues<Scalar> values = scheduler_values(scheduler_, t);
    Matrix<Scalar> gains = (((values.alpha * values.d_alpha) * data_.eigenvalues().array() +
                             values.sigma * values.d_sigma) /
                            marginal.variances().array())
                               .matrix();
    return Dynamics{std::move(marginal), values.d_alpha, std::move(gains)};
  }

  /// a_k ∘ Y_k: A_k (x − m_k) in the basis Q_k.
  [[nodiscard]] static auto gained(const Dynamics& dynamics,
                                   const detail::MixturePosterior<Scalar>& block, Index k) {
    return block.residuals[static_cast<std::size_t>(k)].array().colwise() *
           dynamics.gains.col(k).array();
  }

  /// Calls visit(start, count, k, γ_k, Q_kᵀ u_k, Q_kᵀ (s_k − s)) for every column block of x
  /// and every component k (γ_k is a 1×count row, the others d×count).
  template <class Visit>
  void visit_components(const Dynamics& dynamics, const ConstMatrixRef<Scalar>& x,
                        Visit&& visit) const {
    detail::MixturePosterior<Scalar> block;
    Matrix<Scalar> score;
    Matrix<Scalar> velocity;
    Matrix<Scalar> deviation;
    detail::for_each_column_block(x.cols(), [&](Index start, Index count) {
      dynamics.marginal.posterior(x.middleCols(start, count), start, block);
      score.resize(dim(), count);
      dynamics.marginal.posterior_score(block, score);
      for (Index k = 0; k < data_.components(); ++k) {
        // Q_kᵀ u_k = α̇ Q_kᵀ μ_k + a_k ∘ Y_k.
        velocity = gained(dynamics, block, k).matrix();
        velocity.colwise() += dynamics.d_alpha * projected_means_.col(k);
        // Q_kᵀ (s_k − s) = −(Y_k / c_k + Q_kᵀ s).
        deviation.noalias() = data_.eigenvectors(k).transpose() * score;
        deviation = -(deviation.array() + dynamics.marginal.whitened(block, k)).matrix();
        visit(start, count, k, block.responsibilities.row(k), velocity, deviation);
      }
    });
  }

  /// J z = Σ_k γ_k [A_k z + left_k (right_k·z)] with (left, right) = (u_k, s_k − s) for the
  /// Jacobian and (s_k − s, u_k) for its transpose; computed in each basis Q_k.
  void jacobian_product(Scalar t, const ConstMatrixRef<Scalar>& x, const char* direction_name,
                        const ConstMatrixRef<Scalar>& direction, MatrixRef<Scalar> out,
                        bool transposed) const {
    check_points("x", x, -1);
    check_points(direction_name, direction, x.cols());
    detail::require_shape("GaussianMixturePath: out", out, dim(), x.cols());
    const Dynamics dynamics = dynamics_at(t);
    out.setZero();
    Matrix<Scalar> projected;
    visit_components(
        dynamics, x,
        [&](Index start, Index count, Index k, const auto& responsibility,
            const Matrix<Scalar>& velocity, const Matrix<Scalar>& deviation) {
          const Matrix<Scalar>& left = transposed ? deviation : velocity;
          const Matrix<Scalar>& right = transposed ? velocity : deviation;
          const Matrix<Scalar>& eigenvectors = data_.eigenvectors(k);
          projected.noalias() = eigenvectors.transpose() * direction.middleCols(start, count);
          const Eigen::Array<Scalar, 1, Eigen::Dynamic> weight =
              responsibility.array() * (right.array() * projected.array()).colwise().sum();
          projected = ((projected.array().colwise() * dynamics.gains.col(k).array()).rowwise() *
                           responsibility.array() +
                       left.array().rowwise() * weight)
                          .matrix();
          out.middleCols(start, count).noalias() += eigenvectors * projected;
        });
    detail::require_finite_result(
        transposed ? "GaussianMixturePath: vjp" : "GaussianMixturePath: jvp", out,
        static_cast<double>(t));
  }

  GaussianMixture<Scalar> data_;
  S scheduler_;
  Matrix<Scalar> projected_means_;  // Q_kᵀ μ_k (d×K)
};

}  // namespace flowmatch
