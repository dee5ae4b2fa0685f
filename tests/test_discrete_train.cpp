// Tests of the MlpDenoiser and its training against mathematics independent of the code: a
// softmax and a one-hot code written out here, central differences of the losses of
// discrete/loss.hpp and of the network's parameters, and the exact posterior of an enumerable
// joint distribution (its ELBO and the total-variation distance of samples to the joint).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "checkpoint_support.hpp"
#include "discrete_support.hpp"
#include "flowmatch/core/errors.hpp"
#include "flowmatch/discrete/carry_over.hpp"
#include "flowmatch/discrete/conditional_denoiser.hpp"
#include "flowmatch/discrete/denoiser.hpp"
#include "flowmatch/discrete/elbo.hpp"
#include "flowmatch/discrete/guidance.hpp"
#include "flowmatch/discrete/loss.hpp"
#include "flowmatch/discrete/mixture_path.hpp"
#include "flowmatch/discrete/mlp_denoiser.hpp"
#include "flowmatch/discrete/sampler.hpp"
#include "flowmatch/discrete/source.hpp"
#include "flowmatch/discrete/training.hpp"
#include "flowmatch/io/io_error.hpp"
#include "flowmatch/oracle/discrete_joint.hpp"
#include "flowmatch/oracle/labelled_discrete_joint.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/train/checkpoint.hpp"

