// Tests of the MLP velocity field: activations, forward pass against a plain per-sample
// reference, exact derivatives against central finite differences, and the float instantiation.

// Eigen's assertions throw in this test in every build type, among them its check that no heap
// allocation happens while Eigen::internal::set_is_malloc_allowed(false) is in force.
#include <stdexcept>
#include <string>
[[noreturn]] inline void fail_eigen_assertion(const char* condition) {
  throw std::logic_error(std::string("Eigen assertion failed: ") + condition);
}
#define EIGEN_RUNTIME_NO_MALLOC
#define eigen_assert(condition) \
  ((condition) ? static_cast<void>(0) : fail_eigen_assertion(#condition))

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <limits>
#include <numbers>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <catch2/catch.hpp>

#include "flowmatch/autodiff/field_derivatives.hpp"
#include "flowmatch/field/velocity_field.hpp"
#include "flowmatch/io/mlp_safetensors.hpp"
#include "flowmatch/io/npy.hpp"
#include "flowmatch/nn/activation.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/train/parameters.hpp"

namespace {

using Catch::Matchers::WithinAbs;
using Catch::Matchers::WithinRel;
using flowmatch::Activation;
using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::Mlp;
using flowmatch::MlpConfig;
using flowmatch::MlpGradient;
using flowmatch::MlpWorkspace;
using flowmatch::TimeEmbedding;
using flowmatch::Vector;

// Central finite-difference step: truncation error ~h²·f'''/6 ≈ 1e-10, rounding ≈ 1e-11, so
// derivatives of O(1) quantities agree with finite differences to well within 1e-7.
constexpr double fd_step = 1e-5;
constexpr double fd_tolerance = 1e-7;

// The activations written plainly from their definitions (PyTorch's default parameters).
double reference_activation(Activation activation, double z) {
  const double selu_lambda = 1.0507009873554804934193349852946;
  const double selu_alpha = 1.6732632423543772848170429916717;
  switch (activation) {
    case Activation::silu:
      return z / (1.0 + std::exp(-z));
    case Activation::relu:
      return std::max(z, 0.0);
    case Activation::tanh:
      return std::tanh(z);
    case Activation::gelu_tanh:
      return 0.5 * z *
             (1.0 + std::tanh(std::sqrt(2.0 / std::numbers::pi) * (z + 0.044715 * z * z * z)));
    case Activation::gelu:
      return 0.5 * z * (1.0 + std::erf(z / std::sqrt(2.0)));
    case Activation::selu:
      return selu_lambda * (z > 0 ? z : selu_alpha * (std::exp(z) - 1.0));
    case Activation::softplus:
      return z > 20 ? z : std::log(1.0 + std::exp(z));
    case Activation::elu:
      return z > 0 ? z : std::exp(z) - 1.0;
    case Activation::leaky_relu:
      return z > 0 ? z : 0.01 * z;
  }
  throw std::logic_error("unreachable");
}

// [t] or [sin(2π·2^k·t) for k < F, cos(2π·2^k·t) for k < F].
Vector<double> reference_time_features(Index frequencies, double t) {
  if (frequencies == 0) return Vector<double>::Constant(1, t);
  Vector<double> features(2 * frequencies);
  for (Index k = 0; k < frequencies; ++k) {
    const double angle = 2.0 * std::numbers::pi * std::pow(2.0, static_cast<double>(k)) * t;
    features(k) = std::sin(angle);
    features(frequencies + k) = std::cos(angle);
  }
  return features;
}

// One sample through the network: concatenated input [x, φ(t), c], then W·h + b and σ.
Vector<double> reference_velocity(const Mlp<double>& mlp, double t, const Vector<double>& x,
                                  const Vector<double>& cond) {
  const Vector<double> time = reference_time_features(mlp.config().time_embedding.frequencies, t);
  Vector<double> h(x.size() + time.size() + cond.size());
  Index next = 0;
  for (const Vector<double>* part : {&x, &time, &cond}) {
    for (Index i = 0; i < part->size(); ++i) h(next++) = (*part)(i);
  }
  for (Index layer = 0; layer < mlp.layer_count(); ++layer) {
    Vector<double> z = mlp.weight(layer) * h + mlp.bias(layer);
    if (layer + 1 < mlp.layer_count()) {
      for (Index j = 0; j < z.size(); ++j) {
        z(j) = reference_activation(mlp.config().activation, z(j));
      }
    }
    h = z;
  }
  return h;
}

// The network shapes every derivative test runs on: linear, one hidden layer (the special
// divergence formula), deeper; unconditional and conditional; raw and sinusoidal time.
std::vector<MlpConfig> test_configs(Activation activation) {
  return {
      MlpConfig{3, 0, {}, activation, TimeEmbedding{0}},
      MlpConfig{2, 2, {5}, activation, TimeEmbedding{3}},
      MlpConfig{3, 0, {6, 5}, activation, TimeEmbedding{0}},
      MlpConfig{2, 1, {4, 3, 5}, activation, TimeEmbedding{2}},
  };
}

Matrix<double> random_matrix(Index rows, Index cols, std::mt19937_64& generator,
                             double scale = 1.5) {
  std::normal_distribution<double> normal(0.0, scale);
  Matrix<double> matrix(rows, cols);
  for (double& value : matrix.reshaped()) value = normal(generator);
  return matrix;
}

// A network and a batch at which to evaluate it.
struct Problem {
  Mlp<double> mlp;
  double t;
  Matrix<double> x;
  Matrix<double> cond;  // cond_dim×N (0×N when unconditional)
};

Problem make_problem(const MlpConfig& config, std::uint64_t seed, Index batch = 4) {
  std::mt19937_64 generator(seed);
  Mlp<double> mlp(config, generator);
  // Biases of O(1) so that the pre-activations fall on both sides of every kink.
  for (Index layer = 0; layer < mlp.layer_count(); ++layer) {
    mlp.set_bias(layer, random_matrix(mlp.bias(layer).size(), 1, generator, 0.8));
  }
  return Problem{std::move(mlp), 0.37, random_matrix(config.dim, batch, generator),
                 random_matrix(config.cond_dim, batch, generator)};
}

Matrix<double> velocity(const Problem& problem, const Matrix<double>& x) {
  Matrix<double> out(problem.mlp.dim(), x.cols());
  if (problem.mlp.cond_dim() > 0) {
    problem.mlp(problem.t, x, problem.cond, out);
  } else {
    problem.mlp(problem.t, x, out);
  }
  return out;
}

Matrix<double> jvp(const Problem& problem, const Matrix<double>& tangent) {
  Matrix<double> out(problem.mlp.dim(), problem.x.cols());
  if (problem.mlp.cond_dim() > 0) {
    problem.mlp.jvp(problem.t, problem.x, problem.cond, tangent, out);
  } else {
    problem.mlp.jvp(problem.t, problem.x, tangent, out);
  }
  return out;
}

Matrix<double> vjp(const Problem& problem, const Matrix<double>& cotangent) {
  Matrix<double> out(problem.mlp.dim(), problem.x.cols());
  if (problem.mlp.cond_dim() > 0) {
    problem.mlp.vjp(problem.t, problem.x, problem.cond, cotangent, out);
  } else {
    problem.mlp.vjp(problem.t, problem.x, cotangent, out);
  }
  return out;
}

Vector<double> divergence(const Problem& problem) {
  Vector<double> out(problem.x.cols());
  if (problem.mlp.cond_dim() > 0) {
    problem.mlp.divergence(problem.t, problem.x, problem.cond, out);
  } else {
    problem.mlp.divergence(problem.t, problem.x, out);
  }
  return out;
}

// (u(x + h·v) − u(x − h·v)) / 2h: the directional derivative of every sample at once.
Matrix<double> fd_directional(const Problem& problem, const Matrix<double>& direction) {
  return (velocity(problem, problem.x + fd_step * direction) -
          velocity(problem, problem.x - fd_step * direction)) /
         (2 * fd_step);
}

double max_abs_difference(const Matrix<double>& actual, const Matrix<double>& expected) {
  REQUIRE(actual.rows() == expected.rows());
  REQUIRE(actual.cols() == expected.cols());
  return (actual - expected).cwiseAbs().maxCoeff();
}

std::string describe(const MlpConfig& config) {
  std::string text = std::string(flowmatch::activation_name(config.activation)) +
                     " dim=" + std::to_string(config.dim) +
                     " cond_dim=" + std::to_string(config.cond_dim) + " hidden=[";
  for (const Index width : config.hidden) text += std::to_string(width) + " ";
  return text + "] frequencies=" + std::to_string(config.time_embedding.frequencies);
}

}  // namespace

TEST_CASE("activation names round trip and unknown names throw", "[activation]") {
  for (const Activation activation : flowmatch::all_activations) {
    CHECK(flowmatch::activation_from_name(flowmatch::activation_name(activation)) == activation);
  }
  CHECK(flowmatch::activation_name(Activation::gelu_tanh) == "gelu_tanh");
  CHECK(flowmatch::activation_name(Activation::leaky_relu) == "leaky_relu");
  CHECK_THROWS_AS(flowmatch::activation_from_name("SiLU"), std::invalid_argument);
  CHECK_THROWS_WITH(flowmatch::activation_from_name("swish"), Catch::Contains("swish"));
}

TEST_CASE("activations match their definitions", "[activation]") {
  const std::vector<double> points = {-30, -5, -1.3, -0.2, 0.2, 0.7, 3, 19.5, 20.5, 35};
  for (const Activation activation : flowmatch::all_activations) {
    for (const double z : points) {
      INFO(flowmatch::activation_name(activation) << " at z = " << z);
      const double expected = reference_activation(activation, z);
      // The reference loses relative accuracy where 1 + erf or 1 + tanh cancel; allow 1e-14
      // absolute there.
      CHECK_THAT(flowmatch::activation_value(activation, z),
                 WithinRel(expected, 1e-13) || WithinAbs(expected, 1e-14));
    }
  }
}

TEST_CASE("activation derivatives match central finite differences", "[activation]") {
  // Points at least 1e-3 from every kink (0, and 20 for softplus), so the stencil never
  // crosses one; ±1e-3 probes both sides of the kinks.
  const std::vector<double> points = {-30, -5, -1.3, -0.2,   -1e-3,  1e-3, 0.2,
                                      0.7, 3,  19.5, 19.999, 20.001, 20.5, 35};
  for (const Activation activation : flowmatch::all_activations) {
    for (const double z : points) {
      INFO(flowmatch::activation_name(activation) << " at z = " << z);
      const double fd = (flowmatch::activation_value(activation, z + fd_step) -
                         flowmatch::activation_value(activation, z - fd_step)) /
                        (2 * fd_step);
      CHECK_THAT(flowmatch::activation_derivative(activation, z), WithinAbs(fd, 1e-8));
    }
  }
}

TEST_CASE("activation derivatives at a kink take the branch of the left side", "[activation]") {
  const double selu_lambda = 1.0507009873554804934193349852946;
  const double selu_alpha = 1.6732632423543772848170429916717;
  CHECK(flowmatch::activation_derivative(Activation::relu, 0.0) == 0.0);
  CHECK(flowmatch::activation_derivative(Activation::leaky_relu, 0.0) == 0.01);
  CHECK(flowmatch::activation_derivative(Activation::elu, 0.0) == 1.0);
  CHECK_THAT(flowmatch::activation_derivative(Activation::selu, 0.0),
             WithinRel(selu_lambda * selu_alpha, 1e-15));
  // softplus is log(1 + e^z) up to 20 and z above: its slope at 20 is the sigmoid's.
  CHECK_THAT(flowmatch::activation_derivative(Activation::softplus, 20.0),
             WithinRel(1.0 / (1.0 + std::exp(-20.0)), 1e-15));
  CHECK(flowmatch::activation_derivative(Activation::softplus, 20.0 + 1e-9) == 1.0);
  CHECK(flowmatch::activation_value(Activation::softplus, 21.0) == 21.0);
}

TEST_CASE("activations stay finite and exact for large arguments", "[activation]") {
  for (const Activation activation : flowmatch::all_activations) {
    for (const double z : {-1e4, -800.0, 800.0, 1e4}) {
      INFO(flowmatch::activation_name(activation) << " at z = " << z);
      CHECK(std::isfinite(flowmatch::activation_value(activation, z)));
      CHECK(std::isfinite(flowmatch::activation_derivative(activation, z)));
    }
    for (const float z : {-200.0f, 200.0f}) {
      INFO(flowmatch::activation_name(activation) << " in float at z = " << z);
      CHECK(std::isfinite(flowmatch::activation_value(activation, z)));
      CHECK(std::isfinite(flowmatch::activation_derivative(activation, z)));
    }
  }
  // Limits: e^{-800} underflows, so the tails are exact in double.
  CHECK(flowmatch::activation_value(Activation::silu, 800.0) == 800.0);
  CHECK(flowmatch::activation_value(Activation::silu, -800.0) == 0.0);
  CHECK(flowmatch::activation_derivative(Activation::silu, 800.0) == 1.0);
  CHECK(flowmatch::activation_value(Activation::softplus, -800.0) == 0.0);
  CHECK(flowmatch::activation_value(Activation::tanh, -800.0) == -1.0);
  CHECK(flowmatch::activation_derivative(Activation::tanh, 800.0) == 0.0);
  CHECK(flowmatch::activation_value(Activation::gelu, -800.0) == 0.0);
  CHECK(flowmatch::activation_value(Activation::gelu_tanh, 800.0) == 800.0);
  // Small arguments keep full relative accuracy: tanh z = z − z³/3 + …, silu z = z/2 + z²/4.
  CHECK_THAT(flowmatch::activation_value(Activation::tanh, 1e-10), WithinRel(1e-10, 1e-15));
  CHECK_THAT(flowmatch::activation_value(Activation::silu, 1e-10),
             WithinRel(0.5e-10 + 0.25e-20, 1e-15));
  CHECK_THAT(flowmatch::activation_value(Activation::softplus, -50.0),
             WithinRel(std::exp(-50.0), 1e-14));
}

namespace {

// The largest errors of SiLU and its derivatives, in units in the last place of Scalar, over
// z = lowest, lowest + step, …, ≤ highest, against the long-double reference
// s = 1/(1 + e⁻ᶻ), 1 − s = 1/(1 + eᶻ), σ = z·s, σ' = s + z·s(1 − s), σ'' = s(1 − s)(2 + z(1 − 2s)).
// σ is compared relatively, σ' and σ'' relative to the magnitudes of their terms, as the kernel's
// accuracy is stated (nn/activation.hpp).
template <class Scalar>
std::array<long double, 3> silu_errors_in_ulps(long double lowest, long double highest,
                                               long double step) {
  using Long = long double;
  const Long ulp = std::numeric_limits<Scalar>::epsilon();
  std::array<Long, 3> worst = {0, 0, 0};
  for (Long point = lowest; point <= highest; point += step) {
    const Scalar z = static_cast<Scalar>(point);
    const Long exact_z = z;
    const Long s = 1 / (1 + std::exp(-exact_z));
    const Long complement = 1 / (1 + std::exp(exact_z));
    const Long product = s * complement;
    const Long value = exact_z * s;
    const Long slope = s + exact_z * product;
    const Long curvature = product * (2 + exact_z * (complement - s));
    const Long slope_scale = s + std::fabs(exact_z) * product;
    const Long curvature_scale = product * (2 + std::fabs(exact_z) * std::fabs(complement - s));
    const Scalar kernel_value = flowmatch::activation_value(Activation::silu, z);
    const Scalar kernel_slope = flowmatch::activation_derivative(Activation::silu, z);
    const Scalar kernel_curvature = flowmatch::activation_second_derivative(Activation::silu, z);
    if (value != 0) {
      worst[0] = std::max(worst[0], std::fabs((kernel_value - value) / value) / ulp);
    }
    worst[1] = std::max(worst[1], std::fabs(kernel_slope - slope) / (slope_scale * ulp));
    worst[2] =
        std::max(worst[2], std::fabs(kernel_curvature - curvature) / (curvature_scale * ulp));
  }
  return worst;
}

}  // namespace

TEST_CASE("SiLU is within its stated accuracy of a long-double reference", "[activation]") {
  // The stated bounds: 2 units in the last place for σ, 3 for σ', 4 for σ'' (nn/activation.hpp),
  // down to where e^(−|z|) leaves the normal numbers (about −708 in double, −87 in float).
  const std::array<long double, 3> in_double = silu_errors_in_ulps<double>(-700, 700, 1.37e-3L);
  const std::array<long double, 3> in_float = silu_errors_in_ulps<float>(-86, 86, 1.7e-4L);
  for (const auto& [errors, type] :
       {std::pair{in_double, "double"}, std::pair{in_float, "float"}}) {
    INFO(type << ": sigma " << static_cast<double>(errors[0]) << ", sigma' "
              << static_cast<double>(errors[1]) << ", sigma'' " << static_cast<double>(errors[2])
              << " units in the last place");
    CHECK(errors[0] <= 2);
    CHECK(errors[1] <= 3);
    CHECK(errors[2] <= 4);
  }
  // Below the flush, the values are exact zeros; the sigmoid of large z is exactly 1.
  CHECK(flowmatch::activation_value(Activation::silu, -720.0) == 0.0);
  CHECK(flowmatch::activation_derivative(Activation::silu, -720.0) == 0.0);
  CHECK(flowmatch::activation_second_derivative(Activation::silu, -720.0) == 0.0);
  CHECK(flowmatch::activation_value(Activation::silu, -90.0f) == 0.0f);
}

TEST_CASE("time embeddings follow the documented formula", "[mlp]") {
  Vector<double> features(1);
  TimeEmbedding{0}.features(0.3, features);
  CHECK(features(0) == 0.3);
  for (const double t : {0.0, 0.3, 0.81, 1.0}) {
    const TimeEmbedding embedding{4};
    REQUIRE(embedding.feature_count() == 8);
    features.resize(8);
    embedding.features(t, features);
    CHECK(max_abs_difference(features, reference_time_features(4, t)) <= 1e-15);
  }
  CHECK_THROWS_AS(TimeEmbedding{-1}.validate(), std::invalid_argument);
  CHECK_THROWS_AS(TimeEmbedding{65}.validate(), std::invalid_argument);
}

TEST_CASE("an Mlp is a velocity field with an exact jvp and divergence", "[mlp]") {
  static_assert(flowmatch::InPlaceVelocityField<Mlp<double>, double>);
  static_assert(flowmatch::HasDivergence<Mlp<double>, double>);
  static_assert(flowmatch::HasJvp<Mlp<double>, double>);
  static_assert(flowmatch::InPlaceVelocityField<Mlp<float>, float>);
  static_assert(flowmatch::HasDivergence<Mlp<float>, float>);
  static_assert(flowmatch::HasJvp<Mlp<float>, float>);

  Problem problem = make_problem(MlpConfig{2, 0, {4}, Activation::tanh, {}}, 1);
  const Matrix<double> expected = velocity(problem, problem.x);
  const Matrix<double> through_concept =
      flowmatch::evaluate_velocity<double>(problem.mlp, problem.t, problem.x);
  CHECK(through_concept == expected);
}

// Columns in batches wide enough for the register-tiled products of every layer, with a last
// partial tile and SiLU's last partial packet: the batch reversed, and a sub-batch starting
// mid-tile, give each column the same bits as in the original batch (a column's result does
// not depend on where it sits among its neighbours). Two networks: d = 32, whose output layer
// is a whole tile high too, and d = 2, whose input layer is a shallow product and whose output
// layer is two dot-product rows. Layers of other heights go partly through Eigen's product,
// whose last N mod 4 columns may round differently.
template <class Scalar>
void check_columns_independent_of_position() {
  std::mt19937_64 generator(5);
  for (const Index dim : {Index(32), Index(2)}) {
    INFO("d = " << dim);
    const Mlp<Scalar> mlp(MlpConfig{dim, 0, {64, 64}, Activation::silu, {}}, generator);
    const Matrix<Scalar> x = Matrix<Scalar>::Random(dim, 45) * Scalar(2);
    const Scalar t = Scalar(0.3);
    const Matrix<Scalar> batch = flowmatch::evaluate_velocity<Scalar>(mlp, t, x);
    const Matrix<Scalar> reversed_x = x.rowwise().reverse();
    const Matrix<Scalar> reversed = flowmatch::evaluate_velocity<Scalar>(mlp, t, reversed_x);
    CHECK(Matrix<Scalar>(reversed.rowwise().reverse()) == batch);
    const Matrix<Scalar> middle_x = x.middleCols(7, 31);
    const Matrix<Scalar> middle = flowmatch::evaluate_velocity<Scalar>(mlp, t, middle_x);
    CHECK(middle == batch.middleCols(7, 31));
  }
}

TEST_CASE("an Mlp gives a column the same bits wherever it sits in a wide batch", "[mlp]") {
  check_columns_independent_of_position<float>();
  check_columns_independent_of_position<double>();
}

TEST_CASE("random initialisation follows nn.Linear and is reproducible", "[mlp]") {
  const MlpConfig config{3, 2, {16, 8}, Activation::silu, TimeEmbedding{2}};
  std::mt19937_64 generator(7);
  const Mlp<double> mlp(config, generator);
  std::mt19937_64 same_seed(7);
  const Mlp<double> again(config, same_seed);
  for (Index layer = 0; layer < mlp.layer_count(); ++layer) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(mlp.layer_input_size(layer)));
    CHECK(mlp.weight(layer).cwiseAbs().maxCoeff() <= bound);
    CHECK(mlp.bias(layer).cwiseAbs().maxCoeff() <= bound);
    // 2·bound wide: a uniform sample of this size spans most of it.
    CHECK(mlp.weight(layer).maxCoeff() - mlp.weight(layer).minCoeff() > bound);
    CHECK(mlp.weight(layer) == again.weight(layer));
    CHECK(mlp.bias(layer) == again.bias(layer));
  }
  const MlpGradient<double> zero = mlp.zero_gradient();
  REQUIRE(zero.weights.size() == 3);
  REQUIRE(zero.biases.size() == 3);
  for (Index layer = 0; layer < mlp.layer_count(); ++layer) {
    CHECK(zero.weights[layer].rows() == mlp.weight(layer).rows());
    CHECK(zero.weights[layer].cols() == mlp.weight(layer).cols());
    CHECK(zero.weights[layer].isZero(0.0));
    CHECK(zero.biases[layer].size() == mlp.bias(layer).size());
    CHECK(zero.biases[layer].isZero(0.0));
  }
  CHECK(mlp.layer_input_size(0) == 3 + 4 + 2);
  CHECK(mlp.layer_output_size(2) == 3);
  CHECK(Mlp<double>(config).weight(1).isZero(0.0));
}

