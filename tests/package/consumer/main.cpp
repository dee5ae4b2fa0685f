// Uses the flowmatch headers from outside the project: the scheduler and field concepts, and a
// safetensors round trip in memory through flowmatch::safetensors.
#include <flowmatch/field/velocity_field.hpp>
#include <flowmatch/io/safetensors.hpp>
#include <flowmatch/scheduler/condot.hpp>

#include <cstdio>

int main() {
  static_assert(flowmatch::ConvexScheduler<flowmatch::CondOT<double>>);
  const flowmatch::CondOT<double> scheduler;
  auto field = [](double, const auto& x) { return -x; };
  flowmatch::Matrix<double> x = flowmatch::Matrix<double>::Ones(2, 3);
  const flowmatch::Matrix<double> velocity = flowmatch::evaluate_velocity<double>(field, 0.5, x);

  flowmatch::io::SafeTensors file;
  file.tensors.emplace("x", flowmatch::io::make_tensor(x, flowmatch::io::DType::F64));
  const auto bytes = flowmatch::io::serialize_safetensors(file);
  const auto parsed = flowmatch::io::parse_safetensors(bytes);
  const flowmatch::Matrix<double> read =
      flowmatch::io::tensor_matrix<double>(parsed.tensors.at("x"));

  const bool ok = velocity.isApprox(-x) && scheduler.alpha(0.25) == 0.25 && read == x;
  std::puts(ok ? "flowmatch consumer ok" : "flowmatch consumer FAILED");
  return ok ? 0 : 1;
}