namespace test_discrete_train {

namespace {

using Catch::Matchers::Contains;
using Catch::Matchers::WithinAbs;
using flowmatch::CondOT;
using flowmatch::DiscreteJoint;
using flowmatch::DiscreteJointPosterior;
using flowmatch::DiscreteLoss;
using flowmatch::DiscreteSource;
using flowmatch::DiscreteTrainer;
using flowmatch::DiscreteTrainerOptions;
using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::MixturePath;
using flowmatch::Mlp;
using flowmatch::MlpConfig;
using flowmatch::MlpDenoiser;
using flowmatch::MlpDenoiserConfig;
using flowmatch::Reduction;
using flowmatch::Token;
using flowmatch::TokenMatrix;
using flowmatch::Vector;
using flowmatch_test::random_tokens;

static_assert(flowmatch::Denoiser<MlpDenoiser<double>, double>);
static_assert(flowmatch::Denoiser<MlpDenoiser<float>, float>);

// A joint over {0, 1, 2}^3 with weight 1 + 5·[x₀ = x₂] + 3·[x₁ = 0]·[x₂ ≠ 0]: the first and
// last positions agree far more often than independence allows, so a denoiser must read the
// other positions to learn it.
DiscreteJoint training_joint() {
  Vector<double> weights(27);
  for (Index index = 0; index < 27; ++index) {
    const Index first = index % 3;
    const Index second = (index / 3) % 3;
    const Index third = index / 9;
    weights(index) = 1.0 + 5.0 * (first == third) + 3.0 * (second == 0 && third != 0);
  }
  return DiscreteJoint(weights / weights.sum(), 3, 3);
}

template <class Scalar>
Vector<Scalar> random_times(Index count, double upper, std::mt19937_64& generator) {
  std::uniform_real_distribution<double> uniform(0.0, upper);
  Vector<Scalar> times(count);
  for (Index entry = 0; entry < count; ++entry) times(entry) = Scalar(uniform(generator));
  return times;
}

// One-hot code of tokens in the denoiser's layout, written out: block l of column n holds e_j
// for a data token j < K and zeros for the mask token.
template <class Scalar>
Matrix<Scalar> one_hot(const TokenMatrix& tokens, Index vocabulary) {
  Matrix<Scalar> code = Matrix<Scalar>::Zero(vocabulary * tokens.rows(), tokens.cols());
  for (Index n = 0; n < tokens.cols(); ++n) {
    for (Index l = 0; l < tokens.rows(); ++l) {
      if (tokens(l, n) < vocabulary) code(l * vocabulary + tokens(l, n), n) = 1;
    }
  }
  return code;
}

// Softmax per position in long double, without a shift (for moderate logits only).
Matrix<double> plain_softmax(const Matrix<double>& logits, Index vocabulary) {
  Matrix<double> probabilities(logits.rows(), logits.cols());
  for (Index n = 0; n < logits.cols(); ++n) {
    for (Index start = 0; start < logits.rows(); start += vocabulary) {
      long double total = 0;
      for (Index j = 0; j < vocabulary; ++j) total += std::exp((long double)logits(start + j, n));
      for (Index j = 0; j < vocabulary; ++j) {
        probabilities(start + j, n) = double(std::exp((long double)logits(start + j, n)) / total);
      }
    }
  }
  return probabilities;
}

double total_variation(const DiscreteJoint& joint, const TokenMatrix& tokens) {
  return flowmatch_test::total_variation(flowmatch_test::state_counts(joint, tokens),
                                         joint.probabilities());
}

// Σ_x p_data(x)·bound(x): the ELBO averaged over the joint, with its standard error.
template <class D>
std::pair<double, double> mean_elbo(const D& denoiser, const DiscreteJoint& joint,
                                    const MixturePath<CondOT<double>>& path,
                                    const DiscreteSource<double>& source, Index strata) {
  TokenMatrix every(joint.length(), joint.sequences());
  for (Index index = 0; index < joint.sequences(); ++index) {
    for (Index l = 0; l < joint.length(); ++l) every(l, index) = joint.token_of(index, l);
  }
  std::mt19937_64 generator(2024);
  const auto elbo = flowmatch::discrete_elbo(denoiser, path, source, every, strata, generator);
  const Vector<double>& p = joint.probabilities();
  return {
      p.dot(elbo.bound),
      std::sqrt(p.array().square().matrix().dot(elbo.standard_error.array().square().matrix()))};
}

MlpDenoiserConfig small_config(bool masked) {
  MlpDenoiserConfig config;
  config.vocabulary = 3;
  config.length = 3;
  config.masked = masked;
  config.hidden = {16, 16};
  config.activation = flowmatch::Activation::tanh;
  config.time_embedding.frequencies = 2;
  return config;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The denoiser.

TEMPLATE_TEST_CASE("MlpDenoiser writes a softmax of the body's logits at every position",
                   "[discrete][denoiser]", double, float) {
  using Scalar = TestType;
  const double tolerance = std::is_same_v<Scalar, float> ? 2e-6 : 1e-14;
  for (const bool masked : {false, true}) {
    std::mt19937_64 generator(5);
    const MlpDenoiser<Scalar> denoiser(small_config(masked), generator);
    CHECK(denoiser.vocabulary() == 3);
    CHECK(denoiser.length() == 3);
    CHECK(denoiser.states() == (masked ? 4 : 3));
    const TokenMatrix x_t = random_tokens(3, 40, denoiser.states(), generator);
    const Vector<Scalar> t = random_times<Scalar>(40, 1.0, generator);
    Matrix<Scalar> input(9, 40);
    denoiser.encode(x_t, input);
    CHECK(input == one_hot<Scalar>(x_t, 3));
    Matrix<Scalar> posterior(9, 40);
    denoiser(t, x_t, posterior);
    Matrix<Scalar> logits(9, 40);
    denoiser.network()(t, one_hot<Scalar>(x_t, 3), logits);
    const Matrix<double> expected = plain_softmax(logits.template cast<double>(), 3);
    CHECK((posterior.template cast<double>() - expected).cwiseAbs().maxCoeff() <= 2 * tolerance);
    CHECK(posterior.minCoeff() >= Scalar(0));
    for (Index n = 0; n < 40; ++n) {
      for (Index l = 0; l < 3; ++l) {
        CHECK_THAT(double(posterior.col(n).segment(3 * l, 3).sum()), WithinAbs(1.0, 3 * tolerance));
      }
    }
  }
}

TEMPLATE_TEST_CASE("MlpDenoiser's softmax survives logits far beyond exp's range",
                   "[discrete][denoiser]", double, float) {
  using Scalar = TestType;
  std::mt19937_64 generator(6);
  MlpDenoiser<Scalar> denoiser(small_config(true), generator);
  // Logits of order 1e5 overflow exp in both types without the shift by the maximum.
  denoiser.network().parameters() *= Scalar(1e5);
  const TokenMatrix x_t = random_tokens(3, 20, 4, generator);
  const Vector<Scalar> t = random_times<Scalar>(20, 1.0, generator);
  Matrix<Scalar> posterior(9, 20);
  denoiser(t, x_t, posterior);
  CHECK(posterior.allFinite());
  CHECK(posterior.minCoeff() >= Scalar(0));
  for (Index n = 0; n < 20; ++n) {
    for (Index l = 0; l < 3; ++l) {
      CHECK_THAT(double(posterior.col(n).segment(3 * l, 3).sum()), WithinAbs(1.0, 1e-6));
    }
  }
}

TEST_CASE("An MlpDenoiser with zero parameters is uniform; a body can be wrapped",
          "[discrete][denoiser]") {
  const MlpDenoiser<double> zero(small_config(false));
  std::mt19937_64 generator(7);
  const TokenMatrix x_t = random_tokens(3, 5, 3, generator);
  Matrix<double> posterior(9, 5);
  zero(Vector<double>::Constant(5, 0.3), x_t, posterior);
  CHECK((posterior.array() - 1.0 / 3).abs().maxCoeff() <= 1e-15);
  const MlpDenoiser<double> wrapped(3, false, Mlp<double>(small_config(false).body(), generator));
  CHECK(wrapped.length() == 3);
  CHECK(wrapped.network().dim() == 9);
}

TEST_CASE("CarryOverDenoiser keeps unmasked tokens; its uniform ELBO is L log K",
          "[discrete][denoiser]") {
  std::mt19937_64 generator(11);
  const MlpDenoiser<double> network(small_config(true), generator);
  const flowmatch::CarryOverDenoiser carry_over(network);
  const TokenMatrix x_t = random_tokens(3, 6, 4, generator);  // states 0..2 and the mask 3
  const Vector<double> t = Vector<double>::Constant(6, 0.4);
  Matrix<double> expected(9, 6);
  Matrix<double> posterior(9, 6);
  network(t, x_t, expected);
  carry_over(t, x_t, posterior);
  for (Index n = 0; n < 6; ++n) {
    for (Index l = 0; l < 3; ++l) {
      if (x_t(l, n) != 3) {
        expected.col(n).segment(3 * l, 3).setZero();
        expected(3 * l + x_t(l, n), n) = 1;
      }
    }
  }
  CHECK(posterior == expected);
  // A uniform posterior at the masked positions: the bound is E Σ_l κ̇/(1 − κ)·[masked]·log K
  // = L·log K (P(masked) = 1 − κ), which the network alone exceeds by a divergent term.
  const flowmatch::CarryOverDenoiser uniform(MlpDenoiser<double>(small_config(true)));
  const flowmatch::MixturePath<CondOT<double>> path;
  const auto source = DiscreteSource<double>::masked(3);
  const TokenMatrix x1 = random_tokens(3, 4, 3, generator);
  const flowmatch::DiscreteElbo elbo =
      flowmatch::discrete_elbo(uniform, path, source, x1, 4000, generator);
  for (Index n = 0; n < 4; ++n) {
    CHECK_THAT(elbo.bound(n), WithinAbs(3 * std::log(3.0), 4 * elbo.standard_error(n)));
  }
}

// ---------------------------------------------------------------------------------------------
// Gradients.

TEST_CASE("Logit gradients of both losses match central differences of discrete/loss.hpp",
          "[discrete][gradient]") {
  const MixturePath<CondOT<double>> path;
  const Index vocabulary = 4;
  const Index length = 3;
  const Index sequences = 6;
  for (const bool masked : {false, true}) {
    std::mt19937_64 generator(masked ? 12 : 11);
    const auto source = masked ? DiscreteSource<double>::masked(vocabulary)
                               : DiscreteSource<double>::uniform(vocabulary);
    const TokenMatrix x1 = random_tokens(length, sequences, vocabulary, generator);
    TokenMatrix x_t = random_tokens(length, sequences, source.states(), generator);
    x_t.row(0) = x1.row(0);  // some tokens with x_t = x₁ (δ = 1)
    const Vector<double> t = random_times<double>(sequences, 0.9, generator);
    Matrix<double> logits(vocabulary * length, sequences);
    std::normal_distribution<double> normal(0.0, 1.5);
    for (Index entry = 0; entry < logits.size(); ++entry) logits(entry) = normal(generator);

    const auto kl = [&](const Matrix<double>& z) {
      return flowmatch::generalized_kl_loss(path, source, t, x_t, x1, plain_softmax(z, vocabulary))(
          0, 0);
    };
    const auto cross_entropy = [&](const Matrix<double>& z) {
      return flowmatch::cross_entropy_loss<double>(x1, plain_softmax(z, vocabulary), vocabulary)(0,
                                                                                                 0);
    };
    Matrix<double> kl_gradient(logits.rows(), logits.cols());
    Matrix<double> ce_gradient(logits.rows(), logits.cols());
    const double kl_value =
        flowmatch::generalized_kl_loss_with_gradient(path, source, t, x_t, x1, logits, kl_gradient);
    const double ce_value =
        flowmatch::cross_entropy_loss_with_gradient<double>(x1, logits, vocabulary, ce_gradient);
    CHECK_THAT(kl_value, WithinAbs(kl(logits), 1e-13));
    CHECK_THAT(ce_value, WithinAbs(cross_entropy(logits), 1e-13));

    const double step = 1e-5;
    double kl_error = 0;
    double ce_error = 0;
    for (Index entry = 0; entry < logits.size(); ++entry) {
      Matrix<double> up = logits;
      Matrix<double> down = logits;
      up(entry) += step;
      down(entry) -= step;
      kl_error =
          std::max(kl_error, std::abs((kl(up) - kl(down)) / (2 * step) - kl_gradient(entry)));
      ce_error = std::max(
          ce_error,
          std::abs((cross_entropy(up) - cross_entropy(down)) / (2 * step) - ce_gradient(entry)));
    }
    std::cout << "logit gradient vs central differences (" << (masked ? "masked" : "uniform")
              << "): generalized KL max error " << kl_error << " (largest entry "
              << kl_gradient.cwiseAbs().maxCoeff() << "), cross-entropy " << ce_error << '\n';
    CHECK(kl_error <= 1e-9);
    CHECK(ce_error <= 1e-9);
  }
}

TEST_CASE("Float logit gradients agree with double ones", "[discrete][gradient]") {
  std::mt19937_64 generator(13);
  const auto source_double = DiscreteSource<double>::masked(5);
  const auto source_float = DiscreteSource<float>::masked(5);
  const TokenMatrix x1 = random_tokens(4, 8, 5, generator);
  const TokenMatrix x_t = random_tokens(4, 8, 6, generator);
  const Vector<double> t = random_times<double>(8, 0.9, generator);
  Matrix<double> logits(20, 8);
  std::normal_distribution<double> normal(0.0, 2.0);
  for (Index entry = 0; entry < logits.size(); ++entry) logits(entry) = normal(generator);
  const Matrix<float> logits_float = logits.cast<float>();
  const Vector<float> t_float = t.cast<float>();
  const Matrix<double> logits_rounded = logits_float.cast<double>();
  const Vector<double> t_rounded = t_float.cast<double>();
  Matrix<double> gradient(20, 8);
  Matrix<float> gradient_float(20, 8);
  const double value = flowmatch::generalized_kl_loss_with_gradient(
      MixturePath<CondOT<double>>(), source_double, t_rounded, x_t, x1, logits_rounded, gradient);
  const float value_float = flowmatch::generalized_kl_loss_with_gradient(
      MixturePath<CondOT<float>>(), source_float, t_float, x_t, x1, logits_float, gradient_float);
  CHECK_THAT(double(value_float), WithinAbs(value, 1e-5 * std::abs(value)));
  CHECK((gradient_float.cast<double>() - gradient).cwiseAbs().maxCoeff() <=
        1e-5 * gradient.cwiseAbs().maxCoeff());

  // A confident right answer: p_y = 1/(1 + 2e⁻²⁰) rounds to 1 in float, yet the loss
  // r·(1 − p_y) = 2e⁻²⁰/(1 + 2e⁻²⁰) at r = κ̇/(1 − κ) = 2 (t = 1/2) keeps its digits.
  const TokenMatrix token_zero = TokenMatrix::Zero(1, 1);
  Matrix<float> confident(3, 1);
  confident << 20.0f, 0.0f, 0.0f;
  Matrix<float> confident_gradient(3, 1);
  const double expected_loss = 2.0 * 2.0 * std::exp(-20.0) / (1.0 + 2.0 * std::exp(-20.0));
  const float confident_loss = flowmatch::generalized_kl_loss_with_gradient(
      MixturePath<CondOT<float>>(), DiscreteSource<float>::uniform(3),
      Vector<float>::Constant(1, 0.5f), token_zero, token_zero, confident, confident_gradient);
  CHECK_THAT(double(confident_loss), WithinAbs(expected_loss, 1e-6 * expected_loss));
  // Entry y: −r·p_y·(1 − p_y); the gradient sums to zero over the position.
  CHECK_THAT(double(confident_gradient(0)),
             WithinAbs(-expected_loss / (1.0 + 2.0 * std::exp(-20.0)), 1e-6 * expected_loss));
  CHECK_THAT(double(confident_gradient.sum()), WithinAbs(0.0, 1e-6 * expected_loss));
}

TEST_CASE("The parameter gradient through Mlp::backward matches central differences",
          "[discrete][gradient]") {
  const MixturePath<CondOT<double>> path;
  const auto source = DiscreteSource<double>::masked(3);
  std::mt19937_64 generator(17);
  MlpDenoiser<double> denoiser(small_config(true), generator);
  const TokenMatrix x1 = random_tokens(3, 10, 3, generator);
  const TokenMatrix x_t = path.sample(source.sample(3, 10, generator), x1,
                                      random_times<double>(10, 1.0, generator), generator);
  const Vector<double> t = random_times<double>(10, 0.95, generator);
  const Matrix<double> input = one_hot<double>(x_t, 3);
  for (const DiscreteLoss loss : {DiscreteLoss::generalized_kl, DiscreteLoss::cross_entropy}) {
    const auto loss_at = [&](const Mlp<double>& network, flowmatch::MlpWorkspace<double>* workspace,
                             Matrix<double>& logit_gradient) {
      Matrix<double> logits(9, 10);
      if (workspace != nullptr) {
        network.forward(*workspace, t, input, logits);
      } else {
        network(t, input, logits);
      }
      return loss == DiscreteLoss::generalized_kl
                 ? flowmatch::generalized_kl_loss_with_gradient(path, source, t, x_t, x1, logits,
                                                                logit_gradient)
                 : flowmatch::cross_entropy_loss_with_gradient<double>(x1, logits, 3,
                                                                       logit_gradient);
    };
    flowmatch::MlpWorkspace<double> workspace;
    Matrix<double> logit_gradient(9, 10);
    loss_at(denoiser.network(), &workspace, logit_gradient);
    flowmatch::MlpGradient<double> gradient;
    denoiser.network().backward(workspace, logit_gradient, gradient);
    const Index count = denoiser.network().parameters().size();
    double worst = 0;
    for (const Index parameter :
         {Index(0), Index(7), Index(31), count / 3, count / 2, count - 40, count - 9, count - 1}) {
      Mlp<double> shifted = denoiser.network();
      const double step = 1e-6;
      Matrix<double> unused(9, 10);
      shifted.parameters()(parameter) += step;
      const double up = loss_at(shifted, nullptr, unused);
      shifted.parameters()(parameter) -= 2 * step;
      const double down = loss_at(shifted, nullptr, unused);
      const double difference = (up - down) / (2 * step);
      worst = std::max(worst, std::abs(difference - gradient.flat()(parameter)) /
                                  std::max(1e-3, std::abs(difference)));
    }
    std::cout << "parameter gradient vs central differences ("
              << (loss == DiscreteLoss::generalized_kl ? "generalized KL" : "cross-entropy")
              << "): max relative error " << worst << '\n';
    CHECK(worst <= 1e-6);
  }
}

// ---------------------------------------------------------------------------------------------
// Training.

TEST_CASE("Training on an enumerable joint approaches the exact posterior",
          "[discrete][training]") {
  const DiscreteJoint joint = training_joint();
  const MixturePath<CondOT<double>> path;
  const auto source = DiscreteSource<double>::masked(3);
  const DiscreteJointPosterior<CondOT<double>> exact(joint, path, source);
  MlpDenoiserConfig config = small_config(true);
  config.hidden = {64, 64};
  config.activation = flowmatch::Activation::silu;
  std::mt19937_64 initial(3);
  const MlpDenoiser<double> untrained(config, initial);
  DiscreteTrainerOptions<double> options;
  options.batch_size = 128;
  options.learning_rate = flowmatch::ConstantSchedule<double>(3e-3);
  options.time_limit = 0.99;
  options.ema_decay = 0.99;
  DiscreteTrainer<CondOT<double>> trainer(
      untrained, path, source,
      [&joint](Index count, std::mt19937_64& generator) { return joint.sample(count, generator); },
      options, 42);
  const int steps = 1500;
  std::vector<double> losses;
  for (int step = 0; step < steps; ++step) losses.push_back(trainer.step());
  const auto mean_of = [&](int first, int count) {
    double total = 0;
    for (int step = first; step < first + count; ++step) total += losses[std::size_t(step)];
    return total / count;
  };
  std::cout << "generalized KL training loss, means over 100 steps:";
  for (int first = 0; first < steps; first += 300) std::cout << ' ' << mean_of(first, 100);
  std::cout << " ... " << mean_of(steps - 100, 100) << '\n';
  CHECK(mean_of(steps - 100, 100) < 0.8 * mean_of(0, 100));

  const MlpDenoiser<double> trained = trainer.ema_denoiser();
  {
    // The posteriors themselves, on x_t drawn from the path: ½·Σ_j |p_θ(j) − p(j)| per position.
    std::mt19937_64 generator(31);
    const Index count = 2000;
    const TokenMatrix x1 = joint.sample(count, generator);
    const Vector<double> t = random_times<double>(count, 0.99, generator);
    const TokenMatrix x_t = path.sample(source.sample(3, count, generator), x1, t, generator);
    Matrix<double> model_posterior(9, count);
    Matrix<double> exact_posterior(9, count);
    trained(t, x_t, model_posterior);
    exact(t, x_t, exact_posterior);
    const Matrix<double> distance =
        0.5 * (model_posterior - exact_posterior).cwiseAbs().reshaped(3, 3 * count).colwise().sum();
    std::cout << "posterior total variation, trained vs exact, over " << 3 * count
              << " positions: mean " << distance.mean() << ", max " << distance.maxCoeff() << '\n';
    CHECK(distance.mean() < 0.05);
  }
  const Index strata = 400;
  const auto [exact_elbo, exact_error] = mean_elbo(exact, joint, path, source, strata);
  const auto [trained_elbo, trained_error] = mean_elbo(trained, joint, path, source, strata);
  const auto [untrained_elbo, untrained_error] = mean_elbo(untrained, joint, path, source, strata);
  const double entropy =
      -(joint.probabilities().array() * joint.probabilities().array().log()).sum();
  std::cout << "ELBO averaged over the joint (nats): exact posterior " << exact_elbo << " ± "
            << exact_error << ", trained " << trained_elbo << " ± " << trained_error
            << ", untrained " << untrained_elbo << " ± " << untrained_error
            << "; entropy of the joint " << entropy << '\n';
  CHECK(trained_elbo - exact_elbo < 0.1);
  CHECK(untrained_elbo - exact_elbo > 0.5);

  flowmatch::DiscreteSamplerOptions<double> sampler_options;
  sampler_options.step_size = 1.0 / 32;
  const Index count = 4000;
  const auto tv_of = [&](const auto& denoiser) {
    std::mt19937_64 generator(99);
    const TokenMatrix x0 = source.sample(3, count, generator);
    return total_variation(
        joint,
        flowmatch::sample_discrete(denoiser, path, source, x0, sampler_options, generator).tokens);
  };
  const double exact_tv = tv_of(exact);
  const double trained_tv = tv_of(trained);
  const double untrained_tv = tv_of(untrained);
  std::cout << "total variation to the joint (" << count << " samples, 32 steps): exact posterior "
            << exact_tv << ", trained " << trained_tv << ", untrained " << untrained_tv << '\n';
  CHECK(trained_tv < 0.08);
  CHECK(trained_tv < 0.3 * untrained_tv);
}

TEMPLATE_TEST_CASE("Training in float lowers the cross-entropy", "[discrete][training]", float) {
  using Scalar = TestType;
  const DiscreteJoint joint = training_joint();
  std::mt19937_64 initial(8);
  DiscreteTrainerOptions<Scalar> options;
  options.batch_size = 64;
  options.learning_rate = flowmatch::ConstantSchedule<Scalar>(Scalar(3e-3));
  options.loss = DiscreteLoss::cross_entropy;
  options.max_gradient_norm = Scalar(1);
  DiscreteTrainer<CondOT<Scalar>> trainer(
      MlpDenoiser<Scalar>(small_config(false), initial), MixturePath<CondOT<Scalar>>(),
      DiscreteSource<Scalar>::uniform(3),
      [&joint](Index count, std::mt19937_64& generator) { return joint.sample(count, generator); },
      options, 4);
  double first = 0;
  double last = 0;
  for (int step = 0; step < 400; ++step) {
    const double loss = trainer.step();
    REQUIRE(std::isfinite(loss));
    if (step < 50) first += loss / 50;
    if (step >= 350) last += loss / 50;
  }
  std::cout << "float cross-entropy: first 50 steps " << first << ", last 50 " << last << '\n';
  CHECK(last < first - 0.05);
}

TEMPLATE_TEST_CASE("The same seed gives the same parameters after k steps", "[discrete][training]",
                   double, float) {
  using Scalar = TestType;
  const DiscreteJoint joint = training_joint();
  const auto run = [&](std::uint64_t seed) {
    std::mt19937_64 initial(1);
    DiscreteTrainerOptions<Scalar> options;
    options.batch_size = 32;
    DiscreteTrainer<CondOT<Scalar>> trainer(
        MlpDenoiser<Scalar>(small_config(true), initial), MixturePath<CondOT<Scalar>>(),
        DiscreteSource<Scalar>::masked(3),
        [&joint](Index count, std::mt19937_64& generator) {
          return joint.sample(count, generator);
        },
        options, seed);
    for (int step = 0; step < 10; ++step) trainer.step();
    CHECK(trainer.step_count() == 10);
    return Vector<Scalar>(trainer.denoiser().network().parameters());
  };
  const Vector<Scalar> first = run(77);
  CHECK(run(77) == first);
  CHECK(run(78) != first);
}

// ---------------------------------------------------------------------------------------------
// Bad input.

TEST_CASE("MlpDenoiser rejects bad tokens, shapes, times and bodies", "[discrete][errors]") {
  std::mt19937_64 generator(21);
  MlpDenoiser<double> denoiser(small_config(false), generator);
  Matrix<double> posterior(9, 2);
  const Vector<double> t = Vector<double>::Constant(2, 0.5);
  TokenMatrix x_t = TokenMatrix::Zero(3, 2);
  x_t(1, 1) = 3;  // the mask token of a denoiser without one
  CHECK_THROWS_WITH(denoiser(t, x_t, posterior),
                    Contains("MlpDenoiser: x_t has the mask token 3 in column 1 (row 1)"));
  CHECK_THROWS_AS(denoiser(t, TokenMatrix::Zero(2, 2), posterior), std::invalid_argument);
  Matrix<double> wrong(8, 2);
  CHECK_THROWS_WITH(denoiser(t, TokenMatrix::Zero(3, 2), wrong),
                    Contains("MlpDenoiser: posterior has shape 8x2, expected 9x2"));
  CHECK_THROWS_AS(denoiser(Vector<double>::Constant(2, 1.5), TokenMatrix::Zero(3, 2), posterior),
                  std::domain_error);
  CHECK_THROWS_AS(denoiser(Vector<double>::Constant(3, 0.5), TokenMatrix::Zero(3, 2), posterior),
                  std::invalid_argument);
  Matrix<double> input(9, 3);
  CHECK_THROWS_AS(denoiser.encode(TokenMatrix::Zero(3, 2), input), std::invalid_argument);

  MlpConfig body;
  body.dim = 8;
  CHECK_THROWS_WITH(
      MlpDenoiser<double>(3, false, Mlp<double>(body)),
      Contains("MlpDenoiser: body dim is 8, expected a multiple of the vocabulary 3"));
  body.dim = 9;
  body.cond_dim = 1;  // a one-hot label code has C + 1 >= 2 rows
  CHECK_THROWS_WITH(MlpDenoiser<double>(3, false, Mlp<double>(body)),
                    Contains("MlpDenoiser: body cond_dim is 1"));
  Mlp<double> not_finite(small_config(false).body());
  not_finite.parameters()(4) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(MlpDenoiser<double>(3, false, not_finite),
                    Contains("MlpDenoiser: body parameters has a non-finite entry at index 4"));
  MlpDenoiserConfig no_length = small_config(false);
  no_length.length = 0;
  CHECK_THROWS_WITH(MlpDenoiser<double>{no_length},
                    Contains("MlpDenoiserConfig: length is 0, expected >= 1"));

  // A NaN output bias makes the logits NaN (an infinite first-layer weight would saturate).
  denoiser.network().parameters().tail(1)(0) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_AS(denoiser(t, TokenMatrix::Zero(3, 2), posterior), flowmatch::numerical_error);
}

TEST_CASE("The logit gradients and the trainer reject bad input", "[discrete][errors]") {
  const MixturePath<CondOT<double>> path;
  const auto source = DiscreteSource<double>::masked(3);
  const Vector<double> t = Vector<double>::Constant(2, 0.5);
  const TokenMatrix tokens = TokenMatrix::Zero(3, 2);
  Matrix<double> logits = Matrix<double>::Zero(9, 2);
  Matrix<double> gradient(9, 2);
  Matrix<double> short_gradient(6, 2);
  CHECK_THROWS_WITH(
      flowmatch::generalized_kl_loss_with_gradient(
          path, source, t, tokens, tokens, Matrix<double>(Matrix<double>::Zero(6, 2)), gradient),
      Contains("generalized_kl_loss_with_gradient: logits has shape 6x2, expected 9x2"));
  CHECK_THROWS_WITH(flowmatch::generalized_kl_loss_with_gradient(path, source, t, tokens, tokens,
                                                                 logits, short_gradient),
                    Contains("generalized_kl_loss_with_gradient: gradient has shape 6x2"));
  TokenMatrix masked_target = tokens;
  masked_target(2, 1) = 3;
  CHECK_THROWS_WITH(flowmatch::generalized_kl_loss_with_gradient(path, source, t, tokens,
                                                                 masked_target, logits, gradient),
                    Contains("generalized_kl_loss_with_gradient: x1 has the mask token 3"));
  CHECK_THROWS_AS(
      flowmatch::generalized_kl_loss_with_gradient(path, source, Vector<double>::Constant(2, 1.0),
                                                   tokens, tokens, logits, gradient),
      std::domain_error);
  logits(4, 1) = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(
      flowmatch::cross_entropy_loss_with_gradient<double>(tokens, logits, 3, gradient),
      Contains("cross_entropy_loss_with_gradient: logits has a non-finite entry in column 1"));

  const DiscreteJoint joint = training_joint();
  const auto data = [&joint](Index count, std::mt19937_64& generator) {
    return joint.sample(count, generator);
  };
  std::mt19937_64 generator(23);
  const MlpDenoiser<double> masked_denoiser(small_config(true), generator);
  const MlpDenoiser<double> uniform_denoiser(small_config(false), generator);
  const DiscreteTrainerOptions<double> options;
  using Trainer = DiscreteTrainer<CondOT<double>>;
  CHECK_THROWS_WITH(Trainer(uniform_denoiser, path, source, data, options, 1),
                    Contains("DiscreteTrainer: denoiser states is 3, expected 4"));
  CHECK_THROWS_WITH(
      Trainer(masked_denoiser, path, DiscreteSource<double>::masked(4), data, options, 1),
      Contains("DiscreteTrainer: denoiser vocabulary is 3, expected 4"));
  CHECK_THROWS_WITH(Trainer(uniform_denoiser, path,
                            DiscreteSource<double>::given(Matrix<double>::Constant(3, 2, 1.0 / 3)),
                            data, options, 1),
                    Contains("DiscreteTrainer: denoiser length is 3, expected 2"));
  DiscreteTrainerOptions<double> bad_limit;
  bad_limit.time_limit = 0;
  CHECK_THROWS_WITH(Trainer(masked_denoiser, path, source, data, bad_limit, 1),
                    Contains("DiscreteTrainer: options.time_limit is 0, expected in (0, 1]"));
  CHECK_THROWS_AS(Trainer(masked_denoiser, path, source, Trainer::DataSampler(), options, 1),
                  std::invalid_argument);
  Trainer short_data(
      masked_denoiser, path, source,
      [](Index count, std::mt19937_64&) { return TokenMatrix(TokenMatrix::Zero(2, count)); },
      options, 1);
  CHECK_THROWS_WITH(short_data.step(),
                    Contains("DiscreteTrainer::step: data batch has shape 2x256, expected 3xN"));
  Trainer masked_data(
      masked_denoiser, path, source,
      [](Index count, std::mt19937_64&) { return TokenMatrix(TokenMatrix::Constant(3, count, 3)); },
      options, 1);
  CHECK_THROWS_WITH(masked_data.step(), Contains("DiscreteTrainer::step: data batch has the mask"));
}

// ---------------------------------------------------------------------------------------------
// Class labels: the conditional MlpDenoiser, label-dropout training, guided sampling.

namespace {

// Two classes over {0, 1, 2}²: class 0 puts weight 8 on the three sequences x₀ = x₁ and 1 on the
// others, class 1 weight 8 on x₁ = (x₀ + 1) mod 3; π = (1/2, 1/2). Each conditional is far from
// the mixture (total variation 1/3), and a denoiser must read the label to tell them apart.
flowmatch::LabelledDiscreteJoint two_class_joint() {
  Vector<double> equal(9);
  Vector<double> shifted(9);
  for (Index index = 0; index < 9; ++index) {
    const Index first = index % 3;
    const Index second = index / 3;
    equal(index) = first == second ? 8.0 : 1.0;
    shifted(index) = second == (first + 1) % 3 ? 8.0 : 1.0;
  }
  return flowmatch::LabelledDiscreteJoint(
      {DiscreteJoint(equal / equal.sum(), 3, 2), DiscreteJoint(shifted / shifted.sum(), 3, 2)},
      Vector<double>::Constant(2, 0.5));
}

MlpDenoiserConfig labelled_config() {
  MlpDenoiserConfig config;
  config.vocabulary = 3;
  config.length = 2;
  config.masked = true;
  config.labels = 2;
  config.hidden = {32, 32};
  config.time_embedding.frequencies = 2;
  return config;
}

template <class Scalar>
DiscreteTrainer<CondOT<Scalar>> checkpoint_trainer(std::uint64_t seed) {
  std::mt19937_64 initial(4);
  DiscreteTrainerOptions<Scalar> options;
  options.batch_size = 16;
  options.max_gradient_norm = Scalar(1);
  const DiscreteJoint joint = training_joint();
  return DiscreteTrainer<CondOT<Scalar>>(
      MlpDenoiser<Scalar>(small_config(true), initial), MixturePath<CondOT<Scalar>>(),
      DiscreteSource<Scalar>::masked(3),
      [joint](Index count, std::mt19937_64& generator) { return joint.sample(count, generator); },
      options, seed);
}

}  // namespace

static_assert(flowmatch::ConditionalDenoiser<MlpDenoiser<double>, double>);

TEST_CASE("A conditional MlpDenoiser reads the one-hot label; its plain call is the null label",
          "[discrete][guidance]") {
  std::mt19937_64 generator(12);
  const MlpDenoiser<double> denoiser(labelled_config(), generator);
  REQUIRE(denoiser.conditional());
  CHECK(denoiser.labels() == 2);
  CHECK(denoiser.null_label() == 2);
  CHECK(denoiser.network().cond_dim() == 3);
  const TokenMatrix x_t = random_tokens(2, 6, 4, generator);
  const Vector<double> t = random_times<double>(6, 1.0, generator);
  flowmatch::LabelVector labels(6);
  labels << 0, 1, 2, 1, 0, 2;
  // Written out: the body at (t, one_hot(x_t), e_y), then a softmax per position.
  Matrix<double> condition = Matrix<double>::Zero(3, 6);
  for (Index n = 0; n < 6; ++n) condition(labels(n), n) = 1;
  Matrix<double> logits(6, 6);
  denoiser.network()(t, one_hot<double>(x_t, 3), condition, logits);
  Matrix<double> posterior(6, 6);
  denoiser(t, x_t, labels, posterior);
  CHECK((posterior - plain_softmax(logits, 3)).cwiseAbs().maxCoeff() < 1e-14);
  // The plain call is the call with the null label, bit for bit.
  Matrix<double> null(6, 6);
  Matrix<double> plain(6, 6);
  denoiser(t, x_t, flowmatch::LabelVector::Constant(6, 2), null);
  denoiser(t, x_t, plain);
  CHECK(plain == null);
  // The labels change the output.
  Matrix<double> other(6, 6);
  denoiser(t, x_t, flowmatch::LabelVector::Zero(6), other);
  CHECK((other - null).cwiseAbs().maxCoeff() > 1e-6);

  labels(3) = 3;
  CHECK_THROWS_WITH(denoiser(t, x_t, labels, posterior), Contains("MlpDenoiser: labels(3) is 3"));
  CHECK_THROWS_AS(denoiser(t, x_t, flowmatch::LabelVector::Zero(5), posterior),
                  std::invalid_argument);
  const MlpDenoiser<double> plain_denoiser(small_config(true), generator);
  CHECK_FALSE(plain_denoiser.conditional());
  Matrix<double> nine(9, 6);
  CHECK_THROWS_WITH(
      plain_denoiser(t, random_tokens(3, 6, 4, generator), flowmatch::LabelVector::Zero(6), nine),
      Contains("is unconditional"));
  MlpDenoiserConfig negative = labelled_config();
  negative.labels = -1;
  CHECK_THROWS_AS(MlpDenoiser<double>{negative}, std::invalid_argument);
}

TEST_CASE("Label-dropout training gives guided samples near the right conditional",
          "[discrete][guidance][training]") {
  const auto joint = two_class_joint();
  const MixturePath<CondOT<double>> path;
  const auto source = DiscreteSource<double>::masked(3);
  std::mt19937_64 initial(6);
  DiscreteTrainerOptions<double> options;
  options.batch_size = 64;
  options.learning_rate = flowmatch::ConstantSchedule<double>(3e-3);
  options.time_limit = 0.99;
  options.ema_decay = 0.98;
  options.label_dropout = 0.2;
  DiscreteTrainer<CondOT<double>> trainer(
      MlpDenoiser<double>(labelled_config(), initial), path, source,
      [&joint](Index count, std::mt19937_64& generator) { return joint.sample(count, generator); },
      options, 7);
  for (int step = 0; step < 2500; ++step) trainer.step();
  // Unmasked tokens keep their value: the exact posterior there (discrete/carry_over.hpp).
  const flowmatch::CarryOverDenoiser trained(trainer.ema_denoiser());
  static_assert(flowmatch::ConditionalDenoiser<decltype(trained), double>);

  flowmatch::DiscreteSamplerOptions<double> sampler_options;
  sampler_options.step_size = 1.0 / 64;
  const Index count = 3000;
  for (Token label = 0; label < 2; ++label) {
    std::mt19937_64 generator(100 + static_cast<std::uint64_t>(label));
    const TokenMatrix x0 = source.sample(2, count, generator);
    const auto result = flowmatch::sample_discrete_guided(
        trained, path, source, x0, flowmatch::LabelVector::Constant(count, label),
        Vector<double>::Ones(count), sampler_options, generator);
    const double to_conditional = total_variation(joint.conditional(label), result.tokens);
    const double to_marginal = total_variation(joint.marginal(), result.tokens);
    std::cout << "label " << label << ", w = 1: total variation to p(x | y) " << to_conditional
              << ", to p(x) " << to_marginal << '\n';
    // p(x | y) and p(x) are 1/3 apart in total variation.
    CHECK(to_conditional < 0.1);
    CHECK(to_marginal > to_conditional + 0.15);
  }
  // The null label learnt by dropout: unguided samples are near the mixture.
  std::mt19937_64 generator(300);
  const TokenMatrix x0 = source.sample(2, count, generator);
  const auto unconditional =
      flowmatch::sample_discrete(trained, path, source, x0, sampler_options, generator);
  const double to_marginal = total_variation(joint.marginal(), unconditional.tokens);
  std::cout << "null label: total variation to p(x) " << to_marginal << '\n';
  CHECK(to_marginal < 0.1);
}

TEST_CASE("The conditional trainer rejects mismatched data and dropout", "[discrete][errors]") {
  const auto joint = two_class_joint();
  using Trainer = DiscreteTrainer<CondOT<double>>;
  const MixturePath<CondOT<double>> path;
  const auto source = DiscreteSource<double>::masked(3);
  const MlpDenoiser<double> conditional(labelled_config());
  MlpDenoiserConfig plain_config = labelled_config();
  plain_config.labels = 0;
  const MlpDenoiser<double> plain(plain_config);
  const Trainer::LabelledDataSampler labelled = [&joint](Index count, std::mt19937_64& generator) {
    return joint.sample(count, generator);
  };
  const Trainer::DataSampler unlabelled = [&joint](Index count, std::mt19937_64& generator) {
    return joint.marginal().sample(count, generator);
  };
  DiscreteTrainerOptions<double> options;
  options.batch_size = 8;
  CHECK_NOTHROW(Trainer(conditional, path, source, labelled, options, 1));
  CHECK_THROWS_WITH(Trainer(conditional, path, source, unlabelled, options, 1),
                    Contains("DiscreteTrainer: denoiser is conditional"));
  CHECK_THROWS_WITH(Trainer(plain, path, source, labelled, options, 1),
                    Contains("DiscreteTrainer: denoiser is unconditional"));
  options.label_dropout = 1.5;
  CHECK_THROWS_WITH(Trainer(conditional, path, source, labelled, options, 1),
                    Contains("DiscreteTrainer: options.label_dropout is 1.5"));
  options.label_dropout = 0.1;
  Trainer bad_labels(
      conditional, path, source,
      [&joint](Index count, std::mt19937_64& generator) {
        auto drawn = joint.sample(count, generator);
        drawn.labels(0) = 5;
        return drawn;
      },
      options, 1);
  CHECK_THROWS_WITH(bad_labels.step(), Contains("DiscreteTrainer::step: data labels(0) is 5"));
}

// ---------------------------------------------------------------------------------------------
// Checkpoints.

TEMPLATE_TEST_CASE("A DiscreteTrainer resumed from a checkpoint file continues bit for bit",
                   "[discrete][training][checkpoint]", double, float) {
  using Scalar = TestType;
  auto uninterrupted = checkpoint_trainer<Scalar>(21);
  for (int step = 0; step < 12; ++step) uninterrupted.step();

  auto first_part = checkpoint_trainer<Scalar>(21);
  for (int step = 0; step < 5; ++step) first_part.step();
  const std::string path =
      (std::filesystem::temp_directory_path() /
       ("flowmatch_test_discrete_checkpoint_" + std::to_string(sizeof(Scalar)) + ".safetensors"))
          .string();
  flowmatch::save_checkpoint(path, first_part.checkpoint());
  auto resumed = checkpoint_trainer<Scalar>(4242);  // another seed: the state comes from the file
  resumed.restore(flowmatch::load_checkpoint<Scalar>(path));
  std::filesystem::remove(path);
  CHECK(resumed.step_count() == 5);
  for (int step = 0; step < 7; ++step) resumed.step();

  const auto expected = uninterrupted.checkpoint();
  const auto actual = resumed.checkpoint();
  CHECK(actual.step == 12);
  CHECK(resumed.denoiser().network().parameters() ==
        uninterrupted.denoiser().network().parameters());
  flowmatch_test::check_same_training_state(actual, expected);
  CHECK(resumed.ema_denoiser().network().parameters() ==
        uninterrupted.ema_denoiser().network().parameters());

  // The comparison can fail: without the restore, the other seed gives other parameters.
  auto unrestored = checkpoint_trainer<Scalar>(4242);
  for (int step = 0; step < 12; ++step) unrestored.step();
  CHECK(unrestored.denoiser().network().parameters() !=
        uninterrupted.denoiser().network().parameters());
}

TEST_CASE("A conditional DiscreteTrainer restored in memory continues bit for bit",
          "[discrete][training][checkpoint][guidance]") {
  // The label-dropout draws come from the trainer's generator, which the checkpoint holds.
  const auto joint = two_class_joint();
  const auto make = [&joint](std::uint64_t seed) {
    std::mt19937_64 initial(9);
    DiscreteTrainerOptions<double> options;
    options.batch_size = 16;
    options.label_dropout = 0.5;
    return DiscreteTrainer<CondOT<double>>(
        MlpDenoiser<double>(labelled_config(), initial), MixturePath<CondOT<double>>(),
        DiscreteSource<double>::masked(3),
        [&joint](Index count, std::mt19937_64& generator) {
          return joint.sample(count, generator);
        },
        options, seed);
  };
  auto uninterrupted = make(5);
  for (int step = 0; step < 8; ++step) uninterrupted.step();
  auto first_part = make(5);
  for (int step = 0; step < 3; ++step) first_part.step();
  auto resumed = make(6);
  resumed.restore(first_part.checkpoint());
  for (int step = 0; step < 5; ++step) resumed.step();
  CHECK(resumed.step_count() == 8);
  CHECK(resumed.denoiser().network().parameters() ==
        uninterrupted.denoiser().network().parameters());
  CHECK(resumed.checkpoint().ema.average == uninterrupted.checkpoint().ema.average);
  auto unrestored = make(6);
  for (int step = 0; step < 8; ++step) unrestored.step();
  CHECK(unrestored.denoiser().network().parameters() !=
        uninterrupted.denoiser().network().parameters());
}

TEST_CASE("DiscreteTrainer checkpoints: corrupt and mismatched files give typed errors",
          "[discrete][checkpoint][errors]") {
  auto trainer = checkpoint_trainer<double>(3);
  trainer.step();
  const auto before = trainer.checkpoint();
  const std::string path =
      (std::filesystem::temp_directory_path() / "flowmatch_test_discrete_corrupt.safetensors")
          .string();
  {
    std::ofstream garbage(path, std::ios::binary);
    garbage << "\x10\x00\x00\x00\x00\x00\x00\x00{not json at all";
  }
  CHECK_THROWS_AS(flowmatch::load_checkpoint<double>(path), flowmatch::io::format_error);
  std::filesystem::remove(path);
  CHECK_THROWS_AS(flowmatch::load_checkpoint<double>(path), flowmatch::io::io_error);

  // A file without Adam's state is not a checkpoint.
  auto file = flowmatch::checkpoint_to_safetensors(before);
  file.tensors.erase("optimizer.second_moment");
  CHECK_THROWS_AS(flowmatch::checkpoint_from_safetensors<double>(file),
                  flowmatch::io::format_error);

  // A checkpoint of another body shape, or a garbled generator, changes nothing.
  std::mt19937_64 initial(1);
  MlpDenoiserConfig wider = small_config(true);
  wider.hidden = {8};
  DiscreteTrainer<CondOT<double>> other(
      MlpDenoiser<double>(wider, initial), MixturePath<CondOT<double>>(),
      DiscreteSource<double>::masked(3),
      [](Index count, std::mt19937_64&) { return TokenMatrix(TokenMatrix::Zero(3, count)); },
      DiscreteTrainerOptions<double>(), 1);
  CHECK_THROWS_WITH(trainer.restore(other.checkpoint()),
                    Contains("DiscreteTrainer::restore: checkpoint.model has another shape"));
  auto garbled = before;
  garbled.generator_state = "not a generator state";
  CHECK_THROWS_WITH(trainer.restore(garbled),
                    Contains("DiscreteTrainer::restore: checkpoint.generator_state"));
  auto short_moments = before;
  short_moments.optimizer.first_moment.conservativeResize(3);
  CHECK_THROWS_AS(trainer.restore(short_moments), std::invalid_argument);
  const auto after = trainer.checkpoint();
  CHECK(after.step == before.step);
  CHECK(after.generator_state == before.generator_state);
  CHECK(trainer.denoiser().network().parameters() == before.model.parameters());
}

}  // namespace test_discrete_train