TEST_CASE("the parameters are one vector and every layer a view into it", "[mlp]") {
  Problem problem = make_problem(MlpConfig{3, 1, {5, 4}, Activation::silu, {2}}, 50);
  Mlp<double>& mlp = problem.mlp;
  // The layout of train/parameters.hpp, [vec(W₀), b₀, vec(W₁), b₁, …], gathered layer by layer.
  REQUIRE(mlp.parameters().size() == flowmatch::parameter_count(mlp));
  CHECK(mlp.parameters() == flowmatch::gather_parameters(mlp));
  // The views share the vector's storage: a write through one shows in the other.
  mlp.parameters()(3) += 1;
  CHECK(mlp.weight(0)(3, 0) == mlp.parameters()(3));
  mlp.bias(2)(1) = 0.25;
  CHECK(mlp.parameters()(mlp.parameters().size() - 2) == 0.25);
  // Parameters written as one vector give the network whose layers hold them.
  std::mt19937_64 generator(51);
  const Mlp<double> other(mlp.config(), generator);
  mlp.parameters() = other.parameters();
  CHECK(max_abs_difference(
            velocity(problem, problem.x),
            velocity(Problem{other, problem.t, problem.x, problem.cond}, problem.x)) == 0);
}

TEST_CASE("a parameter gradient is one vector in the parameters' layout", "[mlp]") {
  const Problem problem = make_problem(MlpConfig{2, 0, {6, 3}, Activation::tanh, {}}, 52);
  const Vector<double> times = Vector<double>::LinSpaced(problem.x.cols(), 0.2, 0.8);
  MlpWorkspace<double> workspace;
  MlpGradient<double> gradient;
  Matrix<double> out(2, problem.x.cols());
  problem.mlp.forward(workspace, times, problem.x, out);
  problem.mlp.backward(workspace, out, gradient);
  REQUIRE(gradient.flat().size() == problem.mlp.parameters().size());
  CHECK(gradient.flat() == flowmatch::flatten_layers(gradient.weights, gradient.biases));
  // A copy views its own vector.
  MlpGradient<double> copy = gradient;
  copy.flat().setZero();
  CHECK(copy.weights[1].isZero(0.0));
  CHECK(gradient.flat() == flowmatch::flatten_layers(gradient.weights, gradient.biases));
  CHECK(!gradient.weights[1].isZero(0.0));
  copy = gradient;
  CHECK(copy.flat() == flowmatch::flatten_layers(copy.weights, copy.biases));
  CHECK(copy.weights[1].data() != gradient.weights[1].data());
}

