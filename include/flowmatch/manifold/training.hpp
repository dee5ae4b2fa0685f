/// @file training.hpp
/// @brief Riemannian flow-matching training: minibatches on the geodesic path and the
/// regression loss of a model projected onto the tangent spaces.
///
/// For a minibatch of N points x_t on the geodesic paths, their times t and their conditional
/// velocities u_t (tangent at x_t), a model's ambient prediction v = u_θ(t, x_t) acts through
/// its projection P v, and the loss is the squared metric norm of the error, averaged over the
/// N·D entries as the Euclidean loss (train/flow_matching_loss.hpp):
///
///     L = (1/(N·D))·Σ_i ‖P_i v_i − u_i‖²,   ∂L/∂v_i = 2·P_i(P_i v_i − u_i)/(N·D)
///
/// (P is an orthogonal projection, symmetric and idempotent). The normal part of a prediction
/// is thus neither rewarded nor penalised: the model is free off the tangent space, where the
/// integrators and TangentField project it away.
#pragma once

#include <random>
#include <string>
#include <type_traits>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/manifold/geodesic_path.hpp"
#include "flowmatch/manifold/manifold.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/nn/mlp_workspace.hpp"
#include "flowmatch/train/flow_matching_loss.hpp"

namespace flowmatch {

/// A training minibatch for the data points @p x1 (on the manifold, one column per sample):
/// x₀ from the manifold's base distribution, t uniform in [0, 1], then x_t and u_t of the
/// geodesic path (GeodesicPath::sample). Draws from the caller's @p generator: first all x₀,
/// then the times.
template <Manifold M, ConvexScheduler S, class Generator>
FlowMatchingBatch<typename M::scalar_type> riemannian_flow_matching_batch(
    const GeodesicPath<M, S>& path, const ConstMatrixRef<typename M::scalar_type>& x1,
    Generator& generator) {
  using Scalar = typename M::scalar_type;
  detail::require_on_manifold("riemannian_flow_matching_batch: x1", path.manifold(), x1);
  const Matrix<Scalar> x0 = sample_base(path.manifold(), x1.cols(), generator);
  FlowMatchingBatch<Scalar> batch;
  batch.t.resize(x1.cols());
  std::uniform_real_distribution<Scalar> uniform(Scalar(0), Scalar(1));
  for (Index col = 0; col < x1.cols(); ++col) batch.t(col) = uniform(generator);
  auto sample = path.sample(x0, x1, batch.t);
  batch.x_t = std::move(sample.x_t);
  batch.u_t = std::move(sample.dx_t);
  return batch;
}

/// The loss L of the ambient @p prediction at @p points against the tangent @p target (see the
/// file comment), and ∂L/∂prediction into @p gradient (same shape). Returns L.
/// @throws std::invalid_argument unless the three matrices have the points' shape and are
/// finite.
template <Manifold M>
typename M::scalar_type riemannian_flow_matching_loss_and_gradient(
    const M& manifold, const ConstMatrixRef<typename M::scalar_type>& points,
    const ConstMatrixRef<typename M::scalar_type>& prediction,
    const ConstMatrixRef<typename M::scalar_type>& target,
    MatrixRef<typename M::scalar_type> gradient) {
  using Scalar = typename M::scalar_type;
  detail::require_manifold_batch("riemannian_flow_matching_loss: points", manifold, points);
  detail::require_loss_arguments<Scalar>("riemannian_flow_matching_loss", prediction, target);
  detail::require_shape("riemannian_flow_matching_loss: prediction", prediction, points.rows(),
                        points.cols());
  detail::require_shape("riemannian_flow_matching_loss: gradient", gradient, points.rows(),
                        points.cols());
  manifold.project_tangents(points, prediction, gradient);
  gradient -= target;
  const Scalar loss = gradient.squaredNorm() / Scalar(prediction.size());
  manifold.project_tangents(points, gradient, gradient);
  gradient *= Scalar(2) / Scalar(prediction.size());
  return loss;
}

/// The loss of @p model on @p batch (conditional if batch.cond is nonempty) with its
/// predictions projected onto the tangent spaces at batch.x_t, and its gradient with respect
/// to every weight and bias, written into @p gradient (overwritten). Returns L.
/// @p workspace holds the forward pass; it must not be shared with another thread.
/// @throws std::invalid_argument for shapes that do not fit the model or non-finite entries.
template <Manifold M>
typename M::scalar_type mlp_riemannian_flow_matching_loss(
    const M& manifold, const Mlp<typename M::scalar_type>& model,
    MlpWorkspace<typename M::scalar_type>& workspace,
    const FlowMatchingBatch<typename M::scalar_type>& batch,
    MlpGradient<typename M::scalar_type>& gradient) {
  using Scalar = typename M::scalar_type;
  detail::require_shape("mlp_riemannian_flow_matching_loss: batch.t", batch.t, batch.x_t.cols(), 1);
  Matrix<Scalar> prediction(model.dim(), batch.x_t.cols());
  if (batch.cond.size() == 0) {
    model.forward(workspace, batch.t, batch.x_t, prediction);
  } else {
    model.forward(workspace, batch.t, batch.x_t, batch.cond, prediction);
  }
  Matrix<Scalar> output_gradient(prediction.rows(), prediction.cols());
  const Scalar loss = riemannian_flow_matching_loss_and_gradient(manifold, batch.x_t, prediction,
                                                                 batch.u_t, output_gradient);
  model.backward(workspace, output_gradient, gradient);
  return loss;
}

}  // namespace flowmatch
