// pytorch_interop: loads a velocity network saved from PyTorch as safetensors, carries noise read
// from a .npy file from t = 0 to t = 1 with a fixed-step method, and writes the samples as .npy.
// examples/pytorch_interop.py trains such a network with PyTorch, samples the same noise there,
// runs this program and checks that both give the same points.
//
// Usage: pytorch_interop MODEL.safetensors NOISE.npy OUT.npy [METHOD] [STEP] [REFERENCE.npy]
//   NOISE.npy   [N, d] float64 or float32, one sample per row
//   METHOD      euler, midpoint, heun2, heun3, rk4 or rk38 (default midpoint)
//   STEP        the step size h: ceil(1/h) equal steps (default 0.1)
//   REFERENCE   samples to compare with: prints the largest absolute difference and fails
//               above 1e-10
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>

#include "flowmatch/io/mlp_safetensors.hpp"
#include "flowmatch/io/npy.hpp"
#include "flowmatch/solver/integrate.hpp"
#include "flowmatch/solver/method.hpp"

int main(int argc, char** argv) {
  if (argc < 4 || argc > 7) {
    std::fprintf(stderr,
                 "usage: pytorch_interop MODEL.safetensors NOISE.npy OUT.npy [METHOD] [STEP] "
                 "[REFERENCE.npy]\n");
    return 2;
  }
  try {
    const flowmatch::Mlp<double> model = flowmatch::io::load_mlp<double>(argv[1]);
    const flowmatch::Matrix<double> noise = flowmatch::io::load_npy_batch<double>(argv[2]);
    if (noise.rows() != model.dim()) {
      throw std::invalid_argument(std::string(argv[2]) + " has " + std::to_string(noise.rows()) +
                                  " values per sample, the model expects " +
                                  std::to_string(model.dim()));
    }
    flowmatch::SolverOptions<double> options;
    options.method = flowmatch::method_from_name(argc > 4 ? argv[4] : "midpoint");
    if (!flowmatch::is_adaptive(options.method))
      options.step_size = argc > 5 ? std::stod(argv[5]) : 0.1;
    const auto result = flowmatch::sample(model, noise, options);
    flowmatch::io::save_npy(argv[3], result.state);
    std::printf("%s: %lld samples in %lld evaluations of the network, written to %s\n",
                flowmatch::method_name(options.method).data(), static_cast<long long>(noise.cols()),
                static_cast<long long>(result.stats.nfe), argv[3]);
    if (argc > 6) {
      // Both sides evaluate the same weights in double: only the order of the sums differs,
      // which moves O(1) results by ~1e-15 per step, far below 1e-10 (and float rounding, 1e-7).
      const flowmatch::Matrix<double> reference = flowmatch::io::load_npy_batch<double>(argv[6]);
      if (reference.rows() != result.state.rows() || reference.cols() != result.state.cols()) {
        throw std::invalid_argument(std::string(argv[6]) + " does not have the samples' shape");
      }
      const double difference = (reference - result.state).cwiseAbs().maxCoeff();
      std::printf("largest absolute difference from %s: %.3e\n", argv[6], difference);
      return difference <= 1e-10 ? 0 : 1;
    }
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "pytorch_interop: %s\n", error.what());
    return 1;
  }
}