TEST_CASE("the forward pass matches a per-sample reference", "[mlp]") {
  for (const Activation activation : flowmatch::all_activations) {
    for (const MlpConfig& config : test_configs(activation)) {
      INFO(describe(config));
      const Problem problem = make_problem(config, 11);
      const Index batch = problem.x.cols();
      const Vector<double> times = Vector<double>::LinSpaced(batch, 0.05, 0.95);

      Matrix<double> shared(config.dim, batch);
      Matrix<double> per_sample(config.dim, batch);
      Matrix<double> recorded(config.dim, batch);
      MlpWorkspace<double> workspace;
      if (config.cond_dim > 0) {
        problem.mlp(problem.t, problem.x, problem.cond, shared);
        problem.mlp(times, problem.x, problem.cond, per_sample);
        problem.mlp.forward(workspace, times, problem.x, problem.cond, recorded);
      } else {
        problem.mlp(problem.t, problem.x, shared);
        problem.mlp(times, problem.x, per_sample);
        problem.mlp.forward(workspace, times, problem.x, recorded);
      }
      CHECK(recorded == per_sample);
      for (Index n = 0; n < batch; ++n) {
        const Vector<double> x = problem.x.col(n);
        const Vector<double> cond = problem.cond.col(n);
        const Vector<double> at_shared = reference_velocity(problem.mlp, problem.t, x, cond);
        const Vector<double> at_own = reference_velocity(problem.mlp, times(n), x, cond);
        CHECK(max_abs_difference(shared.col(n), at_shared) <= 1e-13);
        CHECK(max_abs_difference(per_sample.col(n), at_own) <= 1e-13);
      }
    }
  }
}

