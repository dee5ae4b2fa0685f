// Tests of the flow-matching objectives, the loss gradient, the training loop and its
// checkpoints: finite differences, closed forms, the Gaussian-mixture oracle and exact resume.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "checkpoint_support.hpp"
#include "flowmatch/guidance/classifier_free.hpp"
#include "flowmatch/io/io_error.hpp"
#include "flowmatch/likelihood/standard_normal.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/oracle/gaussian_mixture.hpp"
#include "flowmatch/oracle/gaussian_mixture_path.hpp"
#include "flowmatch/path/affine_path.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/scheduler/cosine.hpp"
#include "flowmatch/solver/integrate.hpp"
#include "flowmatch/train/checkpoint.hpp"
#include "flowmatch/train/conditional_paths.hpp"
#include "flowmatch/train/flow_matching_loss.hpp"
#include "flowmatch/train/objective.hpp"
#include "flowmatch/train/trainer.hpp"

namespace test_objective {

namespace {

using Catch::Matchers::WithinAbs;
using Catch::Matchers::WithinRel;
using flowmatch::ConditionalPath;
using flowmatch::CouplingKind;
using flowmatch::FlowMatchingObjective;
using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::Vector;

Matrix<double> standard_normal(Index rows, Index cols, std::mt19937_64& generator) {
  return flowmatch::StandardNormal::sample(rows, cols, generator);
}

flowmatch::Mlp<double> small_network(Index dim, std::vector<Index> hidden, std::uint64_t seed,
                                     Index cond_dim = 0) {
  std::mt19937_64 generator(seed);
  flowmatch::MlpConfig config;
  config.dim = dim;
  config.cond_dim = cond_dim;
  config.hidden = std::move(hidden);
  return flowmatch::Mlp<double>(config, generator);
}

// Every named objective, with the σ each test uses.
std::vector<FlowMatchingObjective<double>> named_objectives() {
  using Objective = FlowMatchingObjective<double>;
  auto cosine = Objective::with(
      ConditionalPath<double>::affine(flowmatch::AffinePath<flowmatch::Cosine<double>>{}, 0.2),
      CouplingKind::independent);
  return {Objective::independent(0.3),
          Objective::optimal_transport(0.2),
          Objective::schrodinger_bridge(0.5),
          Objective::variance_preserving(0.1),
          Objective::target(0.01),
          cosine};
}

// The energy distance 2E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖ between two samples (V-statistics).
double energy_distance(const Matrix<double>& x, const Matrix<double>& y) {
  const auto mean_distance = [](const Matrix<double>& a, const Matrix<double>& b) {
    double total = 0;
    for (Index i = 0; i < a.cols(); ++i) {
      for (Index j = 0; j < b.cols(); ++j) total += (a.col(i) - b.col(j)).norm();
    }
    return total / static_cast<double>(a.cols() * b.cols());
  };
  return 2 * mean_distance(x, y) - mean_distance(x, x) - mean_distance(y, y);
}

}  // namespace

TEST_CASE("the loss is the mean squared error with gradient 2(u_θ − u_t)/(N·d)", "[loss]") {
  Matrix<double> prediction(2, 3);
  prediction << 1, 2, 3, 4, 5, 6;
  Matrix<double> target(2, 3);
  target << 0, 2, 1, 4, 8, 6;
  Matrix<double> gradient(2, 3);
  // Differences 1, 0, 2, 0, −3, 0: squares sum to 14 over 6 entries.
  const double loss =
      flowmatch::flow_matching_loss_and_gradient<double>(prediction, target, gradient);
  CHECK_THAT(loss, WithinRel(14.0 / 6.0, 1e-15));
  Matrix<double> expected(2, 3);
  expected << 2.0 / 6, 0, 4.0 / 6, 0, -6.0 / 6, 0;
  CHECK((gradient - expected).cwiseAbs().maxCoeff() < 1e-15);
}

TEST_CASE("the parameter gradient of the loss matches central finite differences", "[loss]") {
  std::mt19937_64 generator(11);
  flowmatch::Mlp<double> model = small_network(2, {5, 4}, 3);
  const Index count = 7;
  const Matrix<double> x0 = standard_normal(2, count, generator);
  const Matrix<double> x1 = standard_normal(2, count, generator) * 2.0;
  const auto objective = FlowMatchingObjective<double>::schrodinger_bridge(0.4);
  const flowmatch::FlowMatchingBatch<double> batch = objective.make_batch(x0, x1, generator);

  flowmatch::MlpWorkspace<double> workspace;
  flowmatch::MlpGradient<double> gradient;
  const double loss = flowmatch::mlp_flow_matching_loss(model, workspace, batch, gradient);
  const Vector<double> analytic = flowmatch::flatten_layers(gradient.weights, gradient.biases);

  const auto loss_at = [&](const Vector<double>& parameters) {
    flowmatch::Mlp<double> shifted = model;
    flowmatch::scatter_parameters(parameters, shifted);
    Matrix<double> prediction(2, count);
    shifted(batch.t, batch.x_t, prediction);
    return flowmatch::flow_matching_loss<double>(prediction, batch.u_t);
  };
  const Vector<double> parameters = flowmatch::gather_parameters(model);
  CHECK_THAT(loss_at(parameters), WithinRel(loss, 1e-14));
  const double step = 1e-5;
  double worst = 0;
  for (Index k = 0; k < parameters.size(); ++k) {
    Vector<double> plus = parameters;
    Vector<double> minus = parameters;
    plus(k) += step;
    minus(k) -= step;
    const double numeric = (loss_at(plus) - loss_at(minus)) / (2 * step);
    // Central differences: error O(h²·L''') + O(ε·L/h), about 1e-10 here.
    worst = std::max(worst, std::abs(numeric - analytic(k)));
  }
  CHECK(worst < 1e-8 * std::max(1.0, analytic.cwiseAbs().maxCoeff()));
}

TEST_CASE("the loss over blocks of columns adds up to the loss of the batch", "[loss]") {
  // L = (Σ_c S_c)/(N·d) and ∂L/∂θ = Σ_c ∂(S_c/(N·d))/∂θ over any split of the columns.
  std::mt19937_64 generator(12);
  const flowmatch::Mlp<double> model = small_network(2, {5, 4}, 3);
  const Index count = 7;
  const Matrix<double> x0 = standard_normal(2, count, generator);
  const Matrix<double> x1 = standard_normal(2, count, generator);
  const auto objective = FlowMatchingObjective<double>::independent(0.1);
  const flowmatch::FlowMatchingBatch<double> batch = objective.make_batch(x0, x1, generator);
  flowmatch::MlpWorkspace<double> workspace;
  flowmatch::MlpGradient<double> whole;
  const double loss = flowmatch::mlp_flow_matching_loss(model, workspace, batch, whole);
  Matrix<double> prediction(2, count);
  Matrix<double> output_gradient(2, count);
  flowmatch::MlpGradient<double> block;
  double squared_errors = 0;
  Vector<double> summed = Vector<double>::Zero(whole.flat().size());
  for (const auto& [first, columns] : {std::pair<Index, Index>{0, 3}, {3, 4}}) {
    squared_errors += flowmatch::mlp_flow_matching_partial_loss(
        model, workspace, batch, first, columns, prediction.middleCols(first, columns),
        output_gradient.middleCols(first, columns), block);
    summed += block.flat();
  }
  CHECK_THAT(squared_errors / double(batch.x_t.size()), WithinRel(loss, 1e-14));
  CHECK((summed - whole.flat()).cwiseAbs().maxCoeff() <=
        1e-14 * whole.flat().cwiseAbs().maxCoeff());
  CHECK_THROWS_AS(flowmatch::mlp_flow_matching_partial_loss(model, workspace, batch, 5, 3,
                                                            prediction.leftCols(3),
                                                            output_gradient.leftCols(3), block),
                  std::invalid_argument);
}

TEST_CASE("every conditional path's u_t is the time derivative of x_t", "[paths]") {
  std::mt19937_64 generator(5);
  const Index count = 4;
  const Matrix<double> x0 = standard_normal(3, count, generator);
  const Matrix<double> x1 = standard_normal(3, count, generator);
  const Matrix<double> noise = standard_normal(3, count, generator);
  const double step = 1e-6;
  for (const auto& objective : named_objectives()) {
    INFO("path " << objective.path.name());
    for (const double time : {0.05, 0.3, 0.5, 0.77, 0.95}) {
      const Vector<double> t = Vector<double>::Constant(count, time);
      const auto at = objective.path.sample(x0, x1, noise, t);
      const auto later = objective.path.sample(x0, x1, noise, (t.array() + step).matrix());
      const auto earlier = objective.path.sample(x0, x1, noise, (t.array() - step).matrix());
      const Matrix<double> numeric = (later.x_t - earlier.x_t) / (2 * step);
      CHECK((numeric - at.dx_t).cwiseAbs().maxCoeff() < 1e-8 * (1 + at.dx_t.cwiseAbs().maxCoeff()));
    }
  }
}

TEST_CASE("the named paths have their closed forms", "[paths]") {
  std::mt19937_64 generator(6);
  const Index count = 5;
  const Matrix<double> x0 = standard_normal(2, count, generator);
  const Matrix<double> x1 = standard_normal(2, count, generator);
  const Matrix<double> noise = standard_normal(2, count, generator);
  const Vector<double> t{{0.1, 0.25, 0.5, 0.6, 0.9}};
  const auto close = [](const Matrix<double>& a, const Matrix<double>& b) {
    return (a - b).cwiseAbs().maxCoeff() < 1e-13;
  };
  const double sigma = 0.3;
  const double pi = 3.14159265358979323846;
  Matrix<double> x_t(2, count), u_t(2, count);

  // I-CFM: x_t = t·x₁ + (1 − t)·x₀ + σε, u_t = x₁ − x₀.
  auto sample = ConditionalPath<double>::straight(sigma).sample(x0, x1, noise, t);
  for (Index i = 0; i < count; ++i) {
    x_t.col(i) = t(i) * x1.col(i) + (1 - t(i)) * x0.col(i) + sigma * noise.col(i);
  }
  CHECK(close(sample.x_t, x_t));
  CHECK(close(sample.dx_t, x1 - x0));

  // SB-CFM: x_t = μ_t + σ√(t(1 − t))ε, u_t = (1 − 2t)/(2t(1 − t))·(x_t − μ_t) + x₁ − x₀.
  sample = ConditionalPath<double>::brownian_bridge(sigma).sample(x0, x1, noise, t);
  for (Index i = 0; i < count; ++i) {
    const Vector<double> mean = t(i) * x1.col(i) + (1 - t(i)) * x0.col(i);
    x_t.col(i) = mean + sigma * std::sqrt(t(i) * (1 - t(i))) * noise.col(i);
    u_t.col(i) =
        (1 - 2 * t(i)) / (2 * t(i) * (1 - t(i))) * (x_t.col(i) - mean) + x1.col(i) - x0.col(i);
  }
  CHECK(close(sample.x_t, x_t));
  CHECK(close(sample.dx_t, u_t));

  // VP-CFM: x_t = cos(πt/2)x₀ + sin(πt/2)x₁ + σε, u_t = (π/2)(cos(πt/2)x₁ − sin(πt/2)x₀).
  sample = ConditionalPath<double>::variance_preserving(sigma).sample(x0, x1, noise, t);
  for (Index i = 0; i < count; ++i) {
    const double angle = pi * t(i) / 2;
    x_t.col(i) = std::cos(angle) * x0.col(i) + std::sin(angle) * x1.col(i) + sigma * noise.col(i);
    u_t.col(i) = pi / 2 * (std::cos(angle) * x1.col(i) - std::sin(angle) * x0.col(i));
  }
  CHECK(close(sample.x_t, x_t));
  CHECK(close(sample.dx_t, u_t));

  // Target CFM: x_t = t·x₁ + (1 − (1 − σ_min)t)x₀, u_t = x₁ − (1 − σ_min)x₀; ε unused.
  const double sigma_min = 0.05;
  sample = ConditionalPath<double>::target(sigma_min).sample(x0, x1, noise, t);
  for (Index i = 0; i < count; ++i) {
    x_t.col(i) = t(i) * x1.col(i) + (1 - (1 - sigma_min) * t(i)) * x0.col(i);
  }
  CHECK(close(sample.x_t, x_t));
  CHECK(close(sample.dx_t, x1 - (1 - sigma_min) * x0));

  // An affine path without smoothing is AffinePath::sample.
  const flowmatch::AffinePath<flowmatch::Cosine<double>> cosine;
  sample = ConditionalPath<double>::affine(cosine, 0.0).sample(x0, x1, noise, t);
  const auto reference = cosine.sample(x0, x1, t);
  CHECK(close(sample.x_t, reference.x_t));
  CHECK(close(sample.dx_t, reference.dx_t));
}

TEST_CASE("the named objectives have torchcfm's couplings", "[objective]") {
  using Objective = FlowMatchingObjective<double>;
  CHECK(Objective::independent(0.1).coupling == CouplingKind::independent);
  CHECK(Objective::optimal_transport(0.1).coupling == CouplingKind::exact_ot);
  const Objective bridge = Objective::schrodinger_bridge(0.3);
  CHECK(bridge.coupling == CouplingKind::entropic_ot);
  CHECK_THAT(bridge.entropic_regularisation, WithinRel(2 * 0.3 * 0.3, 1e-15));
  CHECK(bridge.path.open_interval());
  CHECK_THROWS_AS(bridge.path.coefficients(0.0), std::domain_error);
  CHECK_THROWS_AS(bridge.path.coefficients(1.0), std::domain_error);
  CHECK_FALSE(ConditionalPath<double>::brownian_bridge(0.0).open_interval());
}

TEST_CASE("the couplings pair by exact and entropic optimal transport", "[objective]") {
  std::mt19937_64 generator(21);
  const Index count = 6;
  const Matrix<double> x0 = standard_normal(2, count, generator) * 3.0;
  // x₁ is x₀ shuffled and moved slightly: the OT pairing undoes the shuffle.
  const std::vector<Index> shuffle{3, 0, 5, 1, 4, 2};
  Matrix<double> x1(2, count);
  for (Index i = 0; i < count; ++i)
    x1.col(shuffle[i]) = x0.col(i) + Vector<double>::Constant(2, 0.01);

  const auto [source, data] =
      FlowMatchingObjective<double>::optimal_transport(0.0).couple(x0, x1, generator);
  for (Index i = 0; i < count; ++i) {
    CHECK(source[i] == i);
    CHECK(data[i] == shuffle[i]);
  }
  // Entropic OT with ε_reg = 2σ² far below the gaps between costs: every drawn pair is an
  // OT pair.
  const auto [bridge_source, bridge_data] =
      FlowMatchingObjective<double>::schrodinger_bridge(0.05).couple(x0, x1, generator);
  for (Index k = 0; k < count; ++k) CHECK(bridge_data[k] == shuffle[bridge_source[k]]);
  // Independent: as given.
  const auto [same_source, same_data] =
      FlowMatchingObjective<double>::independent(0.0).couple(x0, x1, generator);
  for (Index i = 0; i < count; ++i) CHECK((same_source[i] == i && same_data[i] == i));
}

TEST_CASE("conditions follow their data column and are dropped with probability p", "[objective]") {
  std::mt19937_64 generator(8);
  const Index count = 6;
  const Matrix<double> x0 = standard_normal(2, count, generator);
  const Matrix<double> x1 = standard_normal(2, count, generator) * 4.0;
  // With σ = 0 on straight paths x₁ = x_t + (1 − t)·u_t, so a condition equal to x₁ must come
  // back as x_t + (1 − t)·u_t after the OT coupling has reordered the data.
  auto objective = FlowMatchingObjective<double>::optimal_transport(0.0);
  const auto batch = objective.make_batch(x0, x1, x1, generator);
  Matrix<double> recovered = batch.x_t;
  for (Index i = 0; i < count; ++i) recovered.col(i) += (1 - batch.t(i)) * batch.u_t.col(i);
  CHECK((recovered - batch.cond).cwiseAbs().maxCoeff() < 1e-12);

  // Dropout: the fraction of null columns is p within 5 standard errors; others unchanged.
  const Index columns = 20000;
  const double probability = 0.3;
  const Matrix<double> cond = Matrix<double>::Constant(3, columns, 2.0);
  Matrix<double> dropped = cond;
  const Vector<double> null_condition = Vector<double>::Constant(3, -1.0);
  flowmatch::drop_conditions<double>(dropped, probability, null_condition, generator);
  Index nulls = 0;
  for (Index col = 0; col < columns; ++col) {
    const bool is_null = dropped.col(col) == null_condition;
    CHECK((is_null || dropped.col(col) == cond.col(col)));
    nulls += is_null ? 1 : 0;
  }
  const double fraction = static_cast<double>(nulls) / static_cast<double>(columns);
  const double standard_error = std::sqrt(probability * (1 - probability) / columns);
  CHECK_THAT(fraction, WithinAbs(probability, 5 * standard_error));
  // The default null condition is the zero column; p = 0 and p = 1 are exact.
  Matrix<double> all = cond;
  flowmatch::drop_conditions<double>(all, 1.0, Vector<double>(), generator);
  CHECK(all.isZero(0));
  Matrix<double> none = cond;
  flowmatch::drop_conditions<double>(none, 0.0, Vector<double>(), generator);
  CHECK(none == cond);
}

TEST_CASE("training times are uniform or logit-normal and avoid excluded ends", "[objective]") {
  std::mt19937_64 generator(9);
  const Index count = 40000;
  auto objective = FlowMatchingObjective<double>::independent(0.0);
  const Vector<double> uniform = objective.sample_times(count, generator);
  CHECK(uniform.minCoeff() >= 0.0);
  CHECK(uniform.maxCoeff() <= 1.0);
  // U[0, 1]: mean 1/2, variance 1/12.
  CHECK_THAT(uniform.mean(), WithinAbs(0.5, 5 * std::sqrt(1.0 / 12 / count)));

  objective.time = flowmatch::TimeDistribution<double>::logit_normal_with(-0.5, 1.5);
  const Vector<double> times = objective.sample_times(count, generator);
  const Eigen::ArrayXd logits = (times.array() / (1 - times.array())).log();
  CHECK_THAT(logits.mean(), WithinAbs(-0.5, 5 * 1.5 / std::sqrt(double(count))));
  const double variance = (logits - logits.mean()).square().mean();
  // Var of a sample variance of a normal: 2s⁴/n.
  CHECK_THAT(variance, WithinAbs(1.5 * 1.5, 5 * std::sqrt(2.0 / count) * 1.5 * 1.5));

  // A logit-normal far out lands on t = 1 in double; the bridge redraws it.
  auto bridge = FlowMatchingObjective<double>::schrodinger_bridge(0.5);
  bridge.time = flowmatch::TimeDistribution<double>::logit_normal_with(40.0, 1.0);
  const Vector<double> open = bridge.sample_times(50, generator);
  CHECK(open.maxCoeff() < 1.0);
}

TEST_CASE("bad inputs to the objectives and the loss throw", "[objective][errors]") {
  using Objective = FlowMatchingObjective<double>;
  std::mt19937_64 generator(1);
  CHECK_THROWS_AS(Objective::independent(-0.1), std::invalid_argument);
  CHECK_THROWS_AS(Objective::optimal_transport(-1.0), std::invalid_argument);
  CHECK_THROWS_AS(Objective::schrodinger_bridge(0.0), std::invalid_argument);
  CHECK_THROWS_AS(Objective::schrodinger_bridge(-0.5), std::invalid_argument);
  CHECK_THROWS_AS(Objective::variance_preserving(-0.1), std::invalid_argument);
  CHECK_THROWS_AS(Objective::target(-0.01), std::invalid_argument);
  CHECK_THROWS_AS(Objective::independent(std::nan("")), std::invalid_argument);
  CHECK_THROWS_WITH(Objective::independent(-0.1),
                    Catch::Contains("smoothing is -0.1") && Catch::Contains(">= 0"));

  const Matrix<double> x0 = Matrix<double>::Zero(2, 4);
  const Matrix<double> x1 = Matrix<double>::Ones(2, 5);
  CHECK_THROWS_AS(Objective::independent(0.1).make_batch(x0, x1, generator), std::invalid_argument);
  Matrix<double> bad = Matrix<double>::Ones(2, 4);
  bad(1, 2) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(Objective::optimal_transport(0.1).make_batch(x0, bad, generator),
                  std::invalid_argument);
  CHECK_THROWS_AS(Objective::independent(0.1).make_batch(x0, bad, generator),
                  std::invalid_argument);
  CHECK_THROWS_AS(Objective::independent(0.1).make_batch(x0, Matrix<double>::Ones(2, 4),
                                                         Matrix<double>::Ones(1, 3), generator),
                  std::invalid_argument);

  Objective dropout = Objective::independent(0.1);
  dropout.label_dropout = 1.5;
  CHECK_THROWS_AS(dropout.validate(), std::invalid_argument);
  dropout.label_dropout = -0.1;
  CHECK_THROWS_AS(
      dropout.make_batch(x0, Matrix<double>::Ones(2, 4), Matrix<double>::Ones(1, 4), generator),
      std::invalid_argument);
  Matrix<double> cond = Matrix<double>::Ones(1, 4);
  CHECK_THROWS_WITH(flowmatch::drop_conditions<double>(cond, 1.2, Vector<double>(), generator),
                    Catch::Contains("probability is 1.2"));
  CHECK_THROWS_AS(
      flowmatch::drop_conditions<double>(cond, std::nan(""), Vector<double>(), generator),
      std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::drop_conditions<double>(cond, 0.5, Vector<double>::Zero(2), generator),
                  std::invalid_argument);

  Objective timed = Objective::independent(0.0);
  timed.time = flowmatch::TimeDistribution<double>::logit_normal_with(0.0, 0.0);
  CHECK_THROWS_AS(timed.sample_times(3, generator), std::invalid_argument);
  Objective entropic = Objective::independent(0.0);
  entropic.coupling = CouplingKind::entropic_ot;
  CHECK_THROWS_AS(entropic.validate(), std::invalid_argument);

  const auto path = ConditionalPath<double>::straight(0.0);
  CHECK_THROWS_AS(path.coefficients(1.5), std::domain_error);
  CHECK_THROWS_AS(path.sample(x0, x0, x0, Vector<double>::Constant(3, 0.5)), std::invalid_argument);

  CHECK_THROWS_AS(flowmatch::flow_matching_loss<double>(x0, x1), std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::flow_matching_loss<double>(x0, bad), std::invalid_argument);
  CHECK_THROWS_AS(flowmatch::flow_matching_loss<double>(Matrix<double>(2, 0), Matrix<double>(2, 0)),
                  std::invalid_argument);
}

namespace {

// Three well-separated components in the plane.
flowmatch::GaussianMixture<double> three_component_mixture() {
  Matrix<double> means(2, 3);
  means << 2.5, -1.25, -1.25, 0.0, 2.165, -2.165;
  const Matrix<double> variances = Matrix<double>::Constant(2, 3, 0.15);
  return flowmatch::GaussianMixture<double>::with_diagonal_covariances(
      Vector<double>::Constant(3, 1.0 / 3), means, variances);
}

flowmatch::Mlp<double> train_on(const flowmatch::GaussianMixture<double>& mixture,
                                const FlowMatchingObjective<double>& objective, const char* name,
                                Index batch_size, std::int64_t steps) {
  flowmatch::TrainerOptions<double> options;
  options.batch_size = batch_size;
  options.learning_rate = flowmatch::CosineSchedule<double>(3e-3, 1e-4, steps);
  options.ema_decay = 0.995;
  options.ema_warmup = true;
  options.report_every = steps;
  flowmatch::FlowMatchingTrainer<double> trainer(
      small_network(2, {64, 64}, 17), objective,
      [mixture](Index count, std::mt19937_64& generator) {
        return mixture.sample(count, generator);
      },
      options, 2024);
  trainer.train(steps, [&](const flowmatch::TrainingProgress& progress) {
    std::printf("%s: %lld steps, last loss %.4f, %.0f steps/s\n", name,
                static_cast<long long>(progress.step), progress.loss, progress.steps_per_second);
  });
  return trainer.ema_model();
}

// Mean squared error of Euler with @p euler_steps from @p x0 against @p reference, the flow's
// end points from a tight dopri5 solution.
double euler_error(const flowmatch::Mlp<double>& model, const Matrix<double>& x0,
                   const Matrix<double>& reference, int euler_steps) {
  flowmatch::SolverOptions<double> euler;
  euler.method = flowmatch::Method::euler;
  euler.step_size = 1.0 / euler_steps;
  const Matrix<double> coarse = flowmatch::sample(model, x0, euler).state;
  return (coarse - reference).squaredNorm() / static_cast<double>(x0.cols());
}

}  // namespace

TEST_CASE("training on a Gaussian mixture learns the exact field, and OT-CFM flows straighter",
          "[training][slow]") {
  const auto mixture = three_component_mixture();
  const flowmatch::Mlp<double> independent =
      train_on(mixture, FlowMatchingObjective<double>::independent(0.0), "I-CFM", 128, 2500);

  // The I-CFM minimiser is the marginal velocity of the straight path: compare at random
  // (t, x_t) points, relative to the mean squared norm of the exact velocity.
  const flowmatch::GaussianMixturePath<flowmatch::CondOT<double>> oracle(mixture);
  std::mt19937_64 generator(77);
  std::uniform_real_distribution<double> uniform(0, 1);
  double error = 0;
  double norm = 0;
  for (int trial = 0; trial < 40; ++trial) {
    const double t = uniform(generator);
    const Matrix<double> x =
        t * mixture.sample(100, generator) + (1 - t) * standard_normal(2, 100, generator);
    Matrix<double> exact(2, 100), learned(2, 100);
    oracle(t, x, exact);
    independent(t, x, learned);
    error += (learned - exact).squaredNorm();
    norm += exact.squaredNorm();
  }
  const double relative_field_error = error / norm;
  std::printf("I-CFM field: relative mean squared error against the exact velocity %.4f\n",
              relative_field_error);
  CHECK(relative_field_error < 0.05);

  // Samples (dopri5) against data, by energy distance, relative to the energy distance
  // between independent data samples of the same size (averaged over 4 pairs).
  const Index count = 400;
  const Matrix<double> generated =
      flowmatch::sample(independent, standard_normal(2, count, generator)).state;
  const double model_distance = energy_distance(generated, mixture.sample(count, generator));
  double yardstick = 0;
  for (int pair = 0; pair < 4; ++pair) {
    yardstick +=
        energy_distance(mixture.sample(count, generator), mixture.sample(count, generator)) / 4;
  }
  std::printf("I-CFM samples: energy distance %.5f, between data samples %.5f\n", model_distance,
              yardstick);
  CHECK(model_distance < 3 * yardstick);

  // OT-CFM against I-CFM with the same data, network, seed, batch and schedule (a smaller
  // batch and fewer steps, since exact OT costs O(B³) per step): few-step Euler is closer to
  // the exact flow of the OT-CFM model.
  const flowmatch::Mlp<double> straight =
      train_on(mixture, FlowMatchingObjective<double>::independent(0.0), "I-CFM", 64, 1500);
  const flowmatch::Mlp<double> transport =
      train_on(mixture, FlowMatchingObjective<double>::optimal_transport(0.0), "OT-CFM", 64, 1500);
  const Matrix<double> x0 = standard_normal(2, 500, generator);
  flowmatch::SolverOptions<double> tight;
  tight.rtol = 1e-8;
  tight.atol = 1e-8;
  const Matrix<double> independent_end = flowmatch::sample(straight, x0, tight).state;
  const Matrix<double> transport_end = flowmatch::sample(transport, x0, tight).state;
  for (const int euler_steps : {1, 2, 4}) {
    const double independent_error = euler_error(straight, x0, independent_end, euler_steps);
    const double transport_error = euler_error(transport, x0, transport_end, euler_steps);
    std::printf("Euler with %d step(s), mean squared error vs dopri5: I-CFM %.5f, OT-CFM %.5f\n",
                euler_steps, independent_error, transport_error);
    CHECK(transport_error < independent_error);
  }
}

namespace {

flowmatch::FlowMatchingTrainer<double> small_trainer(std::uint64_t seed) {
  flowmatch::TrainerOptions<double> options;
  options.batch_size = 24;
  options.learning_rate =
      flowmatch::LinearWarmup(5, flowmatch::CosineSchedule<double>(1e-2, 1e-3, 20));
  options.max_gradient_norm = 0.5;
  options.ema_decay = 0.9;
  options.ema_warmup = true;
  const auto mixture = three_component_mixture();
  return flowmatch::FlowMatchingTrainer<double>(
      small_network(2, {16}, 4), FlowMatchingObjective<double>::schrodinger_bridge(0.3),
      [mixture](Index count, std::mt19937_64& generator) {
        return mixture.sample(count, generator);
      },
      options, seed);
}

}  // namespace

TEST_CASE("conditional training with label dropout learns each class and the null condition",
          "[training][slow]") {
  // Labelled data: 1500 points of each of the three components, labels one-hot.
  const auto mixture = three_component_mixture();
  std::mt19937_64 generator(31);
  const Index per_class = 1500;
  Matrix<double> data(2, 3 * per_class);
  Matrix<double> labels = Matrix<double>::Zero(3, 3 * per_class);
  for (Index k = 0; k < 3; ++k) {
    data.middleCols(k * per_class, per_class) =
        (std::sqrt(0.15) * standard_normal(2, per_class, generator)).colwise() +
        Vector<double>(mixture.means().col(k));
    labels.row(k).segment(k * per_class, per_class).setOnes();
  }
  auto objective = FlowMatchingObjective<double>::independent(0.0);
  objective.label_dropout = 0.2;
  const std::int64_t steps = 1500;
  flowmatch::TrainerOptions<double> options;
  options.batch_size = 128;
  options.learning_rate = flowmatch::CosineSchedule<double>(3e-3, 1e-4, steps);
  options.ema_decay = 0.995;
  options.ema_warmup = true;
  flowmatch::FlowMatchingTrainer<double> trainer(
      small_network(2, {64, 64}, 23, 3), objective,
      flowmatch::FlowMatchingTrainer<double>::resample(data, labels), options, 77);
  trainer.train(steps);
  const flowmatch::Mlp<double> model = trainer.ema_model();

  // Conditional samples (w = 1) land on their class; null samples (w = 0) on the mixture.
  const Index count = 400;
  const Matrix<double> noise = standard_normal(2, count, generator);
  for (Index k = 0; k < 3; ++k) {
    const Matrix<double> condition = labels.col(k * per_class).replicate(1, count);
    const auto conditional =
        flowmatch::classifier_free_guidance<double>(std::cref(model), condition, 1.0);
    const Matrix<double> samples = flowmatch::sample(conditional, noise).state;
    const Vector<double> mean = samples.rowwise().mean();
    INFO("class " << k << " sample mean " << mean.transpose());
    // The class means are 4.3 apart and the class standard deviation is 0.39.
    CHECK((mean - mixture.means().col(k)).norm() < 0.3);
  }
  const auto unconditional = flowmatch::classifier_free_guidance<double>(
      std::cref(model), Matrix<double>(Matrix<double>::Zero(3, count)), 0.0);
  const Matrix<double> samples = flowmatch::sample(unconditional, noise).state;
  // Each null sample is nearest to some class mean; the three shares are near 1/3.
  Vector<double> shares = Vector<double>::Zero(3);
  for (Index col = 0; col < count; ++col) {
    Index nearest = 0;
    (mixture.means().colwise() - samples.col(col)).colwise().squaredNorm().minCoeff(&nearest);
    shares(nearest) += 1.0 / count;
  }
  INFO("null-condition shares " << shares.transpose());
  // Four binomial standard errors: 4·sqrt((1/3)(2/3)/400) ≈ 0.094.
  CHECK((shares.array() - 1.0 / 3).abs().maxCoeff() < 0.094);
}

TEST_CASE("a trainer compiled for the independent coupling only takes the same steps",
          "[training]") {
  using flowmatch::CouplingSupport;
  const auto mixture = three_component_mixture();
  const auto data = [mixture](Index count, std::mt19937_64& generator) {
    return mixture.sample(count, generator);
  };
  flowmatch::TrainerOptions<double> options;
  options.batch_size = 16;
  const auto objective = FlowMatchingObjective<double>::independent(0.1);
  flowmatch::FlowMatchingTrainer<double> general(small_network(2, {8}, 3), objective, data, options,
                                                 5);
  flowmatch::FlowMatchingTrainer<double, std::mt19937_64, CouplingSupport::independent> restricted(
      small_network(2, {8}, 3), objective, data, options, 5);
  for (int step = 0; step < 3; ++step) CHECK(restricted.step() == general.step());
  CHECK(restricted.model().parameters() == general.model().parameters());

  // Objectives with another coupling are refused before any step, and by make_batch_into.
  using Restricted =
      flowmatch::FlowMatchingTrainer<double, std::mt19937_64, CouplingSupport::independent>;
  CHECK_THROWS_AS(
      Restricted(small_network(2, {8}, 3), FlowMatchingObjective<double>::optimal_transport(0.1),
                 data, options, 5),
      std::invalid_argument);
  CHECK_THROWS_WITH(
      Restricted(small_network(2, {8}, 3), FlowMatchingObjective<double>::schrodinger_bridge(0.3),
                 data, options, 5),
      Catch::Matchers::Contains("CouplingSupport::independent"));
  std::mt19937_64 generator(9);
  const Matrix<double> x0 = standard_normal(2, 8, generator);
  const Matrix<double> x1 = standard_normal(2, 8, generator);
  flowmatch::FlowMatchingBatch<double> batch;
  auto transport = FlowMatchingObjective<double>::independent(0.0);
  transport.coupling = CouplingKind::exact_ot;
  CHECK_THROWS_AS(transport.make_batch_into<CouplingSupport::independent>(x0, x1, generator, batch),
                  std::invalid_argument);
  transport.make_batch_into(x0, x1, generator, batch);  // the default runs every coupling
  CHECK(batch.x_t.cols() == 8);
}

TEST_CASE("a run resumed from a checkpoint file continues bit for bit", "[training]") {
  auto uninterrupted = small_trainer(99);
  uninterrupted.train(20);

  auto first_half = small_trainer(99);
  first_half.train(8);
  const std::string path =
      (std::filesystem::temp_directory_path() / "flowmatch_test_objective_checkpoint.safetensors")
          .string();
  flowmatch::save_checkpoint(path, first_half.checkpoint());

  auto resumed = small_trainer(12345);  // another seed: everything must come from the file
  resumed.restore(flowmatch::load_checkpoint<double>(path));
  std::filesystem::remove(path);
  CHECK(resumed.step_count() == 8);
  resumed.train(12);

  const auto expected = uninterrupted.checkpoint();
  const auto actual = resumed.checkpoint();
  CHECK(actual.step == 20);
  CHECK(flowmatch::gather_parameters(actual.model) == flowmatch::gather_parameters(expected.model));
  flowmatch_test::check_same_training_state(actual, expected);

  // The comparison can fail: without the checkpoint the other seed gives other weights.
  auto unrestored = small_trainer(12345);
  unrestored.train(20);
  CHECK(flowmatch::gather_parameters(unrestored.model()) !=
        flowmatch::gather_parameters(expected.model));
}

TEST_CASE("a float checkpoint round-trips exactly through safetensors", "[checkpoint]") {
  std::mt19937_64 generator(3);
  flowmatch::MlpConfig config;
  config.dim = 3;
  config.hidden = {5};
  flowmatch::TrainingCheckpoint<float> checkpoint{
      flowmatch::Mlp<float>(config, generator), {}, {}, 41, "state text"};
  const Index count = flowmatch::parameter_count(checkpoint.model);
  checkpoint.optimizer.first_moment = Vector<float>::Random(count);
  checkpoint.optimizer.second_moment = Vector<float>::Random(count).cwiseAbs();
  checkpoint.optimizer.step = 40;
  checkpoint.ema.average = Vector<float>::Random(count);
  checkpoint.ema.updates = 39;
  const auto file = flowmatch::checkpoint_to_safetensors(checkpoint);
  CHECK(file.tensors.count("0.weight") == 1);
  CHECK(file.tensors.count("2.bias") == 1);
  const auto back = flowmatch::checkpoint_from_safetensors<float>(
      flowmatch::io::parse_safetensors(flowmatch::io::serialize_safetensors(file)));
  CHECK(flowmatch::gather_parameters(back.model) == flowmatch::gather_parameters(checkpoint.model));
  CHECK(back.optimizer.first_moment == checkpoint.optimizer.first_moment);
  CHECK(back.optimizer.second_moment == checkpoint.optimizer.second_moment);
  CHECK(back.optimizer.step == 40);
  CHECK(back.ema.average == checkpoint.ema.average);
  CHECK(back.ema.updates == 39);
  CHECK(back.step == 41);
  CHECK(back.generator_state == "state text");

  auto missing = file;
  missing.metadata.erase("step");
  CHECK_THROWS_AS(flowmatch::checkpoint_from_safetensors<float>(missing),
                  flowmatch::io::format_error);
  missing = file;
  missing.tensors.erase("ema.average");
  CHECK_THROWS_AS(flowmatch::checkpoint_from_safetensors<float>(missing),
                  flowmatch::io::format_error);
  missing = file;
  missing.metadata["optimizer.step"] = "-3";
  CHECK_THROWS_AS(flowmatch::checkpoint_from_safetensors<float>(missing),
                  flowmatch::io::format_error);
}

TEST_CASE("bad inputs to the trainer throw", "[training][errors]") {
  using Trainer = flowmatch::FlowMatchingTrainer<double>;
  const auto objective = FlowMatchingObjective<double>::independent(0.1);
  const auto data = Trainer::resample(Matrix<double>::Ones(2, 10));
  flowmatch::TrainerOptions<double> options;
  options.batch_size = 4;

  const auto non_finite = [](Index count, std::mt19937_64&) {
    Matrix<double> batch = Matrix<double>::Ones(2, count);
    batch(0, 1) = std::numeric_limits<double>::infinity();
    return batch;
  };
  Trainer infinite(small_network(2, {4}, 1), objective, non_finite, options, 1);
  CHECK_THROWS_AS(infinite.step(), std::invalid_argument);
  const auto wrong_size = [](Index count, std::mt19937_64&) {
    return Matrix<double>::Ones(2, count + 1).eval();
  };
  Trainer mismatched(small_network(2, {4}, 1), objective, wrong_size, options, 1);
  CHECK_THROWS_AS(mismatched.step(), std::invalid_argument);
  CHECK_THROWS_AS(Trainer::resample(Matrix<double>(2, 0)), std::invalid_argument);
  CHECK_THROWS_AS(Trainer::resample(Matrix<double>::Constant(2, 3, std::nan(""))),
                  std::invalid_argument);
  // Conditioned data for an unconditional model, plain data for a conditional one, conditions
  // that do not match the data or the model.
  const Matrix<double> labels = Matrix<double>::Identity(3, 10);
  const auto labelled = Trainer::resample(Matrix<double>::Ones(2, 10), labels);
  CHECK_THROWS_AS(Trainer(small_network(2, {4}, 1), objective, labelled, options, 1),
                  std::invalid_argument);
  CHECK_THROWS_AS(Trainer(small_network(2, {4}, 1, 3), objective, data, options, 1),
                  std::invalid_argument);
  CHECK_THROWS_AS(Trainer::resample(Matrix<double>::Ones(2, 10), Matrix<double>::Zero(3, 9)),
                  std::invalid_argument);
  Trainer wrong_labels(small_network(2, {4}, 1, 2), objective, labelled, options, 1);
  CHECK_THROWS_AS(wrong_labels.step(), std::invalid_argument);

  auto bad = options;
  bad.batch_size = 0;
  CHECK_THROWS_AS(Trainer(small_network(2, {4}, 1), objective, data, bad, 1),
                  std::invalid_argument);
  bad = options;
  bad.max_gradient_norm = -1.0;
  CHECK_THROWS_AS(Trainer(small_network(2, {4}, 1), objective, data, bad, 1),
                  std::invalid_argument);
  bad = options;
  bad.report_every = 0;
  CHECK_THROWS_AS(Trainer(small_network(2, {4}, 1), objective, data, bad, 1),
                  std::invalid_argument);
  CHECK_THROWS_AS(Trainer(small_network(2, {4}, 1, 3), objective, data, options, 1),
                  std::invalid_argument);
  auto dropout = objective;
  dropout.label_dropout = 2.0;
  CHECK_THROWS_AS(Trainer(small_network(2, {4}, 1), dropout, data, options, 1),
                  std::invalid_argument);

  Trainer trainer(small_network(2, {4}, 1), objective, data, options, 1);
  CHECK_THROWS_AS(trainer.train(0), std::invalid_argument);
  auto other_shape = Trainer(small_network(2, {5}, 1), objective, data, options, 1).checkpoint();
  CHECK_THROWS_AS(trainer.restore(other_shape), std::invalid_argument);
  auto garbled = trainer.checkpoint();
  garbled.generator_state = "not a generator state";
  CHECK_THROWS_AS(trainer.restore(garbled), std::invalid_argument);

  // The progress callback sees every report_every-th step and the last one.
  options.report_every = 3;
  Trainer reporting(small_network(2, {4}, 1), objective, data, options, 1);
  std::vector<std::int64_t> reported;
  reporting.train(7, [&](const flowmatch::TrainingProgress& progress) {
    reported.push_back(progress.step);
    CHECK(std::isfinite(progress.loss));
    CHECK(progress.steps_per_second >= 0);
  });
  CHECK(reported == std::vector<std::int64_t>{3, 6, 7});
}

TEST_CASE("a float trainer lowers the loss, and resample draws columns of the data", "[training]") {
  using Trainer = flowmatch::FlowMatchingTrainer<float>;
  const auto mixture = three_component_mixture();
  std::mt19937_64 generator(31);
  const Matrix<float> data = mixture.sample(500, generator).cast<float>();
  const Trainer::DataSampler sampler = Trainer::resample(data);
  const Matrix<float> drawn = sampler(64, generator);
  REQUIRE(drawn.rows() == 2);
  REQUIRE(drawn.cols() == 64);
  for (Index k = 0; k < drawn.cols(); ++k) {
    bool found = false;
    for (Index column = 0; column < data.cols() && !found; ++column) {
      found = drawn.col(k) == data.col(column);
    }
    CHECK(found);
  }

  flowmatch::MlpConfig config;
  config.dim = 2;
  config.hidden = {32, 32};
  std::mt19937_64 initialiser(2);
  flowmatch::TrainerOptions<float> options;
  options.batch_size = 128;
  options.learning_rate = flowmatch::ConstantSchedule<float>(3e-3f);
  Trainer trainer(flowmatch::Mlp<float>(config, initialiser),
                  FlowMatchingObjective<float>::independent(0.0f), sampler, options, 5);
  // Mean loss over the first and the last 50 of 400 steps: the minimum of the I-CFM loss here
  // is about half the loss of the untrained network.
  const auto mean_loss = [&trainer](int steps) {
    double total = 0;
    for (int step = 0; step < steps; ++step) total += static_cast<double>(trainer.step());
    return total / steps;
  };
  const double first = mean_loss(50);
  mean_loss(300);
  const double last = mean_loss(50);
  std::printf("float I-CFM: mean loss %.4f over the first 50 steps, %.4f over the last 50\n", first,
              last);
  CHECK(last < 0.8 * first);
}

}  // namespace test_objective
