/// @file flow_matching_loss.hpp
/// @brief The flow-matching regression loss and its gradient, for a prediction matrix and for
/// the parameters of an Mlp.
///
/// For a minibatch of N training points in R^d (times t_i, points x_t,i, targets u_t,i):
///
///     L = (1/(N·d))·Σ_i ‖u_θ(t_i, x_t,i) − u_t,i‖²,      ∂L/∂u_θ = 2·(u_θ − u_t)/(N·d),
///
/// the mean over all N·d entries (as torchcfm's `torch.mean((vt − ut) ** 2)`). The parameter
/// gradient follows from ∂L/∂u_θ by Mlp::backward.
#pragma once

#include <stdexcept>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/nn/mlp_workspace.hpp"

namespace flowmatch {

/// A minibatch of flow-matching regression data: the model is asked for u_θ(t, x_t[, cond]) and
/// compared with u_t.
template <class Scalar = double>
struct FlowMatchingBatch {
  Vector<Scalar> t;     ///< per-sample times, length N.
  Matrix<Scalar> x_t;   ///< points on the conditional paths, d×N.
  Matrix<Scalar> u_t;   ///< conditional velocities (the regression targets), d×N.
  Matrix<Scalar> cond;  ///< conditions k×N after label dropout; empty (0×0) if unconditional.
};

/// L = mean over all entries of (prediction − target)².
/// @throws std::invalid_argument unless both have the same nonempty shape and are finite.
template <class Scalar>
[[nodiscard]] Scalar flow_matching_loss(const ConstMatrixRef<Scalar>& prediction,
                                        const ConstMatrixRef<Scalar>& target) {
  detail::require_shape("flow_matching_loss: target", target, prediction.rows(), prediction.cols());
  if (prediction.size() == 0) {
    detail::reject_argument("flow_matching_loss: prediction",
                            "has shape " + detail::to_text(prediction.rows()) + "x" +
                                detail::to_text(prediction.cols()),
                            "at least 1 entry");
  }
  detail::require_finite("flow_matching_loss: prediction", prediction);
  detail::require_finite("flow_matching_loss: target", target);
  return (prediction - target).squaredNorm() / Scalar(prediction.size());
}

/// L as flow_matching_loss, and ∂L/∂prediction = 2·(prediction − target)/(N·d) into
/// @p gradient (same shape). Returns L.
/// @throws std::invalid_argument as flow_matching_loss, or if gradient has another shape.
template <class Scalar>
Scalar flow_matching_loss_and_gradient(const ConstMatrixRef<Scalar>& prediction,
                                       const ConstMatrixRef<Scalar>& target,
                                       MatrixRef<Scalar> gradient) {
  const Scalar loss = flow_matching_loss<Scalar>(prediction, target);
  detail::require_shape("flow_matching_loss_and_gradient: gradient", gradient, prediction.rows(),
                        prediction.cols());
  gradient = (Scalar(2) / Scalar(prediction.size())) * (prediction - target);
  return loss;
}

/// The loss of @p model on @p batch (conditional if batch.cond is nonempty) and its gradient
/// with respect to every weight and bias, written into @p gradient (overwritten). Returns L.
/// @p workspace holds the forward pass; it must not be shared with another thread.
/// @throws std::invalid_argument for shapes that do not fit the model or non-finite entries.
template <class Scalar>
Scalar mlp_flow_matching_loss(const Mlp<Scalar>& model, MlpWorkspace<Scalar>& workspace,
                              const FlowMatchingBatch<Scalar>& batch,
                              MlpGradient<Scalar>& gradient) {
  detail::require_shape("mlp_flow_matching_loss: batch.u_t", batch.u_t, batch.x_t.rows(),
                        batch.x_t.cols());
  Matrix<Scalar> prediction(model.dim(), batch.x_t.cols());
  if (batch.cond.size() == 0) {
    model.forward(workspace, batch.t, batch.x_t, prediction);
  } else {
    model.forward(workspace, batch.t, batch.x_t, batch.cond, prediction);
  }
  Matrix<Scalar> output_gradient(prediction.rows(), prediction.cols());
  const Scalar loss =
      flow_matching_loss_and_gradient<Scalar>(prediction, batch.u_t, output_gradient);
  model.backward(workspace, output_gradient, gradient);
  return loss;
}

}  // namespace flowmatch
