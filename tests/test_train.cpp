// Tests of the training layer that does not depend on a network: the flat parameter mapping,
// gradient clipping, Adam, SGD, the moving average, learning-rate schedules and the toy data.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <numbers>
#include <random>
#include <vector>

#include "flowmatch/data/toy_datasets.hpp"
#include "flowmatch/likelihood/standard_normal.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/train/adam.hpp"
#include "flowmatch/train/ema.hpp"
#include "flowmatch/train/lr_schedule.hpp"
#include "flowmatch/train/parameters.hpp"
#include "flowmatch/train/sgd.hpp"
#include "flowmatch/train/time_sampler.hpp"
#include "flowmatch/train/trainer.hpp"

namespace test_train {

namespace {

using Catch::Matchers::WithinAbs;
using Catch::Matchers::WithinRel;
using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::Vector;

Vector<double> vector2(double first, double second) {
  Vector<double> result(2);
  result << first, second;
  return result;
}

// A two-layer model with the accessors of a network of linear layers.
struct TwoLayerModel {
  using scalar_type = double;
  std::vector<Matrix<double>> weights{Matrix<double>(3, 2), Matrix<double>(1, 3)};
  std::vector<Vector<double>> biases{Vector<double>(3), Vector<double>(1)};
  [[nodiscard]] Index layer_count() const { return 2; }
  [[nodiscard]] const Matrix<double>& weight(Index layer) const { return weights[layer]; }
  [[nodiscard]] const Vector<double>& bias(Index layer) const { return biases[layer]; }
  [[nodiscard]] flowmatch::MatrixRef<double> weight(Index layer) { return weights[layer]; }
  [[nodiscard]] flowmatch::VectorRef<double> bias(Index layer) { return biases[layer]; }
};
static_assert(flowmatch::LayeredModel<TwoLayerModel>);

// Sample mean (2-vector) and covariance (2×2, divided by n) of a 2×n batch.
struct Moments {
  Vector<double> mean;
  Matrix<double> covariance;
};
Moments moments(const Matrix<double>& batch) {
  const Vector<double> mean = batch.rowwise().mean();
  const Matrix<double> centred = batch.colwise() - mean;
  return {mean, centred * centred.transpose() / static_cast<double>(batch.cols())};
}

}  // namespace

TEST_CASE("layers flatten to [vec W0, b0, vec W1, b1] and back", "[parameters]") {
  TwoLayerModel model;
  model.weights[0] << 1, 2, 3, 4, 5, 6;  // rows (1, 2), (3, 4), (5, 6)
  model.biases[0] << 7, 8, 9;
  model.weights[1] << 10, 11, 12;
  model.biases[1] << 13;
  Vector<double> expected(13);
  expected << 1, 3, 5, 2, 4, 6, 7, 8, 9, 10, 11, 12, 13;  // column-major weights
  CHECK(flowmatch::parameter_count(model) == 13);
  CHECK(flowmatch::gather_parameters(model) == expected);
  CHECK(flowmatch::flatten_layers(model.weights, model.biases) == expected);

  const Vector<double> doubled = 2.0 * expected;
  flowmatch::scatter_parameters<TwoLayerModel>(doubled, model);
  CHECK(model.weights[0](2, 1) == 12.0);
  CHECK(model.biases[1](0) == 26.0);
  std::vector<Matrix<double>> weights{Matrix<double>(3, 2), Matrix<double>(1, 3)};
  std::vector<Vector<double>> biases{Vector<double>(3), Vector<double>(1)};
  flowmatch::unflatten_layers<double>(expected, weights, biases);
  CHECK(weights[0](2, 1) == 6.0);
  CHECK(flowmatch::flatten_layers(weights, biases) == expected);

  CHECK_THROWS_WITH(flowmatch::scatter_parameters<TwoLayerModel>(Vector<double>::Zero(12), model),
                    Catch::Contains("12 entries, expected 13"));
  Vector<double> bad = expected;
  bad(4) = std::nan("");
  CHECK_THROWS_AS(flowmatch::scatter_parameters<TwoLayerModel>(bad, model), std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::unflatten_layers<double>(Vector<double>::Zero(14), weights, biases),
                  std::invalid_argument);
  biases.pop_back();
  CHECK_THROWS_WITH(
      flowmatch::flatten_layers(weights, biases),
      Catch::Contains("flatten_layers: layers are 2 weight matrices and 1 bias vectors"));
}

TEST_CASE("clipping scales the global norm to the threshold and leaves small ones", "[clip]") {
  Vector<double> gradient = vector2(3.0, 4.0);
  CHECK(flowmatch::clip_by_global_norm(gradient, 1.0) == 5.0);
  CHECK_THAT(gradient(0), WithinAbs(0.6, 1e-15));
  CHECK_THAT(gradient(1), WithinAbs(0.8, 1e-15));

  const Vector<double> small = vector2(0.3, 0.4);
  gradient = small;
  CHECK_THAT(flowmatch::clip_by_global_norm(gradient, 1.0), WithinAbs(0.5, 1e-16));
  CHECK(gradient == small);

  std::mt19937_64 generator(1);
  std::normal_distribution<double> normal(0.0, 100.0);
  Vector<double> large(1000);
  for (double& value : large) value = normal(generator);
  const Vector<double> direction = large.normalized();
  flowmatch::clip_by_global_norm(large, 2.5);
  CHECK_THAT(large.norm(), WithinRel(2.5, 1e-14));
  CHECK((large.normalized() - direction).cwiseAbs().maxCoeff() < 1e-15);

  CHECK_THROWS_AS(flowmatch::clip_by_global_norm(gradient, 0.0), std::invalid_argument);
  CHECK_THROWS_WITH(flowmatch::clip_by_global_norm(gradient, -1.0),
                    Catch::Contains("max_norm is -1"));
  gradient(1) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_AS(flowmatch::clip_by_global_norm(gradient, 1.0), std::invalid_argument);
}

TEST_CASE("Adam matches three steps computed by hand", "[adam]") {
  // β₁ = 0.9, β₂ = 0.999, ε = 1e-8, η = 0.1, θ₀ = (1, −2);
  // g₁ = (0.5, −1), g₂ = (−0.3, 2), g₃ = (0.2, 0.1).
  flowmatch::AdamOptions<double> options;
  options.weight_decay = 0.0;
  flowmatch::Adam<double> adam(2, options);
  Vector<double> theta = vector2(1.0, -2.0);
  const double eta = 0.1;
  const double eps = 1e-8;

  // Step 1: m = (0.05, −0.1), v = (0.00025, 0.001), m̂ = g, v̂ = g².
  adam.step(theta, vector2(0.5, -1.0), eta);
  CHECK_THAT(adam.state().first_moment(0), WithinRel(0.05, 1e-14));
  CHECK_THAT(adam.state().second_moment(1), WithinRel(0.001, 1e-14));
  Vector<double> expected = vector2(1.0 - eta * 0.5 / (0.5 + eps), -2.0 + eta * 1.0 / (1.0 + eps));
  CHECK_THAT(theta(0), WithinAbs(expected(0), 1e-15));
  CHECK_THAT(theta(1), WithinAbs(expected(1), 1e-15));

  // Step 2: m = 0.9·m + 0.1·g₂ = (0.015, 0.11), v = 0.999·v + 0.001·g₂² = (0.00033975, 0.004999);
  // bias corrections 1 − 0.9² = 0.19 and 1 − 0.999² = 0.001999.
  adam.step(theta, vector2(-0.3, 2.0), eta);
  CHECK_THAT(adam.state().first_moment(0), WithinRel(0.015, 1e-14));
  CHECK_THAT(adam.state().first_moment(1), WithinRel(0.11, 1e-14));
  CHECK_THAT(adam.state().second_moment(0), WithinRel(0.00033975, 1e-14));
  CHECK_THAT(adam.state().second_moment(1), WithinRel(0.004999, 1e-14));
  for (const Index k : {0, 1}) {
    const double m = k == 0 ? 0.015 : 0.11;
    const double v = k == 0 ? 0.00033975 : 0.004999;
    expected(k) -= eta * (m / 0.19) / (std::sqrt(v / 0.001999) + eps);
    CHECK_THAT(theta(k), WithinAbs(expected(k), 1e-14));
  }

  // Step 3: m = (0.0335, 0.109), v = (0.00037941025, 0.005004001); corrections 0.271 and
  // 0.002997001.
  adam.step(theta, vector2(0.2, 0.1), eta);
  CHECK(adam.state().step == 3);
  for (const Index k : {0, 1}) {
    const double m = k == 0 ? 0.0335 : 0.109;
    const double v = k == 0 ? 0.00037941025 : 0.005004001;
    CHECK_THAT(adam.state().first_moment(k), WithinRel(m, 1e-14));
    CHECK_THAT(adam.state().second_moment(k), WithinRel(v, 1e-14));
    expected(k) -= eta * (m / 0.271) / (std::sqrt(v / 0.002997001) + eps);
    CHECK_THAT(theta(k), WithinAbs(expected(k), 1e-14));
  }
}

TEST_CASE("Adam weight decay: L2 in the gradient, decoupled outside the step", "[adam]") {
  const double eta = 0.1;
  const double eps = 1e-8;
  const double lambda = 0.01;
  const Vector<double> theta0 = vector2(1.0, -2.0);
  const Vector<double> gradient = vector2(0.5, -1.0);

  flowmatch::AdamOptions<double> options;
  options.weight_decay = lambda;
  options.weight_decay_mode = flowmatch::WeightDecay::decoupled;
  flowmatch::Adam<double> adamw(2, options);
  Vector<double> theta = theta0;
  adamw.step(theta, gradient, eta);
  // θ₁ = θ₀ − ηλθ₀ − η·g/(|g| + ε) (the first bias-corrected step is g/(|g| + ε)).
  for (const Index k : {0, 1}) {
    const double g = gradient(k);
    CHECK_THAT(
        theta(k),
        WithinAbs(theta0(k) - eta * lambda * theta0(k) - eta * g / (std::abs(g) + eps), 1e-15));
  }

  options.weight_decay_mode = flowmatch::WeightDecay::l2;
  flowmatch::Adam<double> adam_l2(2, options);
  theta = theta0;
  adam_l2.step(theta, gradient, eta);
  // g' = g + λθ₀ = (0.51, −1.02); θ₁ = θ₀ − η·g'/(|g'| + ε).
  const Vector<double> decayed = vector2(0.51, -1.02);
  for (const Index k : {0, 1}) {
    CHECK_THAT(theta(k),
               WithinAbs(theta0(k) - eta * decayed(k) / (std::abs(decayed(k)) + eps), 1e-15));
  }
  CHECK_THAT(adam_l2.state().first_moment(1), WithinRel(-0.102, 1e-14));
}

TEST_CASE("SGD with momentum and Nesterov matches steps computed by hand", "[sgd]") {
  // η = 0.1, μ = 0.9, θ₀ = (1, −2), g₁ = (0.5, −1), g₂ = (−0.3, 2).
  const Vector<double> g1 = vector2(0.5, -1.0);
  const Vector<double> g2 = vector2(-0.3, 2.0);
  flowmatch::SgdOptions<double> options;
  options.momentum = 0.9;
  flowmatch::Sgd<double> heavy_ball(2, options);
  Vector<double> theta = vector2(1.0, -2.0);
  // b₁ = g₁, θ₁ = (0.95, −1.9); b₂ = 0.9·b₁ + g₂ = (0.15, 1.1), θ₂ = (0.935, −2.01).
  heavy_ball.step(theta, g1, 0.1);
  CHECK_THAT(theta(0), WithinAbs(0.95, 1e-15));
  CHECK_THAT(theta(1), WithinAbs(-1.9, 1e-15));
  heavy_ball.step(theta, g2, 0.1);
  CHECK_THAT(heavy_ball.state().momentum_buffer(0), WithinAbs(0.15, 1e-15));
  CHECK_THAT(heavy_ball.state().momentum_buffer(1), WithinAbs(1.1, 1e-15));
  CHECK_THAT(theta(0), WithinAbs(0.935, 1e-15));
  CHECK_THAT(theta(1), WithinAbs(-2.01, 1e-15));
  CHECK(heavy_ball.state().step == 2);

  // Nesterov: d₁ = g₁ + 0.9·b₁ = (0.95, −1.9), θ₁ = (0.905, −1.81);
  // d₂ = g₂ + 0.9·(0.15, 1.1) = (−0.165, 2.99), θ₂ = (0.9215, −2.109).
  options.nesterov = true;
  flowmatch::Sgd<double> nesterov(2, options);
  theta = vector2(1.0, -2.0);
  nesterov.step(theta, g1, 0.1);
  CHECK_THAT(theta(0), WithinAbs(0.905, 1e-15));
  CHECK_THAT(theta(1), WithinAbs(-1.81, 1e-15));
  nesterov.step(theta, g2, 0.1);
  CHECK_THAT(theta(0), WithinAbs(0.9215, 1e-15));
  CHECK_THAT(theta(1), WithinAbs(-2.109, 1e-15));

  // Plain SGD with L2 decay λ = 0.1: θ₁ = θ₀ − η(g₁ + λθ₀) = (0.94, −1.88).
  flowmatch::SgdOptions<double> plain;
  plain.weight_decay = 0.1;
  flowmatch::Sgd<double> decayed(2, plain);
  theta = vector2(1.0, -2.0);
  decayed.step(theta, g1, 0.1);
  CHECK_THAT(theta(0), WithinAbs(0.94, 1e-15));
  CHECK_THAT(theta(1), WithinAbs(-1.88, 1e-15));
}

TEST_CASE("Adam minimises a convex quadratic to tight tolerance", "[adam]") {
  // f(θ) = ½(θ − θ*)ᵀA(θ − θ*) with A symmetric positive definite, ∇f = A(θ − θ*).
  const Index n = 5;
  std::mt19937_64 generator(1);
  std::normal_distribution<double> normal;
  Matrix<double> basis(n, n);
  for (double& value : basis.reshaped()) value = normal(generator);
  const Matrix<double> a = basis * basis.transpose() + Matrix<double>::Identity(n, n);
  Vector<double> optimum(n);
  optimum << 1, -2, 3, 0.5, -0.25;
  flowmatch::Adam<double> adam(n);
  const flowmatch::LinearWarmup schedule(100, flowmatch::CosineSchedule<double>(0.05, 0.0, 4000));
  Vector<double> theta = Vector<double>::Zero(n);
  for (std::int64_t step = 0; step < 4100; ++step) {
    adam.step(theta, a * (theta - optimum), schedule(step));
  }
  CHECK((theta - optimum).norm() < 1e-8);
}

TEST_CASE("restoring optimiser and average state continues bit for bit", "[adam][sgd][ema]") {
  std::mt19937_64 generator(2);
  std::normal_distribution<double> normal;
  const Index n = 7;
  std::vector<Vector<double>> gradients;
  for (int k = 0; k < 10; ++k) {
    Vector<double> gradient(n);
    for (double& value : gradient) value = normal(generator);
    gradients.push_back(gradient);
  }
  flowmatch::AdamOptions<double> adam_options;
  adam_options.weight_decay = 0.01;
  flowmatch::SgdOptions<double> sgd_options;
  sgd_options.momentum = 0.9;
  sgd_options.nesterov = true;
  const Vector<double> start = Vector<double>::LinSpaced(n, -1.0, 1.0);

  // Run 10 steps straight; and 5 steps, a checkpoint, a fresh optimiser restored, 5 steps.
  flowmatch::Adam<double> adam(n, adam_options);
  flowmatch::Sgd<double> sgd(n, sgd_options);
  Vector<double> adam_theta = start;
  Vector<double> sgd_theta = start;
  flowmatch::ExponentialMovingAverage<double> ema(start, 0.99, true);
  flowmatch::AdamState<double> adam_checkpoint;
  flowmatch::SgdState<double> sgd_checkpoint;
  flowmatch::EmaState<double> ema_checkpoint;
  Vector<double> adam_theta_checkpoint, sgd_theta_checkpoint;
  for (int k = 0; k < 10; ++k) {
    if (k == 5) {
      adam_checkpoint = adam.state();
      sgd_checkpoint = sgd.state();
      ema_checkpoint = ema.state();
      adam_theta_checkpoint = adam_theta;
      sgd_theta_checkpoint = sgd_theta;
    }
    adam.step(adam_theta, gradients[k], 1e-2);
    sgd.step(sgd_theta, gradients[k], 1e-2);
    ema.update(adam_theta);
  }

  flowmatch::Adam<double> adam_restored(n, adam_options);
  flowmatch::Sgd<double> sgd_restored(n, sgd_options);
  flowmatch::ExponentialMovingAverage<double> ema_restored(Vector<double>::Zero(n), 0.99, true);
  adam_restored.set_state(adam_checkpoint);
  sgd_restored.set_state(sgd_checkpoint);
  ema_restored.set_state(ema_checkpoint);
  for (int k = 5; k < 10; ++k) {
    adam_restored.step(adam_theta_checkpoint, gradients[k], 1e-2);
    sgd_restored.step(sgd_theta_checkpoint, gradients[k], 1e-2);
    ema_restored.update(adam_theta_checkpoint);
  }
  CHECK(adam_theta_checkpoint == adam_theta);
  CHECK(adam_restored.state().first_moment == adam.state().first_moment);
  CHECK(adam_restored.state().second_moment == adam.state().second_moment);
  CHECK(adam_restored.state().step == 10);
  CHECK(sgd_theta_checkpoint == sgd_theta);
  CHECK(ema_restored.average() == ema.average());
  CHECK(ema_restored.state().updates == 10);
}

TEST_CASE("optimisers reject invalid options, shapes and states", "[adam][sgd]") {
  flowmatch::AdamOptions<double> adam_options;
  CHECK_THROWS_AS(flowmatch::Adam<double>(0), std::invalid_argument);
  adam_options.beta1 = 1.0;
  CHECK_THROWS_WITH(flowmatch::Adam<double>(2, adam_options), Catch::Contains("beta1 is 1"));
  adam_options.beta1 = 0.9;
  adam_options.beta2 = -0.1;
  CHECK_THROWS_WITH(flowmatch::Adam<double>(2, adam_options), Catch::Contains("beta2"));
  adam_options.beta2 = 0.999;
  adam_options.epsilon = 0.0;
  CHECK_THROWS_WITH(flowmatch::Adam<double>(2, adam_options), Catch::Contains("epsilon"));
  adam_options.epsilon = 1e-8;
  adam_options.weight_decay = std::nan("");
  CHECK_THROWS_WITH(flowmatch::Adam<double>(2, adam_options), Catch::Contains("weight_decay"));

  flowmatch::Adam<double> adam(2);
  Vector<double> theta = vector2(1.0, 2.0);
  CHECK_THROWS_WITH(adam.step(theta, Vector<double>::Zero(3), 0.1),
                    Catch::Contains("gradient has shape 3x1"));
  CHECK_THROWS_AS(adam.step(theta, vector2(std::nan(""), 0.0), 0.1), std::invalid_argument);
  CHECK_THROWS_WITH(adam.step(theta, vector2(1.0, 0.0), -0.1),
                    Catch::Contains("learning_rate is -0.1"));
  CHECK(theta == vector2(1.0, 2.0));
  CHECK(adam.state().step == 0);
  flowmatch::AdamState<double> state = adam.state();
  state.second_moment(0) = -1.0;
  CHECK_THROWS_WITH(adam.set_state(state), Catch::Contains("second_moment"));
  state.second_moment(0) = 0.0;
  state.step = -1;
  CHECK_THROWS_AS(adam.set_state(state), std::invalid_argument);
  state.step = 0;
  state.first_moment = Vector<double>::Zero(3);
  CHECK_THROWS_AS(adam.set_state(state), std::invalid_argument);

  flowmatch::SgdOptions<double> sgd_options;
  sgd_options.nesterov = true;
  CHECK_THROWS_WITH(flowmatch::Sgd<double>(2, sgd_options), Catch::Contains("nesterov"));
  sgd_options.momentum = 1.5;
  CHECK_THROWS_WITH(flowmatch::Sgd<double>(2, sgd_options), Catch::Contains("momentum is 1.5"));
  flowmatch::Sgd<double> sgd(2);
  CHECK_THROWS_AS(sgd.step(theta, Vector<double>::Zero(1), 0.1), std::invalid_argument);
  flowmatch::SgdState<double> sgd_state = sgd.state();
  sgd_state.momentum_buffer(1) = std::numeric_limits<double>::infinity();
  CHECK_THROWS_AS(sgd.set_state(sgd_state), std::invalid_argument);
}

TEST_CASE("the optimisers work in float", "[adam][sgd]") {
  flowmatch::Adam<float> adam(2);
  Vector<float> theta = Vector<float>::Zero(2);
  Vector<float> gradient(2);
  gradient << 1.0f, -1.0f;
  adam.step(theta, gradient, 0.1f);
  CHECK_THAT(theta(0), WithinAbs(-0.1, 1e-6));
  flowmatch::Sgd<float> sgd(2);
  sgd.step(theta, gradient, 0.1f);
  CHECK_THAT(theta(1), WithinAbs(0.2, 1e-6));
}

TEST_CASE("the moving average follows the closed form of its recursion", "[ema]") {
  // With θ_k = r^k·c: θ̄_n = dⁿc + (1 − d)·Σ_{k=1}^{n} d^{n−k} r^k c
  //                       = [dⁿ + (1 − d)·r·(dⁿ − rⁿ)/(d − r)]·c.
  const double d = 0.9;
  const double r = 0.5;
  const Vector<double> c = vector2(2.0, -3.0);
  flowmatch::ExponentialMovingAverage<double> ema(c, d);
  double power = 1.0;
  for (int k = 1; k <= 20; ++k) {
    power *= r;
    ema.update(power * c);
  }
  const double factor =
      std::pow(d, 20) + (1 - d) * r * (std::pow(d, 20) - std::pow(r, 20)) / (d - r);
  CHECK_THAT(ema.average()(0), WithinRel(factor * c(0), 1e-13));
  CHECK_THAT(ema.average()(1), WithinRel(factor * c(1), 1e-13));
  CHECK(ema.state().updates == 20);

  // Warm-up: d_n = min(decay, (1 + n)/(10 + n)); the first update uses 2/11.
  flowmatch::ExponentialMovingAverage<double> warm(c, 0.999, true);
  CHECK_THAT(warm.decay_at(1), WithinAbs(2.0 / 11.0, 1e-16));
  CHECK_THAT(warm.decay_at(8000), WithinAbs(8001.0 / 8010.0, 1e-16));
  CHECK(warm.decay_at(9000) == 0.999);
  CHECK(ema.decay_at(1) == 0.9);
  const Vector<double> next = vector2(1.0, 1.0);
  warm.update(next);
  CHECK_THAT(warm.average()(0), WithinAbs(2.0 / 11.0 * 2.0 + 9.0 / 11.0 * 1.0, 1e-15));
  CHECK_THAT(warm.average()(1), WithinAbs(2.0 / 11.0 * -3.0 + 9.0 / 11.0 * 1.0, 1e-15));

  CHECK_THROWS_AS(flowmatch::ExponentialMovingAverage<double>(c, 1.5), std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::ExponentialMovingAverage<double>(Vector<double>(0), 0.5),
                  std::invalid_argument);
  CHECK_THROWS_WITH(warm.update(Vector<double>::Zero(3)), Catch::Contains("parameters"));
  CHECK_THROWS_AS(warm.update(vector2(std::nan(""), 0.0)), std::invalid_argument);
  CHECK_THROWS_AS(warm.decay_at(0), std::invalid_argument);
  flowmatch::EmaState<double> state = warm.state();
  state.updates = -2;
  CHECK_THROWS_AS(warm.set_state(state), std::invalid_argument);
}

TEST_CASE("learning-rate schedules match their formulas", "[schedule]") {
  const flowmatch::ConstantSchedule<double> constant(0.3);
  CHECK(constant(0) == 0.3);
  CHECK(constant(123456) == 0.3);

  // η(s) = 0.1 + 0.9·(1 + cos(π s/100))/2 up to s = 100, then 0.1.
  const flowmatch::CosineSchedule<double> cosine(1.0, 0.1, 100);
  CHECK_THAT(cosine(0), WithinAbs(1.0, 1e-15));
  CHECK_THAT(cosine(25), WithinAbs(0.1 + 0.9 * (1 + std::sqrt(0.5)) / 2, 1e-15));
  CHECK_THAT(cosine(50), WithinAbs(0.55, 1e-15));
  CHECK_THAT(cosine(75), WithinAbs(0.1 + 0.9 * (1 - std::sqrt(0.5)) / 2, 1e-15));
  CHECK_THAT(cosine(100), WithinAbs(0.1, 1e-15));
  CHECK(cosine(1000) == cosine(100));

  // Warm-up over 10 steps: η(s) = inner(0)·(s + 1)/10, then the inner schedule from its start.
  const flowmatch::LinearWarmup warm_cosine(10, cosine);
  CHECK_THAT(warm_cosine(0), WithinAbs(0.1, 1e-15));
  CHECK_THAT(warm_cosine(4), WithinAbs(0.5, 1e-15));
  CHECK_THAT(warm_cosine(9), WithinAbs(1.0, 1e-15));
  CHECK(warm_cosine(10) == cosine(0));
  CHECK(warm_cosine(60) == cosine(50));
  const flowmatch::LinearWarmup warm_constant(4, constant);
  CHECK_THAT(warm_constant(1), WithinAbs(0.15, 1e-16));
  CHECK(warm_constant(4) == 0.3);
  static_assert(flowmatch::LearningRateSchedule<decltype(warm_cosine)>);

  CHECK_THROWS_AS(flowmatch::ConstantSchedule<double>(-1.0), std::invalid_argument);
  CHECK_THROWS_WITH(flowmatch::CosineSchedule<double>(0.1, 0.2, 10), Catch::Contains("minimum"));
  CHECK_THROWS_WITH(flowmatch::CosineSchedule<double>(0.1, 0.0, 0),
                    Catch::Contains("total_steps is 0"));
  CHECK_THROWS_AS(flowmatch::LinearWarmup(0, constant), std::invalid_argument);
  CHECK_THROWS_WITH(cosine(-1), Catch::Contains("step is -1"));
  CHECK_THROWS_AS(warm_cosine(-1), std::invalid_argument);
}

TEST_CASE("checkerboard samples lie on the black squares with the exact moments", "[data]") {
  std::mt19937_64 generator(3);
  const Index n = 100000;
  const Matrix<double> batch = flowmatch::sample_checkerboard(n, generator);
  std::vector<int> per_square(16, 0);
  bool all_black = true;
  for (Index k = 0; k < n; ++k) {
    const double x = batch(0, k);
    const double y = batch(1, k);
    REQUIRE(x >= -4.0);
    REQUIRE(x < 4.0);
    REQUIRE(y >= -4.0);
    REQUIRE(y < 4.0);
    const int i = static_cast<int>(std::floor((x + 4.0) / 2.0));
    const int j = static_cast<int>(std::floor((y + 4.0) / 2.0));
    all_black = all_black && (i + j) % 2 == 0;
    ++per_square[4 * i + j];
  }
  CHECK(all_black);
  // Each black square has probability 1/8 (standard deviation 0.001 at this n).
  for (int square = 0; square < 16; ++square) {
    if ((square / 4 + square % 4) % 2 == 0) {
      CHECK_THAT(per_square[square] / static_cast<double>(n), WithinAbs(0.125, 0.006));
    }
  }
  // Mean 0; Var x = E c² + 1/3 = 16/3 over the square centres c, Cov = E c_x c_y = 1.
  const Moments m = moments(batch);
  CHECK(m.mean.cwiseAbs().maxCoeff() < 0.04);
  CHECK_THAT(m.covariance(0, 0), WithinAbs(16.0 / 3.0, 0.08));
  CHECK_THAT(m.covariance(1, 1), WithinAbs(16.0 / 3.0, 0.08));
  CHECK_THAT(m.covariance(0, 1), WithinAbs(1.0, 0.08));

  std::mt19937_64 same(3);
  CHECK(flowmatch::sample_checkerboard(n, same) == batch);
  CHECK(flowmatch::sample_checkerboard(0, same).cols() == 0);
  CHECK_THROWS_WITH(flowmatch::sample_checkerboard(-1, same), Catch::Contains("n is -1"));
}

TEST_CASE("eight Gaussians have mean 0 and covariance (r²/2 + s²)I", "[data]") {
  std::mt19937_64 generator(4);
  const Index n = 100000;
  const double radius = 5.0;
  const double sd = std::sqrt(0.1);
  const Matrix<double> batch = flowmatch::sample_eight_gaussians(n, generator);
  const Moments m = moments(batch);
  CHECK(m.mean.cwiseAbs().maxCoeff() < 0.06);
  CHECK_THAT(m.covariance(0, 0), WithinAbs(radius * radius / 2 + sd * sd, 0.25));
  CHECK_THAT(m.covariance(1, 1), WithinAbs(radius * radius / 2 + sd * sd, 0.25));
  CHECK_THAT(m.covariance(0, 1), WithinAbs(0.0, 0.25));
  // The squared distance to the nearest centre over s² is χ²₂ (the components are far apart):
  // P(distance < 2s) = 1 − e^{−2}.
  Index near = 0;
  for (Index k = 0; k < n; ++k) {
    double nearest = std::numeric_limits<double>::infinity();
    for (int c = 0; c < 8; ++c) {
      const double angle = std::numbers::pi * c / 4;
      nearest = std::min(nearest, std::hypot(batch(0, k) - radius * std::cos(angle),
                                             batch(1, k) - radius * std::sin(angle)));
    }
    near += nearest < 2 * sd ? 1 : 0;
  }
  CHECK_THAT(near / static_cast<double>(n), WithinAbs(1 - std::exp(-2.0), 0.007));

  const auto mixture = flowmatch::eight_gaussians(2.0, 0.5);
  CHECK(mixture.dim() == 2);
  std::mt19937_64 same(4);
  CHECK(flowmatch::sample_eight_gaussians(n, same) == batch);
  CHECK_THROWS_AS(flowmatch::eight_gaussians(-1.0, 0.5), std::invalid_argument);
  CHECK_THROWS_WITH(flowmatch::sample_eight_gaussians(3, same, 5.0, 0.0),
                    Catch::Contains("standard_deviation is 0"));
  CHECK_THROWS_AS(flowmatch::sample_eight_gaussians(-3, same), std::invalid_argument);
}

TEST_CASE("two moons lie on their arcs and have the exact moments", "[data]") {
  std::mt19937_64 generator(5);
  // Without noise every point is exactly on one arc.
  const Matrix<double> clean = flowmatch::sample_two_moons(1000, generator, 0.0);
  Index upper = 0;
  for (Index k = 0; k < clean.cols(); ++k) {
    const double x = clean(0, k);
    const double y = clean(1, k);
    const bool on_upper = std::abs(std::hypot(x, y) - 1.0) < 1e-12 && y >= 0.0;
    const bool on_lower = std::abs(std::hypot(x - 1.0, y - 0.5) - 1.0) < 1e-12 && y <= 0.5;
    CHECK((on_upper || on_lower));
    upper += on_upper ? 1 : 0;
  }
  CHECK(upper > 400);
  CHECK(upper < 600);

  // With noise σ: mean (1/2, 1/4), covariance [[3/4, 1/8 − 1/π], [1/8 − 1/π, 9/16 − 1/π]] + σ²I.
  const double noise = 0.1;
  const Matrix<double> batch = flowmatch::sample_two_moons(100000, generator, noise);
  const Moments m = moments(batch);
  CHECK_THAT(m.mean(0), WithinAbs(0.5, 0.02));
  CHECK_THAT(m.mean(1), WithinAbs(0.25, 0.02));
  const double pi = std::numbers::pi;
  CHECK_THAT(m.covariance(0, 0), WithinAbs(0.75 + noise * noise, 0.02));
  CHECK_THAT(m.covariance(1, 1), WithinAbs(9.0 / 16 - 1 / pi + noise * noise, 0.02));
  CHECK_THAT(m.covariance(0, 1), WithinAbs(1.0 / 8 - 1 / pi, 0.02));

  std::mt19937_64 a(6), b(6);
  CHECK(flowmatch::sample_two_moons(50, a) == flowmatch::sample_two_moons(50, b));
  CHECK_THROWS_WITH(flowmatch::sample_two_moons(5, a, -0.1), Catch::Contains("noise is -0.1"));
}

TEST_CASE("circles lie on their two radii and have the exact moments", "[data]") {
  std::mt19937_64 generator(7);
  const Matrix<double> clean = flowmatch::sample_circles(1000, generator, 2.0, 0.5, 0.0);
  const Vector<double> radii = clean.colwise().norm().transpose();
  Index outer = 0;
  for (const double radius : radii) {
    CHECK((std::abs(radius - 2.0) < 1e-12 || std::abs(radius - 0.5) < 1e-12));
    outer += std::abs(radius - 2.0) < 1e-12 ? 1 : 0;
  }
  CHECK(outer > 400);
  CHECK(outer < 600);

  // Mean 0, covariance ((r₁² + r₂²)/4 + σ²)I for the defaults r₁ = 1, r₂ = 1/2.
  const double noise = 0.05;
  const Matrix<double> batch = flowmatch::sample_circles(100000, generator);
  const Moments m = moments(batch);
  const double variance = (1.0 + 0.25) / 4 + noise * noise;
  CHECK(m.mean.cwiseAbs().maxCoeff() < 0.01);
  CHECK_THAT(m.covariance(0, 0), WithinAbs(variance, 0.01));
  CHECK_THAT(m.covariance(1, 1), WithinAbs(variance, 0.01));
  CHECK_THAT(m.covariance(0, 1), WithinAbs(0.0, 0.01));

  std::mt19937_64 a(8), b(8);
  CHECK(flowmatch::sample_circles(50, a) == flowmatch::sample_circles(50, b));
  const Matrix<float> in_float = flowmatch::sample_circles<float>(10, a, 1.0f, 0.5f, 0.0f);
  CHECK(in_float.allFinite());
  CHECK_THROWS_WITH(flowmatch::sample_circles(5, a, 1.0, -0.5), Catch::Contains("inner_radius"));
  CHECK_THROWS_AS(flowmatch::sample_circles(5, a, 1.0, 0.5, std::nan("")), std::invalid_argument);
}

TEST_CASE("uniform training times have the moments of U[0, 1]", "[time]") {
  std::mt19937_64 generator(9);
  const Index n = 100000;
  const Vector<double> times = flowmatch::sample_uniform_times(n, generator);
  CHECK(times.minCoeff() >= 0.0);
  CHECK(times.maxCoeff() < 1.0);
  // Mean 1/2 and variance 1/12 (standard errors 0.0009 and 0.0003 at this n).
  CHECK_THAT(times.mean(), WithinAbs(0.5, 0.005));
  CHECK_THAT((times.array() - times.mean()).square().mean(), WithinAbs(1.0 / 12.0, 0.002));
  std::mt19937_64 same(9);
  CHECK(flowmatch::sample_uniform_times(n, same) == times);
  CHECK(flowmatch::sample_uniform_times<float>(3, same).size() == 3);
  CHECK_THROWS_WITH(flowmatch::sample_uniform_times(-2, same), Catch::Contains("n is -2"));
}

TEST_CASE("logit-normal times match their density, median and quantiles", "[time]") {
  const double location = 0.5;
  const double scale = 0.8;
  // The density integrates to 1 and its mean, by the midpoint rule on a fine grid (the density
  // vanishes faster than any power at both ends).
  const int cells = 200000;
  double mass = 0;
  double mean = 0;
  for (int cell = 0; cell < cells; ++cell) {
    const double t = (cell + 0.5) / cells;
    const double weight = flowmatch::logit_normal_density(t, location, scale) / cells;
    mass += weight;
    mean += t * weight;
  }
  CHECK_THAT(mass, WithinAbs(1.0, 1e-9));

  std::mt19937_64 generator(10);
  const Index n = 100000;
  const Vector<double> times = flowmatch::sample_logit_normal_times(n, generator, location, scale);
  CHECK(times.minCoeff() >= 0.0);
  CHECK(times.maxCoeff() <= 1.0);
  // Sample mean against the quadrature mean (the standard deviation of t is below 0.2, so the
  // standard error is below 0.0007).
  CHECK_THAT(times.mean(), WithinAbs(mean, 0.004));
  // P(t ≤ sigmoid(m)) = 1/2 and P(t ≤ sigmoid(m + s)) = Φ(1) = 0.8413447.
  const auto sigmoid = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
  CHECK_THAT((times.array() <= sigmoid(location)).cast<double>().mean(), WithinAbs(0.5, 0.008));
  CHECK_THAT((times.array() <= sigmoid(location + scale)).cast<double>().mean(),
             WithinAbs(0.8413447460685429, 0.006));
  // With m = 0 the distribution is symmetric about 1/2.
  const Vector<double> symmetric = flowmatch::sample_logit_normal_times(n, generator);
  CHECK_THAT(symmetric.mean(), WithinAbs(0.5, 0.004));
  CHECK_THAT(flowmatch::logit_normal_density(0.3, 0.0, 1.0),
             WithinRel(flowmatch::logit_normal_density(0.7, 0.0, 1.0), 1e-14));
  CHECK(flowmatch::logit_normal_density(0.0, 0.0, 1.0) == 0.0);
  CHECK(flowmatch::logit_normal_density(1.0, 0.0, 1.0) == 0.0);

  std::mt19937_64 a(11), b(11);
  CHECK(flowmatch::sample_logit_normal_times(20, a) == flowmatch::sample_logit_normal_times(20, b));
  CHECK_THROWS_WITH(flowmatch::sample_logit_normal_times(5, a, 0.0, 0.0),
                    Catch::Contains("scale is 0"));
  CHECK_THROWS_WITH(flowmatch::sample_logit_normal_times(5, a, std::nan(""), 1.0),
                    Catch::Contains("location"));
  CHECK_THROWS_AS(flowmatch::sample_logit_normal_times(-1, a), std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::logit_normal_density(1.5, 0.0, 1.0), std::domain_error);
}

namespace {

using Trainer = flowmatch::FlowMatchingTrainer<double>;

// Points of N(mean, 0.25·I) in the plane with mean (4, −3), drawn fresh at every step.
Matrix<double> shifted_normal(Index count, std::mt19937_64& generator) {
  Matrix<double> points = 0.5 * flowmatch::StandardNormal::sample<double>(2, count, generator);
  points.row(0).array() += 4.0;
  points.row(1).array() -= 3.0;
  return points;
}

// A trainer of a 2 → 24 → 24 → 2 SiLU network (conditional on one-hot labels of the two half
// planes, with label dropout 0.2, if @p conditional) with the given chunking and threads.
Trainer chunked_trainer(bool conditional, Index batch_size, Index chunk_columns, int threads) {
  flowmatch::MlpConfig config;
  config.dim = 2;
  config.cond_dim = conditional ? 2 : 0;
  config.hidden = {24, 24};
  std::mt19937_64 initialisation(11);
  flowmatch::Mlp<double> model(config, initialisation);
  flowmatch::TrainerOptions<double> options;
  options.batch_size = batch_size;
  options.learning_rate = flowmatch::ConstantSchedule<double>(1e-2);
  options.chunk_columns = chunk_columns;
  options.threads = threads;
  auto objective = flowmatch::FlowMatchingObjective<double>::independent(0.1);
  if (!conditional) return {std::move(model), objective, shifted_normal, options, 5};
  std::mt19937_64 generator(3);
  const Matrix<double> data = shifted_normal(400, generator);
  Matrix<double> labels = Matrix<double>::Zero(2, data.cols());
  for (Index k = 0; k < data.cols(); ++k) labels(data(0, k) > 4.0 ? 0 : 1, k) = 1.0;
  objective.label_dropout = 0.2;
  return {std::move(model), objective, Trainer::resample(data, labels), options, 5};
}

struct TrainedRun {
  Vector<double> parameters;
  std::vector<double> losses;
};

TrainedRun train_steps(Trainer trainer, int steps) {
  TrainedRun run;
  for (int step = 0; step < steps; ++step) run.losses.push_back(trainer.step());
  run.parameters = flowmatch::gather_parameters(trainer.model());
  return run;
}

Vector<double> flat_gradient(const Trainer& trainer) {
  return flowmatch::flatten_layers(trainer.gradient().weights, trainer.gradient().biases);
}

}  // namespace

TEST_CASE("chunked training is bit for bit the same on 1, 2 and 3 threads", "[training][threads]") {
  for (const bool conditional : {false, true}) {
    CAPTURE(conditional);
    // 300 columns in chunks of 64: four full chunks and one of 44.
    const TrainedRun one = train_steps(chunked_trainer(conditional, 300, 64, 1), 20);
    for (const int threads : {2, 3}) {
      CAPTURE(threads);
      const TrainedRun threaded = train_steps(chunked_trainer(conditional, 300, 64, threads), 20);
      CHECK(threaded.losses == one.losses);
      CHECK(threaded.parameters == one.parameters);
    }
  }
}

TEST_CASE("the chunked loss and gradient are those of the whole batch", "[training][threads]") {
  for (const bool conditional : {false, true}) {
    CAPTURE(conditional);
    Trainer whole = chunked_trainer(conditional, 300, 0, 1);
    Trainer chunked = chunked_trainer(conditional, 300, 64, 2);
    const double whole_loss = whole.step();
    const double chunked_loss = chunked.step();
    // Same seed, same batch: L = (Σ_c S_c)/(N·d) and ∂L/∂θ = Σ_c ∂(S_c/(N·d))/∂θ equal the
    // mean over the whole batch up to the order of the sums.
    CHECK_THAT(chunked_loss, WithinRel(whole_loss, 1e-12));
    const Vector<double> expected = flat_gradient(whole);
    REQUIRE(expected.norm() > 0);
    CHECK((flat_gradient(chunked) - expected).norm() <= 1e-12 * expected.norm());

    // One chunk of at least the batch is the unchunked computation itself.
    const TrainedRun unchunked = train_steps(chunked_trainer(conditional, 300, 0, 1), 5);
    const TrainedRun single_chunk = train_steps(chunked_trainer(conditional, 300, 300, 1), 5);
    const TrainedRun wide_chunk = train_steps(chunked_trainer(conditional, 300, 1000, 2), 5);
    CHECK(single_chunk.parameters == unchunked.parameters);
    CHECK(wide_chunk.parameters == unchunked.parameters);
  }
}

TEST_CASE("a threaded run learns the drift of a shifted normal", "[training][threads]") {
  // Data N(m, 0.25·I) with m = (4, −3), straight paths: an untrained network predicts about 0,
  // so the first losses are near E‖x₁ − x₀‖²/2 = (|m|² + 2·0.25 + 2)/2 = 13.75, while the
  // constant field u = m already reaches E‖x₁ − m − x₀‖²/2 = 1.25 (σ = 0.1 adds 0.01).
  Trainer trainer = chunked_trainer(false, 512, 128, 2);
  const TrainedRun run = train_steps(std::move(trainer), 300);
  const auto mean_loss = [&](std::size_t begin) {
    double sum = 0;
    for (std::size_t step = begin; step < begin + 10; ++step) sum += run.losses[step];
    return sum / 10;
  };
  const double first = mean_loss(0);
  const double last = mean_loss(run.losses.size() - 10);
  CHECK(last < first / 4);
  CHECK(last < 2.0);
}

TEST_CASE("bad chunking and thread options throw", "[training][threads][errors]") {
  CHECK_THROWS_AS(chunked_trainer(false, 64, -1, 1), std::invalid_argument);
  CHECK_THROWS_AS(chunked_trainer(false, 64, 16, 0), std::invalid_argument);
  CHECK_THROWS_WITH(chunked_trainer(false, 64, 0, 2),
                    Catch::Contains("threads is 2 with options.chunk_columns 0"));
  Trainer threaded = chunked_trainer(false, 64, 16, 2);
  threaded.step();
  CHECK(threaded.step_count() == 1);
}

}  // namespace test_train
