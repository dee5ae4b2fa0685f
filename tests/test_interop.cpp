// Interoperability with PyTorch: a network saved by PyTorch, sampled here with the same methods
// PyTorch used, must reproduce PyTorch's trajectories' endpoints (tests/data/tiny2d/README.md of
// the shared fixtures: 64 noise points integrated from t = 0 to 1).
#include <catch2/catch.hpp>

#include <string>

#include "flowmatch/io/mlp_safetensors.hpp"
#include "flowmatch/io/npy.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/solver/integrate.hpp"

namespace test_interop {

namespace {

const std::string tiny2d = std::string(FLOWMATCH_TEST_DATA_DIR) + "/tiny2d/";

double largest_difference(const flowmatch::Matrix<double>& a, const flowmatch::Matrix<double>& b) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  return (a - b).cwiseAbs().maxCoeff();
}

}  // namespace

TEST_CASE("midpoint sampling of a PyTorch model reproduces PyTorch's samples", "[interop]") {
  const auto model = flowmatch::io::load_mlp<double>(tiny2d + "model.safetensors");
  const auto noise = flowmatch::io::load_npy_batch<double>(tiny2d + "x0.npy");
  const auto expected = flowmatch::io::load_npy_batch<double>(tiny2d + "samples_midpoint_h0.1.npy");
  flowmatch::SolverOptions<double> options;
  options.method = flowmatch::Method::midpoint;
  options.step_size = 0.1;
  const auto result = flowmatch::sample(model, noise, options);
  CHECK(result.stats.accepted == 10);
  CHECK(result.stats.nfe == 20);
  // The same ten steps in float64 on both sides: only rounding differs.
  CHECK(largest_difference(result.state, expected) < 1e-12);
}

TEST_CASE("adaptive sampling of a PyTorch model reaches PyTorch's reference flow", "[interop]") {
  const auto model = flowmatch::io::load_mlp<double>(tiny2d + "model.safetensors");
  const auto noise = flowmatch::io::load_npy_batch<double>(tiny2d + "x0.npy");
  const auto reference =
      flowmatch::io::load_npy_batch<double>(tiny2d + "samples_dopri5_tol1e-10.npy");
  for (const auto method :
       {flowmatch::Method::dopri5, flowmatch::Method::tsit5, flowmatch::Method::rkf78}) {
    flowmatch::SolverOptions<double> options;
    options.method = method;
    options.rtol = options.atol = 1e-10;
    const auto result = flowmatch::sample(model, noise, options);
    // Both are within about the tolerance of the exact flow (a smooth field over unit time).
    CHECK(largest_difference(result.state, reference) < 1e-8);
  }
  // The midpoint samples are farther from the exact flow: the comparison can tell them apart.
  const auto midpoint = flowmatch::io::load_npy_batch<double>(tiny2d + "samples_midpoint_h0.1.npy");
  CHECK(largest_difference(midpoint, reference) > 1e-6);
}

TEST_CASE("a saved model has the layout PyTorch wrote, so PyTorch can load it back", "[interop]") {
  const auto original = flowmatch::io::read_safetensors(tiny2d + "model.safetensors");
  const auto model = flowmatch::io::load_mlp<double>(original);
  const auto saved = flowmatch::io::mlp_to_safetensors(model, flowmatch::io::DType::F32);
  REQUIRE(saved.tensors.size() == original.tensors.size());
  for (const auto& [name, tensor] : original.tensors) {
    INFO("tensor " << name);
    REQUIRE(saved.tensors.count(name) == 1);
    const auto& written = saved.tensors.at(name);
    CHECK(written.dtype == tensor.dtype);
    CHECK(written.shape == tensor.shape);
    CHECK(written.values == tensor.values);  // F32 values survive the double round trip exactly
  }
  for (const char* key : {"activation", "input_order"}) {
    INFO("metadata " << key);
    CHECK(saved.metadata.at(key) == original.metadata.at(key));
  }
}

}  // namespace test_interop
