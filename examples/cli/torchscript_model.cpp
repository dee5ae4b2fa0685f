// The TorchScript models of the tool (see torchscript_model.hpp): the only file of the tool that
// includes LibTorch's headers, built as the module the tool loads on its first TorchScript model.
#include "torchscript_model.hpp"

#include <functional>
#include <memory>
#include <stdexcept>

#include "flowmatch/guidance/classifier_free.hpp"
#include "flowmatch/interop/torch.hpp"
#include "flowmatch/likelihood/conditioned_field.hpp"

namespace flowmatch_cli {

namespace {

template <class Scalar>
flowmatch::AnyField<Scalar> make_torchscript_field(
    const std::string& path, const std::vector<std::int64_t>& shape, TorchScriptConditions kind,
    const std::optional<flowmatch::Matrix<Scalar>>& conditions,
    const std::optional<flowmatch::Vector<Scalar>>& guidance_weights,
    std::optional<std::int64_t> null_label, int threads) {
  flowmatch::set_torch_threads(threads);
  if (kind == TorchScriptConditions::none) {
    const auto field = std::make_shared<const flowmatch::TorchScriptField<Scalar>>(path, shape);
    return flowmatch::AnyField<Scalar>(std::cref(*field), field);
  }
  const flowmatch::TorchCondition condition =
      kind == TorchScriptConditions::labels
          ? flowmatch::TorchCondition::labels()
          : flowmatch::TorchCondition::vectors(conditions->rows());
  const auto field = std::make_shared<const flowmatch::ConditionalTorchScriptField<Scalar>>(
      path, shape, condition);
  if (!guidance_weights) {
    return flowmatch::AnyField<Scalar>(flowmatch::ConditionedField(std::cref(*field), *conditions),
                                       field);
  }
  flowmatch::GuidanceOptions<Scalar> guidance;
  if (kind == TorchScriptConditions::labels) {
    guidance.null_condition =
        flowmatch::Vector<Scalar>::Constant(1, static_cast<Scalar>(*null_label));
  }
  return flowmatch::AnyField<Scalar>(
      flowmatch::classifier_free_guidance(std::cref(*field), *conditions, *guidance_weights,
                                          guidance),
      field);
}

}  // namespace

}  // namespace flowmatch_cli

/// The module's entry point (torchscript_model.hpp).
extern "C" const flowmatch_cli::TorchScriptFactories* flowmatch_cli_torchscript_factories() {
  static const flowmatch_cli::TorchScriptFactories factories{
      &flowmatch_cli::make_torchscript_field<float>,
      &flowmatch_cli::make_torchscript_field<double>};
  return &factories;
}
