// Uses the optional LibTorch component from outside the project: a TorchScript model saved by
// PyTorch as a velocity field, whose velocity must equal the one PyTorch computed.
// Arguments: model.pt x.npy velocity.npy (the model's velocity at t = 0.3 of the samples x, as
// [N, 3] arrays).
#include <flowmatch/field/velocity_field.hpp>
#include <flowmatch/interop/torch.hpp>
#include <flowmatch/io/npy.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fputs("usage: torch_consumer model.pt x.npy velocity.npy\n", stderr);
    return 2;
  }
  const flowmatch::TorchScriptField<float> field(argv[1], {3});
  const flowmatch::Matrix<float> x = flowmatch::io::load_npy_batch<float>(argv[2]);
  const flowmatch::Matrix<float> expected = flowmatch::io::load_npy_batch<float>(argv[3]);
  const flowmatch::Matrix<float> velocity = flowmatch::evaluate_velocity(field, 0.3f, x);
  const bool ok = velocity.isApprox(expected, 1e-5f);
  std::puts(ok ? "flowmatch torch consumer ok" : "flowmatch torch consumer FAILED");
  return ok ? 0 : 1;
}
