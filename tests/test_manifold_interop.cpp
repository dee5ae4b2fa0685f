// Interoperability on a manifold: a velocity network trained on S² by PyTorch with the
// Riemannian flow-matching loss (tests/interop/make_manifold_fixture.py wrote
// tests/data/sphere_torch/), loaded here and made a field on the sphere by TangentField, must
// reproduce PyTorch's float64 tangent velocities and its projected Euler and RK4 solves.
#include <catch2/catch.hpp>

#include <limits>
#include <string>

#include "flowmatch/core/types.hpp"
#include "flowmatch/io/mlp_safetensors.hpp"
#include "flowmatch/io/npy.hpp"
#include "flowmatch/io/safetensors.hpp"
#include "flowmatch/manifold/integrate.hpp"
#include "flowmatch/manifold/sphere.hpp"
#include "flowmatch/manifold/tangent_field.hpp"
#include "flowmatch/nn/mlp.hpp"

namespace test_manifold_interop {

namespace {

using flowmatch::Index;
using flowmatch::Matrix;

const std::string sphere_torch = std::string(FLOWMATCH_TEST_DATA_DIR) + "/sphere_torch/";

using SphereField = flowmatch::TangentField<flowmatch::Sphere<double>, flowmatch::Mlp<double>>;

SphereField load_sphere_field() {
  return SphereField(flowmatch::Sphere<double>(3),
                     flowmatch::io::load_mlp<double>(sphere_torch + "model.safetensors"));
}

double largest_difference(const Matrix<double>& a, const Matrix<double>& b) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  return (a - b).cwiseAbs().maxCoeff();
}

// max over the columns of ||x| − 1|.
double largest_deviation_from_sphere(const Matrix<double>& points) {
  return (points.colwise().norm().array() - 1.0).abs().maxCoeff();
}

flowmatch::SolveResult<double> solve(const SphereField& field, const Matrix<double>& x0,
                                     flowmatch::ManifoldMethod method, double step_size,
                                     flowmatch::ManifoldStepping stepping) {
  flowmatch::ManifoldSolverOptions<double> options;
  options.method = method;
  options.stepping = stepping;
  options.step_size = step_size;
  return flowmatch::integrate_on_manifold(field.manifold(), field, x0, {0.0, 1.0}, options);
}

}  // namespace

TEST_CASE("a PyTorch model trained on S² records its layout and manifold", "[interop][manifold]") {
  const auto file = flowmatch::io::read_safetensors(sphere_torch + "model.safetensors");
  CHECK(file.metadata.at("manifold") == "sphere");
  const auto model = flowmatch::io::load_mlp<double>(file);
  CHECK(model.dim() == 3);
  CHECK(model.cond_dim() == 0);
  CHECK(model.layer_count() == 3);
}

TEST_CASE("the tangent-projected velocity of a PyTorch model equals PyTorch's",
          "[interop][manifold]") {
  const SphereField field = load_sphere_field();
  const auto points = flowmatch::io::load_npy_batch<double>(sphere_torch + "points.npy");
  const auto times = flowmatch::io::load_npy_vector<double>(sphere_torch + "times.npy");
  const auto expected = flowmatch::io::load_npy_batch<double>(sphere_torch + "velocity.npy");
  REQUIRE(points.cols() == times.size());
  Matrix<double> velocity(3, points.cols());
  for (Index n = 0; n < points.cols(); ++n) {
    Matrix<double> out(3, 1);
    field(times(n), points.col(n), out);
    velocity.col(n) = out;
    // Tangent at its point, to rounding.
    CHECK(std::abs(points.col(n).dot(out.col(0))) < 1e-15 * (1.0 + out.norm()));
  }
  // One evaluation of the same float64 network on both sides: the sums of 32 products per
  // layer are only ordered differently, a few units of 1e-16 relative to the velocities' size.
  const double scale = expected.cwiseAbs().maxCoeff();
  REQUIRE(scale > 0.1);
  CHECK(largest_difference(velocity, expected) <= 1e-12 * scale);
}

TEST_CASE("projected Euler and RK4 on S² reproduce PyTorch's solves of the same model",
          "[interop][manifold][solver]") {
  using flowmatch::ManifoldMethod;
  using flowmatch::ManifoldStepping;
  const SphereField field = load_sphere_field();
  const auto x0 = flowmatch::io::load_npy_batch<double>(sphere_torch + "x0.npy");
  const auto euler = flowmatch::io::load_npy_batch<double>(sphere_torch + "euler_h0.05.npy");
  const auto rk4 = flowmatch::io::load_npy_batch<double>(sphere_torch + "rk4_h0.1.npy");
  REQUIRE(largest_deviation_from_sphere(x0) < 1e-15);

  const auto euler_solve =
      solve(field, x0, ManifoldMethod::euler, 0.05, ManifoldStepping::projection);
  const auto rk4_solve = solve(field, x0, ManifoldMethod::rk4, 0.1, ManifoldStepping::projection);
  CHECK(euler_solve.stats.accepted == 20);
  CHECK(euler_solve.stats.nfe == 20);
  CHECK(rk4_solve.stats.accepted == 10);
  CHECK(rk4_solve.stats.nfe == 40);

  // Each solve is 20 (Euler) or 40 (RK4) evaluations of the network and as many projections,
  // every one of which differs between the two sides by the order of its sums, ~1e-15 on O(1)
  // values. Over unit time these differences grow at most by e^L, L the network's Lipschitz
  // constant in x (a few units for a briefly trained 32-wide network), so the solves agree to
  // 40·1e-15·e^L ≲ 1e-11; 1e-10 keeps a margin and is still 1e5 times below the gap between
  // the two methods, checked below.
  const double tolerance = 1e-10;
  CHECK(largest_difference(euler_solve.state, euler) <= tolerance);
  CHECK(largest_difference(rk4_solve.state, rk4) <= tolerance);

  // The points stay unit vectors to rounding: each step ends with x/|x|.
  const double unit = 4 * std::numeric_limits<double>::epsilon();
  CHECK(largest_deviation_from_sphere(euler_solve.state) <= unit);
  CHECK(largest_deviation_from_sphere(rk4_solve.state) <= unit);
  CHECK(largest_deviation_from_sphere(euler) <= unit);
  CHECK(largest_deviation_from_sphere(rk4) <= unit);

  // The comparison tells methods and steppings apart: the flow moves the points (the model has
  // learnt something), Euler is far from RK4, and exponential stepping, the same method by
  // another step map, differs from the projection stepping PyTorch reproduced.
  CHECK(largest_difference(x0, rk4) > 0.1);
  CHECK(largest_difference(euler, rk4) > 1e-3);
  const auto exponential =
      solve(field, x0, ManifoldMethod::euler, 0.05, ManifoldStepping::exponential);
  CHECK(largest_difference(exponential.state, euler) > 1e3 * tolerance);
}

}  // namespace test_manifold_interop