TEST_CASE("jvp matches finite differences of the forward pass", "[mlp]") {
  std::mt19937_64 generator(21);
  for (const Activation activation : flowmatch::all_activations) {
    for (const MlpConfig& config : test_configs(activation)) {
      INFO(describe(config));
      const Problem problem = make_problem(config, 12);
      const Matrix<double> tangent = random_matrix(config.dim, problem.x.cols(), generator, 1.0);
      CHECK(max_abs_difference(jvp(problem, tangent), fd_directional(problem, tangent)) <=
            fd_tolerance);
    }
  }
}

TEST_CASE("the divergence is the trace of the Jacobian", "[mlp]") {
  for (const Activation activation : flowmatch::all_activations) {
    for (const MlpConfig& config : test_configs(activation)) {
      INFO(describe(config));
      const Problem problem = make_problem(config, 13);
      const Index batch = problem.x.cols();
      Vector<double> fd_trace = Vector<double>::Zero(batch);
      Vector<double> jvp_trace = Vector<double>::Zero(batch);
      for (Index i = 0; i < config.dim; ++i) {
        Matrix<double> basis = Matrix<double>::Zero(config.dim, batch);
        basis.row(i).setOnes();
        fd_trace += fd_directional(problem, basis).row(i).transpose();
        jvp_trace += jvp(problem, basis).row(i).transpose();
      }
      const Vector<double> exact = divergence(problem);
      CHECK(max_abs_difference(exact, fd_trace) <= fd_tolerance);
      CHECK(max_abs_difference(exact, jvp_trace) <= 1e-13);
    }
  }
}

TEST_CASE("vjp is the adjoint of jvp and the gradient of <w, u>", "[mlp]") {
  std::mt19937_64 generator(22);
  for (const Activation activation : flowmatch::all_activations) {
    for (const MlpConfig& config : test_configs(activation)) {
      INFO(describe(config));
      const Problem problem = make_problem(config, 14);
      const Index batch = problem.x.cols();
      const Matrix<double> tangent = random_matrix(config.dim, batch, generator, 1.0);
      const Matrix<double> cotangent = random_matrix(config.dim, batch, generator, 1.0);
      const Matrix<double> pulled_back = vjp(problem, cotangent);
      // ⟨w, J v⟩ = ⟨Jᵀ w, v⟩ for every sample.
      const Vector<double> forward_pairing =
          (cotangent.array() * jvp(problem, tangent).array()).colwise().sum().transpose();
      const Vector<double> backward_pairing =
          (pulled_back.array() * tangent.array()).colwise().sum().transpose();
      CHECK(max_abs_difference(forward_pairing, backward_pairing) <= 1e-13);
      // ∂⟨w, u⟩/∂x_i by central differences along e_i.
      for (Index i = 0; i < config.dim; ++i) {
        Matrix<double> basis = Matrix<double>::Zero(config.dim, batch);
        basis.row(i).setOnes();
        const Matrix<double> fd = fd_directional(problem, basis);
        const Vector<double> fd_gradient =
            (cotangent.array() * fd.array()).colwise().sum().transpose();
        CHECK(max_abs_difference(pulled_back.row(i).transpose(), fd_gradient) <= fd_tolerance);
      }
    }
  }
}

namespace {

// L = ½‖u − target‖² summed over the batch, u evaluated with one time per sample or a shared
// time.
double squared_loss(const Mlp<double>& mlp, const Problem& problem, const Vector<double>* times,
                    const Matrix<double>& x, const Matrix<double>& target) {
  Matrix<double> out(mlp.dim(), x.cols());
  const bool conditional = mlp.cond_dim() > 0;
  if (times != nullptr) {
    conditional ? mlp(*times, x, problem.cond, out) : mlp(*times, x, out);
  } else {
    conditional ? mlp(problem.t, x, problem.cond, out) : mlp(problem.t, x, out);
  }
  return 0.5 * (out - target).squaredNorm();
}

// Central difference of the loss with respect to one parameter, changed in place.
double fd_parameter(Mlp<double>& mlp, const Problem& problem, const Vector<double>* times,
                    const Matrix<double>& target, double& parameter) {
  const double saved = parameter;
  parameter = saved + fd_step;
  const double above = squared_loss(mlp, problem, times, problem.x, target);
  parameter = saved - fd_step;
  const double below = squared_loss(mlp, problem, times, problem.x, target);
  parameter = saved;
  return (above - below) / (2 * fd_step);
}

}  // namespace

TEST_CASE("parameter and input gradients of a squared loss match finite differences", "[mlp]") {
  std::mt19937_64 generator(23);
  for (const Activation activation : flowmatch::all_activations) {
    for (const MlpConfig& config : test_configs(activation)) {
      for (const bool per_sample_time : {true, false}) {
        INFO(describe(config) << (per_sample_time ? " per-sample time" : " shared time"));
        Problem problem = make_problem(config, 15);
        const Index batch = problem.x.cols();
        const Vector<double> times = Vector<double>::LinSpaced(batch, 0.1, 0.9);
        const Vector<double>* time_argument = per_sample_time ? &times : nullptr;
        const Matrix<double> target = random_matrix(config.dim, batch, generator, 1.0);

        MlpWorkspace<double> workspace;
        Matrix<double> out(config.dim, batch);
        const bool conditional = config.cond_dim > 0;
        if (per_sample_time) {
          conditional ? problem.mlp.forward(workspace, times, problem.x, problem.cond, out)
                      : problem.mlp.forward(workspace, times, problem.x, out);
        } else {
          conditional ? problem.mlp.forward(workspace, problem.t, problem.x, problem.cond, out)
                      : problem.mlp.forward(workspace, problem.t, problem.x, out);
        }
        MlpGradient<double> gradient;
        Matrix<double> x_gradient(config.dim, batch);
        problem.mlp.backward(workspace, out - target, gradient, x_gradient);

        double worst = 0;
        for (Index layer = 0; layer < problem.mlp.layer_count(); ++layer) {
          REQUIRE(gradient.weights[layer].rows() == problem.mlp.weight(layer).rows());
          REQUIRE(gradient.weights[layer].cols() == problem.mlp.weight(layer).cols());
          for (Index j = 0; j < problem.mlp.weight(layer).cols(); ++j) {
            for (Index i = 0; i < problem.mlp.weight(layer).rows(); ++i) {
              const double fd = fd_parameter(problem.mlp, problem, time_argument, target,
                                             problem.mlp.weight(layer)(i, j));
              worst = std::max(worst, std::abs(fd - gradient.weights[layer](i, j)));
            }
          }
          for (Index i = 0; i < problem.mlp.bias(layer).size(); ++i) {
            const double fd = fd_parameter(problem.mlp, problem, time_argument, target,
                                           problem.mlp.bias(layer)(i));
            worst = std::max(worst, std::abs(fd - gradient.biases[layer](i)));
          }
        }
        CHECK(worst <= fd_tolerance);

        // ∂L/∂x, one coordinate of one sample at a time.
        Matrix<double> fd_x_gradient(config.dim, batch);
        for (Index n = 0; n < batch; ++n) {
          for (Index i = 0; i < config.dim; ++i) {
            Matrix<double> shifted = problem.x;
            shifted(i, n) += fd_step;
            const double above = squared_loss(problem.mlp, problem, time_argument, shifted, target);
            shifted(i, n) -= 2 * fd_step;
            const double below = squared_loss(problem.mlp, problem, time_argument, shifted, target);
            fd_x_gradient(i, n) = (above - below) / (2 * fd_step);
          }
        }
        CHECK(max_abs_difference(x_gradient, fd_x_gradient) <= fd_tolerance);

        // The form without an input gradient gives the same parameter gradient.
        MlpGradient<double> parameters_only;
        problem.mlp.backward(workspace, out - target, parameters_only);
        CHECK(parameters_only.weights[0] == gradient.weights[0]);
        CHECK(parameters_only.biases.back() == gradient.biases.back());
      }
    }
  }
}

TEST_CASE("the float network agrees with the double one", "[mlp]") {
  for (const Activation activation : flowmatch::all_activations) {
    const MlpConfig config{3, 2, {8, 8}, activation, TimeEmbedding{2}};
    INFO(describe(config));
    const Problem problem = make_problem(config, 16);
    const Mlp<float> single = problem.mlp.cast<float>();
    const Index batch = problem.x.cols();
    const Matrix<float> x = problem.x.cast<float>();
    const Matrix<float> cond = problem.cond.cast<float>();
    const float t = static_cast<float>(problem.t);

    Matrix<float> out(3, batch);
    single(t, x, cond, out);
    // Float rounding (≈ 6e-8 per operation) over sums of ~10 terms of O(1): 1e-5 is ample.
    CHECK(max_abs_difference(out.cast<double>(), velocity(problem, problem.x)) <= 1e-5);

    const Matrix<double> tangent = Matrix<double>::Ones(3, batch);
    Matrix<float> tangent_out(3, batch);
    single.jvp(t, x, cond, tangent.cast<float>(), tangent_out);
    CHECK(max_abs_difference(tangent_out.cast<double>(), jvp(problem, tangent)) <= 1e-5);

    Vector<float> single_divergence(batch);
    single.divergence(t, x, cond, single_divergence);
    CHECK(max_abs_difference(single_divergence.cast<double>(), divergence(problem)) <= 1e-5);
  }
}

