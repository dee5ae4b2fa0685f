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
///
/// A batch may be processed in blocks of columns (as the trainer does on several threads):
/// with S_c = Σ over block c of ‖u_θ − u_t‖², L = (Σ_c S_c)/(N·d) and the block's share of
/// the gradient is 2·(u_θ − u_t)/(N·d) on its columns, which is what the `partial` functions
/// compute; the whole batch is the case of one block.
#pragma once

#include <stdexcept>
#include <string>
#include <type_traits>

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

namespace detail {

/// Throws std::invalid_argument naming @p function unless prediction and target have the same
/// nonempty shape and are finite. The argument names are composed only when a check fails, so
/// that a valid call does not allocate.
template <class Scalar>
void require_loss_arguments(const char* function, const ConstMatrixRef<Scalar>& prediction,
                            const ConstMatrixRef<Scalar>& target) {
  if (target.rows() != prediction.rows() || target.cols() != prediction.cols()) {
    require_shape(argument_name(function, "target"), target, prediction.rows(), prediction.cols());
  }
  if (prediction.size() == 0) {
    reject_argument(argument_name(function, "prediction"),
                    "has shape " + to_text(prediction.rows()) + "x" + to_text(prediction.cols()),
                    "at least 1 entry");
  }
  if (!prediction.allFinite()) require_finite(argument_name(function, "prediction"), prediction);
  if (!target.allFinite()) require_finite(argument_name(function, "target"), target);
}

}  // namespace detail

/// L = mean over all entries of (prediction − target)².
/// @throws std::invalid_argument unless both have the same nonempty shape and are finite.
template <class Scalar>
[[nodiscard]] Scalar flow_matching_loss(const ConstMatrixRef<Scalar>& prediction,
                                        const ConstMatrixRef<Scalar>& target) {
  detail::require_loss_arguments<Scalar>("flow_matching_loss", prediction, target);
  return (prediction - target).squaredNorm() / Scalar(prediction.size());
}

/// For a block of columns of a batch of @p batch_entries entries (N·d): returns
/// S = Σ (prediction − target)² over the block and writes the block's part of the gradient of
/// the batch's loss, 2·(prediction − target)/batch_entries, into @p gradient (same shape).
/// @throws std::invalid_argument as flow_matching_loss, or if gradient has another shape or
///         batch_entries is smaller than the block.
template <class Scalar>
Scalar flow_matching_partial_loss_and_gradient(const ConstMatrixRef<Scalar>& prediction,
                                               const ConstMatrixRef<Scalar>& target,
                                               Index batch_entries, MatrixRef<Scalar> gradient) {
  detail::require_loss_arguments<Scalar>("flow_matching_loss_and_gradient", prediction, target);
  detail::require_shape("flow_matching_loss_and_gradient: gradient", gradient, prediction.rows(),
                        prediction.cols());
  if (batch_entries < prediction.size()) {
    detail::reject_argument(
        "flow_matching_partial_loss_and_gradient: batch_entries", detail::is_value(batch_entries),
        "at least " + detail::to_text(prediction.size()) + " (the block's entries)");
  }
  gradient = (Scalar(2) / Scalar(batch_entries)) * (prediction - target);
  return (prediction - target).squaredNorm();
}

/// L as flow_matching_loss, and ∂L/∂prediction = 2·(prediction − target)/(N·d) into
/// @p gradient (same shape). Returns L.
/// @throws std::invalid_argument as flow_matching_loss, or if gradient has another shape.
template <class Scalar>
Scalar flow_matching_loss_and_gradient(const ConstMatrixRef<Scalar>& prediction,
                                       const ConstMatrixRef<Scalar>& target,
                                       MatrixRef<Scalar> gradient) {
  return flow_matching_partial_loss_and_gradient<Scalar>(prediction, target, prediction.size(),
                                                         gradient) /
         Scalar(prediction.size());
}

/// For the @p count columns of @p batch from column @p first: S_c, the sum of squared errors
/// of @p model (conditional if batch.cond is nonempty) over them, and the gradient of
/// S_c/(N·d) (N·d the entries of the whole batch) with respect to every weight and bias,
/// written into @p gradient (overwritten). @p prediction and @p output_gradient are d×count
/// buffers for u_θ and ∂L/∂u_θ of the block; @p workspace holds the forward pass; none of them
/// may be shared with another thread. Allocates nothing once the buffers are sized.
/// @throws std::invalid_argument for shapes that do not fit the model or non-finite entries.
template <class Scalar>
Scalar mlp_flow_matching_partial_loss(const Mlp<Scalar>& model, MlpWorkspace<Scalar>& workspace,
                                      const FlowMatchingBatch<Scalar>& batch, Index first,
                                      Index count,
                                      std::type_identity_t<MatrixRef<Scalar>> prediction,
                                      std::type_identity_t<MatrixRef<Scalar>> output_gradient,
                                      MlpGradient<Scalar>& gradient) {
  detail::require_shape("mlp_flow_matching_loss: batch.u_t", batch.u_t, batch.x_t.rows(),
                        batch.x_t.cols());
  detail::require_shape("mlp_flow_matching_loss: batch.t", batch.t, batch.x_t.cols(), 1);
  if (batch.cond.size() != 0) {
    detail::require_shape("mlp_flow_matching_loss: batch.cond", batch.cond, model.cond_dim(),
                          batch.x_t.cols());
  }
  if (first < 0 || count < 1 || first + count > batch.x_t.cols()) {
    detail::reject_argument(
        "mlp_flow_matching_partial_loss: columns",
        "are " + detail::to_text(first) + " to " + detail::to_text(first + count - 1),
        "within 0 to " + detail::to_text(batch.x_t.cols() - 1));
  }
  const auto times = batch.t.segment(first, count);
  const auto points = batch.x_t.middleCols(first, count);
  if (batch.cond.size() == 0) {
    model.forward(workspace, times, points, prediction);
  } else {
    model.forward(workspace, times, points, batch.cond.middleCols(first, count), prediction);
  }
  const Scalar squared_error = flow_matching_partial_loss_and_gradient<Scalar>(
      prediction, batch.u_t.middleCols(first, count), batch.x_t.size(), output_gradient);
  model.backward(workspace, output_gradient, gradient);
  return squared_error;
}

/// The loss of @p model on @p batch (conditional if batch.cond is nonempty) and its gradient
/// with respect to every weight and bias, written into @p gradient (overwritten). Returns L.
/// @p workspace holds the forward pass; it must not be shared with another thread.
/// @throws std::invalid_argument for shapes that do not fit the model or non-finite entries.
template <class Scalar>
Scalar mlp_flow_matching_loss(const Mlp<Scalar>& model, MlpWorkspace<Scalar>& workspace,
                              const FlowMatchingBatch<Scalar>& batch,
                              MlpGradient<Scalar>& gradient) {
  Matrix<Scalar> prediction(model.dim(), batch.x_t.cols());
  Matrix<Scalar> output_gradient(prediction.rows(), prediction.cols());
  return mlp_flow_matching_partial_loss(model, workspace, batch, 0, batch.x_t.cols(), prediction,
                                        output_gradient, gradient) /
         Scalar(batch.x_t.size());
}

}  // namespace flowmatch