TEST_CASE("cast round trips", "[mlp]") {
  const Problem problem = make_problem(MlpConfig{2, 1, {5, 4}, Activation::gelu, {3}}, 17);
  const Mlp<float> single = problem.mlp.cast<float>();
  const Mlp<double> widened = single.cast<double>();
  const Mlp<float> narrowed_again = widened.cast<float>();
  const Mlp<double> same = problem.mlp.cast<double>();
  CHECK(widened.config() == problem.mlp.config());
  for (Index layer = 0; layer < problem.mlp.layer_count(); ++layer) {
    // double → float → double rounds each weight once; float → double → float is exact.
    CHECK(widened.weight(layer) == problem.mlp.weight(layer).cast<float>().cast<double>());
    CHECK(max_abs_difference(widened.weight(layer), problem.mlp.weight(layer)) <= 1e-7);
    CHECK(narrowed_again.weight(layer) == single.weight(layer));
    CHECK(narrowed_again.bias(layer) == single.bias(layer));
    CHECK(same.weight(layer) == problem.mlp.weight(layer));
    CHECK(same.bias(layer) == problem.mlp.bias(layer));
  }
}

TEST_CASE("concurrent evaluations from several threads agree with serial ones", "[mlp]") {
  const Problem problem = make_problem(MlpConfig{2, 0, {16, 16}, Activation::silu, {}}, 18);
  std::mt19937_64 generator(24);
  // Two batch sizes, so that the threads' workspaces differ in shape.
  const std::vector<Matrix<double>> inputs = {random_matrix(2, 7, generator),
                                              random_matrix(2, 13, generator)};
  std::vector<Matrix<double>> serial;
  for (const Matrix<double>& x : inputs) serial.push_back(velocity(problem, x));
  std::vector<int> mismatches(inputs.size(), 0);
  std::vector<std::thread> threads;
  for (std::size_t k = 0; k < inputs.size(); ++k) {
    threads.emplace_back([&, k] {
      Matrix<double> out(2, inputs[k].cols());
      for (int repeat = 0; repeat < 200; ++repeat) {
        problem.mlp(problem.t, inputs[k], out);
        if (out != serial[k]) ++mismatches[k];
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  CHECK(mismatches == std::vector<int>(inputs.size(), 0));
}

namespace {

// Forbids Eigen's heap allocations for its lifetime.
class ForbidEigenAllocation {
 public:
  ForbidEigenAllocation() { Eigen::internal::set_is_malloc_allowed(false); }
  ~ForbidEigenAllocation() { Eigen::internal::set_is_malloc_allowed(true); }
  ForbidEigenAllocation(const ForbidEigenAllocation&) = delete;
  ForbidEigenAllocation& operator=(const ForbidEigenAllocation&) = delete;
};

}  // namespace

TEST_CASE("evaluations and derivatives do not allocate once their workspace is sized", "[mlp]") {
  {
    // The check itself works: a new matrix needs the heap.
    const ForbidEigenAllocation forbid;
    CHECK_THROWS_AS(Matrix<double>(3, 3), std::logic_error);
  }
  const Problem problem = make_problem(MlpConfig{2, 2, {8, 6}, Activation::silu, {2}}, 40);
  const Mlp<double>& mlp = problem.mlp;
  const Index batch = problem.x.cols();
  const Vector<double> times = Vector<double>::LinSpaced(batch, 0.1, 0.9);
  const Matrix<double> direction = Matrix<double>::Ones(2, batch);
  MlpWorkspace<double> workspace;
  MlpGradient<double> gradient;
  Matrix<double> out(2, batch);
  Matrix<double> x_gradient(2, batch);
  Vector<double> divergence_out(batch);
  const auto evaluate_everything = [&] {
    mlp(problem.t, problem.x, problem.cond, out);
    mlp(times, problem.x, problem.cond, out);
    mlp.jvp(problem.t, problem.x, problem.cond, direction, out);
    mlp.vjp(problem.t, problem.x, problem.cond, direction, out);
    mlp.divergence(problem.t, problem.x, problem.cond, divergence_out);
    mlp.forward(workspace, times, problem.x, problem.cond, out);
    mlp.backward(workspace, direction, gradient, x_gradient);
  };
  evaluate_everything();  // sizes the workspaces
  const ForbidEigenAllocation forbid;
  CHECK_NOTHROW(evaluate_everything());
}

TEST_CASE("bad inputs to an Mlp throw", "[mlp]") {
  const Problem problem = make_problem(MlpConfig{2, 0, {4}, Activation::relu, {}}, 19);
  const Problem conditional = make_problem(MlpConfig{2, 3, {4}, Activation::relu, {}}, 19);
  const Mlp<double>& mlp = problem.mlp;
  const Matrix<double> x = Matrix<double>::Zero(2, 5);
  Matrix<double> out(2, 5);
  Vector<double> divergence_out(5);

  SECTION("x of the wrong dimension") {
    const Matrix<double> wrong = Matrix<double>::Zero(3, 5);
    Matrix<double> wrong_out(2, 5);
    CHECK_THROWS_AS(mlp(0.5, wrong, wrong_out), std::invalid_argument);
    CHECK_THROWS_WITH(mlp(0.5, wrong, wrong_out), Catch::Contains("x has shape 3x5"));
  }
  SECTION("a transposed batch (N×d) is blamed on x, not on out") {
    // Five samples in R^2 given as the 5x2 array of NumPy's [N, d] layout; out is d×N.
    const Matrix<double> transposed = x.transpose();
    const auto shape = Catch::Contains("Mlp: x has shape 5x2");
    const auto expected = Catch::Contains("expected 2 rows");
    const auto hint = Catch::Contains("transposed");
    CHECK_THROWS_AS(mlp(0.5, transposed, out), std::invalid_argument);
    CHECK_THROWS_WITH(mlp(0.5, transposed, out), shape && expected && hint);
    CHECK_THROWS_WITH(flowmatch::evaluate_velocity<double>(mlp, 0.5, transposed),
                      shape && expected && hint);
    CHECK_THROWS_WITH(mlp.divergence(0.5, transposed, divergence_out), shape && expected && hint);
    CHECK_THROWS_WITH(mlp.jvp(0.5, transposed, x, out), shape && expected && hint);
    CHECK_THROWS_WITH(mlp.vjp(0.5, transposed, x, out), shape && expected && hint);
    // Rows other than d, but not the transposed shape: x is named, without the hint.
    const Matrix<double> wrong = Matrix<double>::Zero(3, 5);
    CHECK_THROWS_WITH(mlp(0.5, wrong, out),
                      Catch::Contains("Mlp: x has shape 3x5") && expected && !hint);
  }
  SECTION("out of the wrong shape") {
    Matrix<double> wrong_out(2, 4);
    CHECK_THROWS_AS(mlp(0.5, x, wrong_out), std::invalid_argument);
    Vector<double> short_divergence(4);
    CHECK_THROWS_AS(mlp.divergence(0.5, x, short_divergence), std::invalid_argument);
  }
  SECTION("non-finite time") {
    CHECK_THROWS_AS(mlp(std::nan(""), x, out), std::invalid_argument);
    CHECK_THROWS_WITH(mlp(INFINITY, x, out), Catch::Contains("t is inf, expected finite"));
    Vector<double> times = Vector<double>::Constant(5, 0.5);
    times(3) = std::nan("");
    CHECK_THROWS_WITH(mlp(times, x, out),
                      Catch::Contains("Mlp: t has a non-finite entry at index 3"));
    CHECK_THROWS_AS(mlp.divergence(std::nan(""), x, divergence_out), std::invalid_argument);
  }
  SECTION("per-sample times of the wrong length") {
    const Vector<double> times = Vector<double>::Constant(4, 0.5);
    CHECK_THROWS_AS(mlp(times, x, out), std::invalid_argument);
  }
  SECTION("condition missing, unexpected, of the wrong shape or non-finite") {
    const Matrix<double> cond = Matrix<double>::Zero(3, 5);
    CHECK_THROWS_AS(conditional.mlp(0.5, x, out), std::invalid_argument);
    CHECK_THROWS_AS(mlp(0.5, x, cond, out), std::invalid_argument);
    const Matrix<double> wrong_rows = Matrix<double>::Zero(2, 5);
    CHECK_THROWS_WITH(conditional.mlp(0.5, x, wrong_rows, out), Catch::Contains("cond has shape"));
    const Matrix<double> wrong_cols = Matrix<double>::Zero(3, 4);
    CHECK_THROWS_AS(conditional.mlp(0.5, x, wrong_cols, out), std::invalid_argument);
    Matrix<double> nan_cond = cond;
    nan_cond(1, 2) = std::nan("");
    CHECK_THROWS_AS(conditional.mlp(0.5, x, nan_cond, out), std::invalid_argument);
  }
  SECTION("tangent and cotangent of the wrong shape") {
    const Matrix<double> wrong = Matrix<double>::Zero(2, 4);
    CHECK_THROWS_AS(mlp.jvp(0.5, x, wrong, out), std::invalid_argument);
    CHECK_THROWS_AS(mlp.vjp(0.5, x, wrong, out), std::invalid_argument);
  }
  SECTION("backward without a recorded forward pass, or with a wrong gradient") {
    MlpWorkspace<double> workspace;
    MlpGradient<double> gradient;
    CHECK_THROWS_WITH(mlp.backward(workspace, out, gradient),
                      Catch::Contains("no forward pass of this network"));
    mlp.forward(workspace, 0.5, x, out);
    CHECK_THROWS_AS(conditional.mlp.backward(workspace, out, gradient), std::invalid_argument);
    const Matrix<double> wrong = Matrix<double>::Zero(2, 4);
    CHECK_THROWS_AS(mlp.backward(workspace, wrong, gradient), std::invalid_argument);
    Matrix<double> nan_gradient = Matrix<double>::Zero(2, 5);
    nan_gradient(0, 0) = std::nan("");
    CHECK_THROWS_AS(mlp.backward(workspace, nan_gradient, gradient), std::invalid_argument);
    Matrix<double> wrong_x_gradient(2, 4);
    CHECK_THROWS_AS(mlp.backward(workspace, out, gradient, wrong_x_gradient),
                    std::invalid_argument);
    // A plain evaluation leaves the caller's workspace and its recorded pass alone.
    mlp(0.5, x, out);
    CHECK_NOTHROW(mlp.backward(workspace, out, gradient));
  }
  SECTION("invalid configurations and parameters") {
    CHECK_THROWS_AS(Mlp<double>(MlpConfig{0, 0, {4}, Activation::relu, {}}), std::invalid_argument);
    CHECK_THROWS_AS(Mlp<double>(MlpConfig{2, -1, {4}, Activation::relu, {}}),
                    std::invalid_argument);
    CHECK_THROWS_WITH(Mlp<double>(MlpConfig{2, 0, {4, 0}, Activation::relu, {}}),
                      Catch::Contains("hidden[1] is 0"));
    CHECK_THROWS_AS(Mlp<double>(MlpConfig{2, 0, {4}, Activation::relu, TimeEmbedding{-2}}),
                    std::invalid_argument);
    CHECK_THROWS_AS(Mlp<double>(MlpConfig{2, 0, {4}, static_cast<Activation>(42), {}}),
                    std::invalid_argument);
    Mlp<double> copy = mlp;
    CHECK_THROWS_AS(copy.set_weight(0, Matrix<double>::Zero(4, 2)), std::invalid_argument);
    CHECK_THROWS_AS(copy.set_bias(1, Vector<double>::Zero(3)), std::invalid_argument);
    Matrix<double> nan_weight = Matrix<double>::Zero(4, 3);
    nan_weight(0, 0) = std::nan("");
    CHECK_THROWS_AS(copy.set_weight(0, nan_weight), std::invalid_argument);
    CHECK_THROWS_WITH(copy.weight(2), Catch::Contains("layer is 2"));
  }
}

// ---------------------------------------------------------------------------------------------
// Loading and saving as a PyTorch nn.Sequential state_dict.

namespace {

namespace io = flowmatch::io;

const std::string tiny2d_dir = std::string(FLOWMATCH_TEST_DATA_DIR) + "/tiny2d/";

// A file name in the temporary directory, unique to this process.
std::string temporary_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("flowmatch_test_mlp_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

void check_same_network(const Mlp<double>& actual, const Mlp<double>& expected) {
  CHECK(actual.config() == expected.config());
  REQUIRE(actual.layer_count() == expected.layer_count());
  for (Index layer = 0; layer < actual.layer_count(); ++layer) {
    CHECK(actual.weight(layer) == expected.weight(layer));
    CHECK(actual.bias(layer) == expected.bias(layer));
  }
}

}  // namespace

TEST_CASE("the PyTorch fixture loads and reproduces its velocity and divergence", "[io]") {
  const Mlp<double> mlp = io::load_mlp<double>(tiny2d_dir + "model.safetensors");
  CHECK(mlp.config() == MlpConfig{2, 0, {32, 32}, Activation::silu, TimeEmbedding{0}});

  const Matrix<double> points = io::load_npy_batch<double>(tiny2d_dir + "points.npy");
  const Vector<double> times = io::load_npy_vector<double>(tiny2d_dir + "times.npy");
  const Matrix<double> expected_velocity = io::load_npy_batch<double>(tiny2d_dir + "velocity.npy");
  const Vector<double> expected_divergence =
      io::load_npy_vector<double>(tiny2d_dir + "divergence.npy");
  REQUIRE(points.rows() == 2);
  REQUIRE(times.size() == points.cols());

  Matrix<double> velocity_out(2, points.cols());
  mlp(times, points, velocity_out);
  Vector<double> divergence_out(points.cols());
  Vector<double> one(1);
  for (Index n = 0; n < points.cols(); ++n) {
    mlp.divergence(times(n), points.col(n), one);
    divergence_out(n) = one(0);
  }
  // PyTorch evaluated the same F32 weights (exact in double) in float64: the results differ
  // only by rounding in a different summation order and exp implementation, a few ulps per
  // operation through three layers of width 32, i.e. ~1e-14 of the magnitudes involved.
  // 1e-12 relative to the largest value leaves two orders of margin and still rejects any
  // wrong weight, layout or activation (which change the result at the 1e-3 level or more).
  const double velocity_scale = expected_velocity.cwiseAbs().maxCoeff();
  const double divergence_scale = expected_divergence.cwiseAbs().maxCoeff();
  CHECK(max_abs_difference(velocity_out, expected_velocity) <= 1e-12 * velocity_scale);
  CHECK(max_abs_difference(divergence_out, expected_divergence) <= 1e-12 * divergence_scale);

  // The float network from the same file: F32 weights are exact, the evaluation rounds.
  const Mlp<float> single = io::load_mlp<float>(tiny2d_dir + "model.safetensors");
  Matrix<float> single_out(2, points.cols());
  single(times.cast<float>(), points.cast<float>(), single_out);
  CHECK(max_abs_difference(single_out.cast<double>(), expected_velocity) <= 1e-5 * velocity_scale);
}

TEST_CASE("save_mlp and load_mlp round trip", "[io]") {
  const Problem problem = make_problem(MlpConfig{3, 2, {6, 5}, Activation::gelu, {3}}, 30);
  const std::string path = temporary_path("round_trip.safetensors");

  SECTION("F64 keeps the weights exactly") {
    io::save_mlp(path, problem.mlp);
    check_same_network(io::load_mlp<double>(path), problem.mlp);
  }
  SECTION("F32 rounds each weight to float, as PyTorch's default dtype") {
    io::save_mlp(path, problem.mlp, io::DType::F32);
    const io::SafeTensors file = io::read_safetensors(path);
    CHECK(file.tensors.at("0.weight").dtype == io::DType::F32);
    CHECK(file.tensors.at("0.weight").shape == std::vector<std::int64_t>{6, 3 + 6 + 2});
    CHECK(file.tensors.at("4.bias").shape == std::vector<std::int64_t>{3});
    CHECK(file.metadata.at("input_order") == "x,t,c");
    CHECK(file.metadata.at("time_embedding") == "sinusoidal");
    check_same_network(io::load_mlp<double>(path), problem.mlp.cast<float>().cast<double>());
  }
  SECTION("a float network saves as F32 by default and loads back exactly") {
    const Mlp<float> single = problem.mlp.cast<float>();
    io::save_mlp(path, single);
    CHECK(io::read_safetensors(path).tensors.at("2.weight").dtype == io::DType::F32);
    const Mlp<float> loaded = io::load_mlp<float>(path);
    for (Index layer = 0; layer < single.layer_count(); ++layer) {
      CHECK(loaded.weight(layer) == single.weight(layer));
      CHECK(loaded.bias(layer) == single.bias(layer));
    }
  }
  std::filesystem::remove(path);
}

TEST_CASE("load_mlp takes missing metadata from the options, which override it", "[io]") {
  const Problem problem = make_problem(MlpConfig{2, 0, {4}, Activation::elu, {}}, 31);
  io::SafeTensors file = io::mlp_to_safetensors(problem.mlp, io::DType::F64);

  SECTION("options override the metadata") {
    io::MlpLoadOptions options;
    options.activation = Activation::tanh;
    CHECK(io::load_mlp(file, options).config().activation == Activation::tanh);
    CHECK(io::load_mlp(file).config().activation == Activation::elu);
  }
  SECTION("without metadata the activation must be given; the order defaults to x,t") {
    file.metadata.clear();
    CHECK_THROWS_AS(io::load_mlp(file), std::invalid_argument);
    io::MlpLoadOptions options;
    options.activation = Activation::elu;
    check_same_network(io::load_mlp(file, options), problem.mlp);
  }
  SECTION("a time embedding from the options changes how the inputs split") {
    // 3 inputs = dim 2 + 1 raw time; a sinusoidal embedding with one frequency needs 2.
    io::MlpLoadOptions options;
    options.time_embedding = TimeEmbedding{1};
    CHECK_THROWS_AS(io::load_mlp(file, options), io::format_error);
  }
}

TEST_CASE("load_mlp reorders the first layer's inputs to x, t, c", "[io]") {
  const Problem problem = make_problem(MlpConfig{2, 3, {5}, Activation::softplus, {2}}, 32);
  io::SafeTensors file = io::mlp_to_safetensors(problem.mlp, io::DType::F64);
  // Store the first layer as a network with the input [c, x, t] would have it.
  const Matrix<double>& weight = problem.mlp.weight(0);
  Matrix<double> permuted(weight.rows(), weight.cols());
  permuted << weight.rightCols(3), weight.leftCols(2), weight.middleCols(2, 4);
  file.tensors["0.weight"] = io::make_tensor(permuted, io::DType::F64);
  file.metadata["input_order"] = "c,x,t";
  check_same_network(io::load_mlp(file), problem.mlp);

  io::MlpLoadOptions options;
  options.input_order = "x,t,c";  // wrong for this file, but the caller's word wins
  CHECK(io::load_mlp(file, options).weight(0) == permuted);
}

TEST_CASE("load_mlp accepts a name prefix and any increasing Sequential indices", "[io]") {
  const Problem problem = make_problem(MlpConfig{2, 0, {4, 3}, Activation::selu, {}}, 33);
  const io::SafeTensors saved = io::mlp_to_safetensors(problem.mlp, io::DType::F64);
  io::SafeTensors file;
  file.metadata = saved.metadata;
  // Sequential(Linear, SELU, Dropout, Linear, SELU, Dropout, Linear) inside a module: 0, 3, 6.
  const std::vector<std::string> indices = {"0", "3", "6"};
  for (std::size_t layer = 0; layer < indices.size(); ++layer) {
    for (const std::string field : {".weight", ".bias"}) {
      file.tensors["net." + indices[layer] + field] =
          saved.tensors.at(std::to_string(2 * layer) + field);
    }
  }
  file.tensors["other.scale"] = saved.tensors.at("0.bias");
  io::MlpLoadOptions options;
  options.prefix = "net.";
  check_same_network(io::load_mlp(file, options), problem.mlp);
  // Without the prefix the names are not layer names.
  CHECK_THROWS_AS(io::load_mlp(file), io::format_error);
}

TEST_CASE("load_mlp rejects files that do not describe an MLP", "[io]") {
  const Problem problem = make_problem(MlpConfig{2, 1, {4, 3}, Activation::silu, {}}, 34);
  io::SafeTensors file = io::mlp_to_safetensors(problem.mlp, io::DType::F64);
  const auto rejects = [&](const std::string& expected_text) {
    CHECK_THROWS_AS(io::load_mlp(file), io::format_error);
    CHECK_THROWS_WITH(io::load_mlp(file), Catch::Contains(expected_text));
  };
  CHECK_NOTHROW(io::load_mlp(file));

  SECTION("a tensor that is not a layer tensor") {
    file.tensors["scale"] = file.tensors.at("0.bias");
    rejects("'scale'");
  }
  SECTION("a missing bias") {
    file.tensors.erase("2.bias");
    rejects("missing its bias");
  }
  SECTION("no layers") {
    file.tensors.clear();
    rejects("no '<index>.weight'");
  }
  SECTION("shapes that do not chain") {
    file.tensors["2.weight"] = io::make_tensor(Matrix<double>::Zero(3, 5), io::DType::F64);
    rejects("expected the previous layer's 4 outputs");
  }
  SECTION("a bias of the wrong length") {
    file.tensors["2.bias"] = io::make_vector_tensor(Vector<double>::Zero(4), io::DType::F64);
    rejects("'2.bias'");
  }
  SECTION("a weight that is not 2-D") {
    file.tensors["4.weight"] = file.tensors.at("4.bias");
    rejects("4.weight");
  }
  SECTION("metadata that contradicts the shapes") {
    file.metadata["dim"] = "3";
    rejects("'dim'");
  }
  SECTION("a condition size that contradicts the shapes") {
    file.metadata["cond_dim"] = "2";
    rejects("'cond_dim'");
  }
  SECTION("an unparsable count") {
    file.metadata["dim"] = "2x";
    rejects("non-negative integer");
  }
  SECTION("an unknown activation") {
    file.metadata["activation"] = "swish";
    rejects("swish");
  }
  SECTION("an invalid input order") {
    file.metadata["input_order"] = "x,x,c";
    rejects("input_order");
  }
  SECTION("an input order without the condition the shapes imply") {
    file.metadata["input_order"] = "x,t";
    rejects("without a condition");
  }
  SECTION("an unknown time embedding or a missing frequency count") {
    file.metadata["time_embedding"] = "fourier";
    rejects("'raw' or 'sinusoidal'");
    file.metadata["time_embedding"] = "sinusoidal";
    rejects("time_frequencies");
  }
  SECTION("a file that cannot be read") {
    CHECK_THROWS_AS(io::load_mlp(temporary_path("missing.safetensors")), io::io_error);
  }
}

namespace {

// Networks with 1, 2 and 3 hidden layers, unconditional and conditional, raw and sinusoidal
// time: the shapes on which the gradient of the divergence is checked.
std::vector<MlpConfig> curvature_configs(Activation activation) {
  return {
      MlpConfig{3, 0, {6}, activation, TimeEmbedding{0}},
      MlpConfig{2, 2, {5}, activation, TimeEmbedding{3}},
      MlpConfig{3, 0, {6, 5}, activation, TimeEmbedding{2}},
      MlpConfig{2, 1, {5, 4}, activation, TimeEmbedding{0}},
      MlpConfig{2, 0, {4, 6, 5}, activation, TimeEmbedding{1}},
      MlpConfig{3, 2, {4, 3, 5}, activation, TimeEmbedding{2}},
  };
}

Matrix<double> divergence_gradient(const Problem& problem) {
  Matrix<double> out(problem.mlp.dim(), problem.x.cols());
  if (problem.mlp.cond_dim() > 0) {
    problem.mlp.divergence_gradient(problem.t, problem.x, problem.cond, out);
  } else {
    problem.mlp.divergence_gradient(problem.t, problem.x, out);
  }
  return out;
}

// Central differences of Mlp::divergence along each axis: row i = ∂(∇·u)/∂x_i per sample.
Matrix<double> fd_divergence_gradient(const Problem& problem) {
  Matrix<double> gradient(problem.mlp.dim(), problem.x.cols());
  for (Index i = 0; i < problem.mlp.dim(); ++i) {
    Problem shifted = problem;
    shifted.x.row(i).array() += fd_step;
    const Vector<double> plus = divergence(shifted);
    shifted.x.row(i).array() -= 2 * fd_step;
    const Vector<double> minus = divergence(shifted);
    gradient.row(i) = ((plus - minus) / (2 * fd_step)).transpose();
  }
  return gradient;
}

}  // namespace

TEST_CASE("activation second derivatives match central differences of the first", "[activation]") {
  // The same points as for σ': at least 1e-3 from every kink, so the stencil never crosses one.
  const std::vector<double> points = {-30, -5, -1.3, -0.2,   -1e-3,  1e-3, 0.2,
                                      0.7, 3,  19.5, 19.999, 20.001, 20.5, 35};
  for (const Activation activation : flowmatch::all_activations) {
    for (const double z : points) {
      INFO(flowmatch::activation_name(activation) << " at z = " << z);
      const double fd = (flowmatch::activation_derivative(activation, z + fd_step) -
                         flowmatch::activation_derivative(activation, z - fd_step)) /
                        (2 * fd_step);
      CHECK_THAT(flowmatch::activation_second_derivative(activation, z), WithinAbs(fd, 1e-8));
    }
  }
}

TEST_CASE("activation second derivatives follow their closed forms and kinks", "[activation]") {
  const double selu_lambda = 1.0507009873554804934193349852946;
  const double selu_alpha = 1.6732632423543772848170429916717;
  // Independent forms: tanh'' = −2 tanh·(1 − tanh²); gelu'' = φ(z)(2 − z²); softplus'' = e^z /
  // (1 + e^z)²; silu'' = s(1 − s)(2 + z(1 − 2s)) with s = 1/(1 + e^{−z}).
  for (const double z : {-3.0, -0.4, 0.3, 2.5}) {
    INFO("z = " << z);
    const double th = std::tanh(z);
    CHECK_THAT(flowmatch::activation_second_derivative(Activation::tanh, z),
               WithinAbs(-2 * th * (1 - th * th), 1e-14));
    CHECK_THAT(
        flowmatch::activation_second_derivative(Activation::gelu, z),
        WithinAbs(std::exp(-z * z / 2) / std::sqrt(2 * std::numbers::pi) * (2 - z * z), 1e-14));
    CHECK_THAT(flowmatch::activation_second_derivative(Activation::softplus, z),
               WithinAbs(std::exp(z) / ((1 + std::exp(z)) * (1 + std::exp(z))), 1e-14));
    const double s = 1 / (1 + std::exp(-z));
    CHECK_THAT(flowmatch::activation_second_derivative(Activation::silu, z),
               WithinAbs(s * (1 - s) * (2 + z * (1 - 2 * s)), 1e-14));
  }
  // Zero on linear pieces; the left branch at a kink, as for σ'.
  for (const Activation linear_pieces : {Activation::relu, Activation::leaky_relu}) {
    for (const double z : {-2.0, 0.0, 3.0}) {
      CHECK(flowmatch::activation_second_derivative(linear_pieces, z) == 0.0);
    }
  }
  CHECK(flowmatch::activation_second_derivative(Activation::elu, 0.0) == 1.0);
  CHECK(flowmatch::activation_second_derivative(Activation::elu, 1e-9) == 0.0);
  CHECK_THAT(flowmatch::activation_second_derivative(Activation::selu, 0.0),
             WithinRel(selu_lambda * selu_alpha, 1e-15));
  CHECK(flowmatch::activation_second_derivative(Activation::softplus, 20.0) > 0.0);
  CHECK(flowmatch::activation_second_derivative(Activation::softplus, 20.0 + 1e-9) == 0.0);
  for (const Activation activation : flowmatch::all_activations) {
    for (const double z : {-1e4, -800.0, 800.0, 1e4}) {
      INFO(flowmatch::activation_name(activation) << " at z = " << z);
      CHECK(std::isfinite(flowmatch::activation_second_derivative(activation, z)));
    }
    for (const float z : {-200.0f, 200.0f}) {
      INFO(flowmatch::activation_name(activation) << " in float at z = " << z);
      CHECK(std::isfinite(flowmatch::activation_second_derivative(activation, z)));
    }
  }
}

TEST_CASE("an Mlp offers the exact vjp and gradient of the divergence", "[mlp]") {
  static_assert(flowmatch::HasVjp<Mlp<double>, double>);
  static_assert(flowmatch::HasDivergenceGradient<Mlp<double>, double>);
  static_assert(flowmatch::HasDivergenceGradient<Mlp<float>, float>);
}

TEST_CASE("the divergence gradient matches central differences of the divergence", "[mlp]") {
  // The divergence is smooth away from kinks: central differences with h = 1e-5 err by
  // h²/6·|∂³(∇·u)| ~ 1e-10 plus rounding ε·|∇·u|/h ~ 1e-10, well inside fd_tolerance = 1e-7.
  // For relu and leaky_relu the divergence is piecewise constant and both sides give zero.
  for (const Activation activation : flowmatch::all_activations) {
    for (const MlpConfig& config : curvature_configs(activation)) {
      INFO(describe(config));
      const Problem problem = make_problem(config, 41, 5);
      const Matrix<double> exact = divergence_gradient(problem);
      CHECK(max_abs_difference(exact, fd_divergence_gradient(problem)) <= fd_tolerance);
      // The sigmoid-like activations must give a gradient that is not trivially zero.
      if (activation != Activation::relu && activation != Activation::leaky_relu) {
        CHECK(exact.cwiseAbs().maxCoeff() > 1e-3);
      }
    }
  }
}

TEST_CASE("with one hidden layer the divergence gradient is W_xᵀ(σ''(z₀) ⊙ c)", "[mlp]") {
  // div = Σ_j σ'(z_j)·c_j with c_j = Σ_i W₁[i,j]·W₀[j,i], so ∇div = Σ_j σ''(z_j)·c_j·W₀[j, :x].
  const Problem problem = make_problem(MlpConfig{3, 1, {7}, Activation::gelu, {2}}, 42, 6);
  const Mlp<double>& mlp = problem.mlp;
  const Matrix<double> x_weight = mlp.weight(0).leftCols(3);
  const Vector<double> trace_weights =
      (mlp.weight(1).transpose().array() * x_weight.array()).rowwise().sum().matrix();
  const Index features = mlp.config().time_embedding.feature_count();
  Matrix<double> expected(3, problem.x.cols());
  for (Index n = 0; n < problem.x.cols(); ++n) {
    const Vector<double> time = reference_time_features(2, problem.t);
    const Vector<double> z = x_weight * problem.x.col(n) +
                             mlp.weight(0).middleCols(3, features) * time +
                             mlp.weight(0).rightCols(1) * problem.cond.col(n) + mlp.bias(0);
    Vector<double> weighted(z.size());
    for (Index j = 0; j < z.size(); ++j) {
      weighted(j) =
          flowmatch::activation_second_derivative(Activation::gelu, z(j)) * trace_weights(j);
    }
    expected.col(n) = x_weight.transpose() * weighted;
  }
  CHECK(max_abs_difference(divergence_gradient(problem), expected) <= 1e-13);
}

TEST_CASE("a network without hidden layers has zero divergence gradient", "[mlp]") {
  const Problem problem = make_problem(MlpConfig{3, 0, {}, Activation::silu, {}}, 43);
  CHECK(divergence_gradient(problem) == Matrix<double>::Zero(3, problem.x.cols()));
}

TEST_CASE("the float divergence gradient agrees with the double one", "[mlp]") {
  for (const Activation activation : flowmatch::all_activations) {
    const MlpConfig config{3, 2, {8, 8}, activation, TimeEmbedding{2}};
    INFO(describe(config));
    const Problem problem = make_problem(config, 44);
    const Mlp<float> single = problem.mlp.cast<float>();
    Matrix<float> out(3, problem.x.cols());
    single.divergence_gradient(static_cast<float>(problem.t), problem.x.cast<float>(),
                               problem.cond.cast<float>(), out);
    // Each entry sums ~d·width² = 200 products of O(1) terms computed with relative rounding
    // ≈ 6e-8 (weights rounded to float included): a few 1e-6 at worst; 1e-4 leaves margin for
    // the activations' own few-ulp errors.
    CHECK(max_abs_difference(out.cast<double>(), divergence_gradient(problem)) <= 1e-4);
  }
}

TEST_CASE("the divergence gradient does not allocate once its workspace is sized", "[mlp]") {
  const Problem problem = make_problem(MlpConfig{2, 2, {8, 6, 5}, Activation::silu, {2}}, 45);
  Matrix<double> out(2, problem.x.cols());
  problem.mlp.divergence_gradient(problem.t, problem.x, problem.cond, out);
  const ForbidEigenAllocation forbid;
  CHECK_NOTHROW(problem.mlp.divergence_gradient(problem.t, problem.x, problem.cond, out));
}

TEST_CASE("bad inputs to the divergence gradient throw", "[mlp]") {
  const Problem problem = make_problem(MlpConfig{2, 0, {4, 3}, Activation::tanh, {}}, 46);
  const Problem conditional = make_problem(MlpConfig{2, 3, {4, 3}, Activation::tanh, {}}, 46);
  const Matrix<double> x = Matrix<double>::Zero(2, 5);
  Matrix<double> out(2, 5);
  Matrix<double> wrong_out(2, 4);
  CHECK_THROWS_WITH(problem.mlp.divergence_gradient(0.5, x, wrong_out),
                    Catch::Contains("Mlp::divergence_gradient: out"));
  CHECK_THROWS_WITH(problem.mlp.divergence_gradient(0.5, Matrix<double>::Zero(3, 5), out),
                    Catch::Contains("x has shape 3x5"));
  CHECK_THROWS_WITH(problem.mlp.divergence_gradient(std::nan(""), x, out),
                    Catch::Contains("t is nan, expected finite"));
  CHECK_THROWS_AS(problem.mlp.divergence_gradient(0.5, x, Matrix<double>::Zero(1, 5), out),
                  std::invalid_argument);
  CHECK_THROWS_WITH(conditional.mlp.divergence_gradient(0.5, x, out),
                    Catch::Contains("expected a condition matrix"));
  CHECK_THROWS_AS(conditional.mlp.divergence_gradient(0.5, x, Matrix<double>::Zero(2, 5), out),
                  std::invalid_argument);
  Matrix<double> bad_cond = Matrix<double>::Zero(3, 5);
  bad_cond(1, 2) = std::nan("");
  CHECK_THROWS_AS(conditional.mlp.divergence_gradient(0.5, x, bad_cond, out),
                  std::invalid_argument);
}
