// The LibTorch component (flowmatch/interop/torch.hpp), built only when LibTorch is found. The
// fixtures in tests/data/torch and their PyTorch references come from
// tests/torch/make_fixtures.py. This is the one translation unit of the tests that includes
// LibTorch's headers.
#include "field_contract.hpp"  // first: it counts allocations (allocation_counter.hpp)

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "flowmatch/core/errors.hpp"
#include "flowmatch/discrete/conditional_denoiser.hpp"
#include "flowmatch/discrete/denoiser.hpp"
#include "flowmatch/discrete/elbo.hpp"
#include "flowmatch/discrete/guidance.hpp"
#include "flowmatch/discrete/mixture_path.hpp"
#include "flowmatch/discrete/sampler.hpp"
#include "flowmatch/discrete/source.hpp"
#include "flowmatch/discrete/tokens.hpp"
#include "flowmatch/guidance/classifier_free.hpp"
#include "flowmatch/interop/torch.hpp"
#include "flowmatch/interop/torch_denoiser.hpp"
#include "flowmatch/io/io_error.hpp"
#include "flowmatch/io/npy.hpp"
#include "flowmatch/likelihood/divergence.hpp"
#include "flowmatch/likelihood/log_likelihood.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/score/exact_score.hpp"
#include "flowmatch/solver/integrate.hpp"
#include "flowmatch/solver/method.hpp"

// LibTorch's c10/util/logging_is_not_google_glog.h redefines CHECK as a fatal logging check
// (a failure aborts, a success is not counted): restore Catch's.
#undef CHECK
#define CHECK(...) \
  INTERNAL_CATCH_TEST("CHECK", Catch::ResultDisposition::ContinueOnFailure, __VA_ARGS__)

namespace {

using flowmatch::ConditionalTorchScriptField;
using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::TorchCondition;
using flowmatch::TorchScriptField;
using flowmatch::Vector;
using flowmatch_test::FieldContract;

std::string fixture(const std::string& name) {
  return std::string(FLOWMATCH_TEST_DATA_DIR) + "/torch/" + name;
}

template <class Scalar = double>
Matrix<Scalar> batch(const std::string& name) {
  return flowmatch::io::load_npy_batch<Scalar>(fixture(name));
}

/// max |a − b| relative to max |b|.
template <class A, class B>
double relative_error(const A& a, const B& b) {
  return static_cast<double>((a - b).cwiseAbs().maxCoeff()) /
         static_cast<double>(b.cwiseAbs().maxCoeff());
}

TorchScriptField<double> mlp64() {
  return TorchScriptField<double>(fixture("mlp_float64.pt"), {3});
}

TorchScriptField<double> image64() {
  return TorchScriptField<double>(fixture("image_float64.pt"), {1, 4, 4});
}

ConditionalTorchScriptField<double> labels64() {
  return ConditionalTorchScriptField<double>(fixture("labels_float64.pt"), {2},
                                             TorchCondition::labels());
}

// The labels of the fixture as a 1×N condition matrix.
Matrix<double> fixture_labels() {
  const flowmatch::io::NpyArray array = flowmatch::io::read_npy(fixture("labels_labels.npy"));
  Matrix<double> labels(1, static_cast<Index>(array.integers.size()));
  for (Index n = 0; n < labels.cols(); ++n) {
    labels(0, n) = static_cast<double>(array.integers[static_cast<std::size_t>(n)]);
  }
  return labels;
}

// Guidance with weight 2 against the null label 3 of the fixture.
flowmatch::GuidanceOptions<double> null_label_three() {
  flowmatch::GuidanceOptions<double> options;
  options.null_condition = Vector<double>::Constant(1, 3.0);
  return options;
}

auto guided_labels(Index samples) {
  Matrix<double> labels(1, samples);
  for (Index n = 0; n < samples; ++n) labels(0, n) = static_cast<double>(n % 3);
  return flowmatch::classifier_free_guidance(labels64(), labels, 2.0, null_label_three());
}

// Batched matrix products may round differently for another batch width.
FieldContract torch_contract(Index dim) {
  FieldContract contract;
  contract.dim = dim;
  contract.columns_independent = false;
  return contract;
}

FieldContract guided_contract() {
  FieldContract contract = torch_contract(2);
  contract.samples = 5;
  return contract;
}

// The token batch of the denoiser fixtures (int64 [N, L]) as an L×N matrix.
flowmatch::TokenMatrix denoiser_tokens() {
  const flowmatch::io::NpyArray array = flowmatch::io::read_npy(fixture("denoiser_tokens.npy"));
  const Index sequences = static_cast<Index>(array.shape.at(0));
  const Index length = static_cast<Index>(array.shape.at(1));
  return Eigen::Map<const flowmatch::TokenMatrix>(array.integers.data(), length, sequences);
}

// The function of denoiser_float64.pt computed from its exported parameters with Eigen: logits
// W·[E(x), t] + b + P_l at position l, then a softmax per position (an independent reference).
class EigenFixtureDenoiser {
 public:
  EigenFixtureDenoiser()
      : embedding_(batch("denoiser_embedding.npy")),  // width × (K + 1): column = token
        weight_(batch("denoiser_head_weight.npy")),   // (width + 1) × K
        bias_(batch("denoiser_head_bias.npy")),       // 1 × K
        position_(batch("denoiser_position.npy")) {}  // K × L

  [[nodiscard]] Index vocabulary() const { return weight_.cols(); }

  void operator()(const flowmatch::ConstVectorRef<double>& t, const flowmatch::ConstTokenRef& x_t,
                  flowmatch::MatrixRef<double> posterior) const {
    const Index vocabulary = weight_.cols();
    const Index width = embedding_.rows();
    for (Index sequence = 0; sequence < x_t.cols(); ++sequence) {
      for (Index position = 0; position < x_t.rows(); ++position) {
        Vector<double> logits =
            weight_.topRows(width).transpose() * embedding_.col(x_t(position, sequence)) +
            weight_.row(width).transpose() * t(sequence) + bias_.row(0).transpose() +
            position_.col(position);
        logits = (logits.array() - logits.maxCoeff()).exp().matrix();
        posterior.col(sequence).segment(position * vocabulary, vocabulary) = logits / logits.sum();
      }
    }
  }

 private:
  Matrix<double> embedding_;
  Matrix<double> weight_;
  Matrix<double> bias_;
  Matrix<double> position_;
};

}  // namespace

// @p expression throws @p type with a message that @p matcher accepts.
#define CHECK_THROWS_TYPED(expression, type, matcher) \
  CHECK_THROWS_AS(expression, type);                  \
  CHECK_THROWS_WITH(expression, matcher)

FLOWMATCH_FIELD_CONTRACT("TorchScript MLP (traced, float64)", mlp64(), torch_contract(3))
FLOWMATCH_FIELD_CONTRACT("TorchScript convolution on 1x4x4 images (float64)", image64(),
                         torch_contract(16))
FLOWMATCH_FIELD_CONTRACT("TorchScript label model under guidance (float64)", guided_labels(5),
                         guided_contract())

TEST_CASE("TorchScript velocities equal PyTorch's on the same module", "[torch]") {
  SECTION("unconditional, float32") {
    const TorchScriptField<float> field(fixture("mlp_float32.pt"), {3});
    CHECK(field.dim() == 3);
    const Matrix<float> x = batch<float>("mlp_x0.npy");
    const Matrix<float> velocity = flowmatch::evaluate_velocity<float>(field, 0.3f, x);
    CHECK(relative_error(velocity, batch<float>("mlp_velocity_t0.3.npy")) < 1e-6);
  }
  SECTION("float conditions [N, k], float32") {
    const ConditionalTorchScriptField<float> field(fixture("vector_condition_float32.pt"), {2},
                                                   TorchCondition::vectors(2));
    CHECK(field.condition_dim() == 2);
    const Matrix<float> x = batch<float>("vector_x.npy");
    const Matrix<float> conditions = batch<float>("vector_conditions.npy");
    Matrix<float> velocity(2, x.cols());
    flowmatch::evaluate_conditional_velocity<float>(field, 0.7f, x, conditions, velocity);
    CHECK(relative_error(velocity, batch<float>("vector_velocity_t0.7.npy")) < 1e-6);
  }
}

TEST_CASE("TorchScript fixed-step samples equal a PyTorch loop to float32 rounding", "[torch]") {
  SECTION("MLP, Euler and midpoint, 10 steps") {
    const TorchScriptField<float> field(fixture("mlp_float32.pt"), {3});
    const Matrix<float> x0 = batch<float>("mlp_x0.npy");
    flowmatch::SolverOptions<float> options;
    options.step_size = 0.1f;
    options.method = flowmatch::Method::euler;
    const auto euler = flowmatch::sample(field, x0, options);
    CHECK(euler.stats.nfe == 10);
    CHECK(relative_error(euler.state, batch<float>("mlp_euler_10.npy")) <= 1e-5);
    options.method = flowmatch::Method::midpoint;
    const auto midpoint = flowmatch::sample(field, x0, options);
    CHECK(relative_error(midpoint.state, batch<float>("mlp_midpoint_10.npy")) <= 1e-5);
  }
  SECTION("images [N, 1, 4, 4], Euler, 8 steps") {
    const TorchScriptField<float> field(fixture("image_float32.pt"), {1, 4, 4});
    CHECK(field.dim() == 16);
    flowmatch::SolverOptions<float> options;
    options.method = flowmatch::Method::euler;
    options.step_size = 0.125f;
    const auto result = flowmatch::sample(field, batch<float>("image_x0.npy"), options);
    CHECK(relative_error(result.state, batch<float>("image_euler_8.npy")) <= 1e-5);
  }
}

TEST_CASE("TorchScript guidance with int64 labels equals a guided PyTorch loop", "[torch]") {
  const ConditionalTorchScriptField<double> field = labels64();
  const Matrix<double> x0 = batch("labels_x0.npy");
  const auto guided = flowmatch::classifier_free_guidance(std::cref(field), fixture_labels(), 2.0,
                                                          null_label_three());
  flowmatch::SolverOptions<double> options;
  options.method = flowmatch::Method::euler;
  options.step_size = 0.1;
  const auto result = flowmatch::sample(guided, x0, options);
  CHECK(relative_error(result.state, batch("labels_guided_w2_euler_10.npy")) < 1e-12);

  SECTION("per-sample weights: weight 1 is the conditional field alone") {
    const auto conditional = flowmatch::classifier_free_guidance(
        std::cref(field), fixture_labels(), Vector<double>::Ones(x0.cols()), null_label_three());
    Matrix<double> expected(2, x0.cols());
    field(0.25, x0, fixture_labels(), expected);
    CHECK(relative_error(flowmatch::evaluate_velocity<double>(conditional, 0.25, x0), expected) <
          1e-14);
  }
}

TEST_CASE("TorchScript exact divergence is the trace of PyTorch's Jacobian", "[torch]") {
  SECTION("MLP") {
    const Matrix<double> x = batch("mlp64_x.npy");
    Vector<double> divergence(x.cols());
    flowmatch::exact_divergence<double>(mlp64(), 0.6, x, divergence);
    const Matrix<double> expected = batch("mlp64_divergence_t0.6.npy");
    CHECK(relative_error(divergence, expected.transpose()) < 1e-12);
  }
  SECTION("images, in one pass and in chunks of two directions") {
    const Matrix<double> x = batch("image64_x.npy");
    const Matrix<double> expected = batch("image64_divergence_t0.6.npy");
    Vector<double> divergence(x.cols());
    flowmatch::exact_divergence<double>(image64(), 0.6, x, divergence);
    CHECK(relative_error(divergence, expected.transpose()) < 1e-12);

    flowmatch::TorchScriptOptions chunked;
    chunked.max_pass_rows = 2 * x.cols();  // 8 passes of 2 directions each
    const TorchScriptField<double> field(fixture("image_float64.pt"), {1, 4, 4}, chunked);
    Vector<double> chunked_divergence(x.cols());
    Matrix<double> velocity(16, x.cols());
    field.velocity_divergence(0.6, x, velocity, chunked_divergence);
    CHECK(relative_error(chunked_divergence, expected.transpose()) < 1e-12);
    CHECK(relative_error(velocity, flowmatch::evaluate_velocity<double>(field, 0.6, x)) < 1e-13);

    Matrix<double> gradient(16, x.cols());
    Matrix<double> chunked_gradient(16, x.cols());
    image64().divergence_gradient(0.6, x, gradient);
    field.divergence_gradient(0.6, x, chunked_gradient);
    CHECK(relative_error(chunked_gradient, gradient) < 1e-12);

    // Chunks of 3 directions: 6 backward passes through one forward pass over 3 copies (and one
    // for the cotangent), the last pass padded with zero directions past d = 16. The fused
    // member's vjp, taken in the first pass, equals the plain one.
    flowmatch::TorchScriptOptions uneven;
    uneven.max_pass_rows = 3 * x.cols();
    const TorchScriptField<double> padded(fixture("image_float64.pt"), {1, 4, 4}, uneven);
    std::mt19937_64 generator(5);
    Matrix<double> cotangent(16, x.cols());
    for (Index k = 0; k < cotangent.size(); ++k) {
      cotangent.data()[k] = std::normal_distribution<double>()(generator);
    }
    Matrix<double> fused_velocity(16, x.cols()), fused_vjp(16, x.cols());
    Matrix<double> fused_gradient(16, x.cols()), plain_vjp(16, x.cols());
    padded.velocity_vjp_divergence_gradient(0.6, x, cotangent, fused_velocity, fused_vjp,
                                            fused_gradient);
    image64().vjp(0.6, x, cotangent, plain_vjp);
    CHECK(relative_error(fused_vjp, plain_vjp) < 1e-12);
    CHECK(relative_error(fused_gradient, gradient) < 1e-12);
    CHECK(relative_error(fused_velocity, flowmatch::evaluate_velocity<double>(field, 0.6, x)) <
          1e-13);
    padded.velocity_divergence(0.6, x, velocity, chunked_divergence);
    CHECK(relative_error(chunked_divergence, expected.transpose()) < 1e-12);
  }
}

TEST_CASE("TorchScript log-likelihoods: exact, Hutchinson, and both directions agree", "[torch]") {
  const TorchScriptField<double> field = mlp64();
  const Matrix<double> x0 = batch("mlp64_x.npy");
  auto options = flowmatch::SolverOptions<double>::for_density();
  options.rtol = 1e-9;
  options.atol = 1e-9;
  // Noise → data with log-densities, then data → noise: the same log p_1 to the tolerance.
  const auto sampled = flowmatch::sample_with_log_likelihood(field, x0, options);
  const auto encoded = flowmatch::log_likelihood(field, sampled.data, options);
  CHECK(relative_error(encoded.log_prob, sampled.log_prob) < 1e-6);
  CHECK(relative_error(encoded.noise, x0) < 1e-6);

  // Hutchinson with fixed Rademacher probes: unbiased, standard deviation ∝ 1/√K.
  std::mt19937_64 generator(3);
  const flowmatch::Hutchinson hutchinson(512, flowmatch::ProbeDistribution::rademacher, generator);
  const auto estimated = flowmatch::log_likelihood(field, sampled.data, options, hutchinson);
  CHECK((estimated.log_prob - encoded.log_prob).cwiseAbs().maxCoeff() < 0.1);
  CHECK(estimated.log_prob != encoded.log_prob);
}

TEST_CASE("TorchScript exact score is the gradient of the log-likelihood", "[torch]") {
  const TorchScriptField<double> field = mlp64();
  const Matrix<double> x = batch("mlp64_x.npy").leftCols(2);
  auto options = flowmatch::SolverOptions<double>::for_density();
  options.rtol = 1e-10;
  options.atol = 1e-10;
  const auto score = flowmatch::exact_score(field, 1.0, x, options);
  // Central differences of log p_1: truncation O(h²), solver error O(tol / h).
  const double step = 1e-3;
  Matrix<double> differences(x.rows(), x.cols());
  for (Index i = 0; i < x.rows(); ++i) {
    Matrix<double> forward = x;
    Matrix<double> backward = x;
    forward.row(i).array() += step;
    backward.row(i).array() -= step;
    differences.row(i) = (flowmatch::log_likelihood(field, forward, options).log_prob -
                          flowmatch::log_likelihood(field, backward, options).log_prob)
                             .transpose() /
                         (2 * step);
  }
  CHECK(relative_error(score.score, differences) < 1e-5);
}

TEST_CASE("TorchScript modules that break the convention give typed errors", "[torch]") {
  using Catch::Matchers::Contains;
  SECTION("a forward without t") {
    CHECK_THROWS_TYPED(TorchScriptField<float>(fixture("wrong_signature.pt"), {3}),
                       flowmatch::torch_model_error, Contains("takes (x: Tensor)"));
  }
  SECTION("an output that is not the shape of x") {
    CHECK_THROWS_TYPED(TorchScriptField<float>(fixture("wrong_output_shape.pt"), {3}),
                       flowmatch::torch_model_error, Contains("has shape [1, 6]"));
  }
  SECTION("a float64 module as a float32 field, and the reverse") {
    CHECK_THROWS_TYPED(TorchScriptField<float>(fixture("mlp_float64.pt"), {3}),
                       flowmatch::torch_model_error, Contains("has dtype Double"));
    CHECK_THROWS_TYPED(TorchScriptField<double>(fixture("mlp_float32.pt"), {3}),
                       flowmatch::torch_model_error, Contains("has dtype Float"));
  }
  SECTION("a conditional module as a plain field, and the reverse") {
    CHECK_THROWS_AS(TorchScriptField<double>(fixture("labels_float64.pt"), {2}),
                    flowmatch::torch_model_error);
    CHECK_THROWS_AS(ConditionalTorchScriptField<double>(fixture("mlp_float64.pt"), {3},
                                                        TorchCondition::labels()),
                    flowmatch::torch_model_error);
  }
  SECTION("a sample shape the module cannot take") {
    CHECK_THROWS_TYPED(TorchScriptField<float>(fixture("mlp_float32.pt"), {4}),
                       flowmatch::torch_model_error, Contains("failed on x of shape [1, 4]"));
    CHECK_THROWS_AS(TorchScriptField<float>(fixture("mlp_float32.pt"), {0}), std::invalid_argument);
  }
  SECTION("files that are missing or not TorchScript") {
    CHECK_THROWS_AS(TorchScriptField<float>(fixture("missing.pt"), {3}), flowmatch::io::io_error);
    CHECK_THROWS_AS(TorchScriptField<float>(fixture("mlp_x0.npy"), {3}),
                    flowmatch::io::format_error);
  }
  SECTION("a non-finite velocity names the time and the sample") {
    const TorchScriptField<float> field(fixture("non_finite.pt"), {3});
    const Matrix<float> x = Matrix<float>::Ones(3, 2);
    CHECK(flowmatch::evaluate_velocity<float>(field, 0.25f, x).allFinite());
    try {
      static_cast<void>(flowmatch::evaluate_velocity<float>(field, 0.5f, x));
      FAIL("no numerical_error");
    } catch (const flowmatch::numerical_error& error) {
      CHECK(error.time() == 0.5);
      CHECK(error.sample() == 0);
    }
  }
  SECTION("batches and labels of the wrong form") {
    const TorchScriptField<float> field(fixture("mlp_float32.pt"), {3});
    CHECK_THROWS_AS(flowmatch::evaluate_velocity<float>(field, 0.5f, Matrix<float>::Zero(4, 2)),
                    std::invalid_argument);
    const ConditionalTorchScriptField<double> conditional = labels64();
    const Matrix<double> x = Matrix<double>::Zero(2, 2);
    Matrix<double> out(2, 2);
    Matrix<double> labels(1, 2);
    labels << 0.0, 1.5;
    CHECK_THROWS_WITH(conditional(0.5, x, labels, out), Contains("a whole number >= 0"));
    labels << 0.0, 7.0;  // the embedding has 4 rows
    CHECK_THROWS_TYPED(conditional(0.5, x, labels, out), flowmatch::torch_model_error,
                       Contains("index out of range"));
  }
}

static_assert(flowmatch::Denoiser<flowmatch::TorchScriptDenoiser<float>, float>);
static_assert(flowmatch::Denoiser<flowmatch::TorchScriptDenoiser<double>, double>);
static_assert(flowmatch::Denoiser<EigenFixtureDenoiser, double>);
static_assert(
    flowmatch::ConditionalDenoiser<flowmatch::ConditionalTorchScriptDenoiser<double>, double>);
static_assert(!flowmatch::ConditionalDenoiser<flowmatch::TorchScriptDenoiser<double>, double>);

TEST_CASE("TorchScript denoiser posteriors equal PyTorch's softmax of the logits", "[torch]") {
  const flowmatch::TokenMatrix tokens = denoiser_tokens();  // 3×5, mask token 4 included
  const Matrix<double> times = batch("denoiser_t.npy");     // 1×5
  REQUIRE(tokens.rows() == 3);
  SECTION("float32") {
    const flowmatch::TorchScriptDenoiser<float> denoiser(fixture("denoiser_float32.pt"), 4, 3);
    CHECK(denoiser.vocabulary() == 4);
    CHECK(denoiser.length() == 3);
    const Vector<float> t = times.row(0).transpose().cast<float>();
    Matrix<float> posterior(12, tokens.cols());
    denoiser(t, tokens, posterior);
    const Matrix<float> expected = batch<float>("denoiser_float32_posterior.npy");
    CHECK((posterior - expected).cwiseAbs().maxCoeff() < 1e-6f);
    for (Index n = 0; n < tokens.cols(); ++n) {
      for (Index l = 0; l < 3; ++l) {
        CHECK(std::abs(flowmatch::position_distribution(posterior, 4, l, n).sum() - 1.0f) < 1e-6f);
      }
    }
  }
  SECTION("float64, against PyTorch and an Eigen computation from the parameters") {
    const flowmatch::TorchScriptDenoiser<double> denoiser(fixture("denoiser_float64.pt"), 4, 3);
    const Vector<double> t = times.row(0).transpose();
    Matrix<double> posterior(12, tokens.cols());
    denoiser(t, tokens, posterior);
    const Matrix<double> expected = batch("denoiser_float64_posterior.npy");
    CHECK((posterior - expected).cwiseAbs().maxCoeff() < 1e-12);
    Matrix<double> eigen(12, tokens.cols());
    EigenFixtureDenoiser()(t, tokens, eigen);
    CHECK((eigen - expected).cwiseAbs().maxCoeff() < 1e-12);
    for (Index n = 0; n < tokens.cols(); ++n) {
      for (Index l = 0; l < 3; ++l) {
        CHECK(std::abs(flowmatch::position_distribution(posterior, 4, l, n).sum() - 1.0) < 1e-12);
      }
    }
    // A block of columns (outer stride > rows) reaches the module without a copy.
    Matrix<double> part(12, 2);
    denoiser(t.segment(2, 2), tokens.middleCols(2, 2), part);
    CHECK((part - expected.middleCols(2, 2)).cwiseAbs().maxCoeff() < 1e-12);
  }
}

TEST_CASE("TorchScript denoiser drives sample_discrete and discrete_elbo", "[torch]") {
  using Path = flowmatch::MixturePath<flowmatch::CondOT<double>>;
  const flowmatch::TorchScriptDenoiser<double> denoiser(fixture("denoiser_float64.pt"), 4, 3);
  const EigenFixtureDenoiser reference;
  const Path path;
  const auto source = flowmatch::DiscreteSource<double>::masked(4);
  std::mt19937_64 draw(5);
  const flowmatch::TokenMatrix x0 = source.sample(3, 16, draw);
  flowmatch::DiscreteSamplerOptions<double> options;
  options.step_size = 0.05;
  const auto sample = [&](const auto& model) {
    std::mt19937_64 generator(21);
    return flowmatch::sample_discrete(model, path, source, x0, options, generator);
  };
  const auto first = sample(denoiser);
  const auto second = sample(denoiser);
  CHECK(first.stats.steps == 20);
  CHECK(first.tokens == second.tokens);  // reproducible at a fixed seed
  CHECK(first.tokens == sample(reference).tokens);
  CHECK((first.tokens.array() >= 0).all());
  CHECK((first.tokens.array() < 4).all());  // no mask token left at t = 1

  SECTION("the ELBO equals the Eigen-side denoiser's") {
    std::mt19937_64 generator(8);
    const flowmatch::TokenMatrix x1 = first.tokens.leftCols(4);
    const auto elbo = flowmatch::discrete_elbo(denoiser, path, source, x1, 8, generator);
    generator.seed(8);
    const auto expected = flowmatch::discrete_elbo(reference, path, source, x1, 8, generator);
    REQUIRE(elbo.bound.size() == 4);
    CHECK(elbo.bound.allFinite());
    CHECK((elbo.bound.array() > 0).all());
    CHECK((elbo.bound - expected.bound).cwiseAbs().maxCoeff() < 1e-10);
  }
}

TEST_CASE("TorchScript denoiser with int64 labels equals PyTorch's posteriors", "[torch]") {
  using flowmatch::ConditionalTorchScriptDenoiser;
  const ConditionalTorchScriptDenoiser<double> denoiser(fixture("denoiser_labels_float64.pt"), 4, 3,
                                                        2);
  CHECK(denoiser.labels() == 2);
  CHECK(denoiser.null_label() == 2);
  const flowmatch::TokenMatrix tokens = denoiser_tokens();
  const Vector<double> t = batch("denoiser_t.npy").row(0).transpose();
  const flowmatch::io::NpyArray array = flowmatch::io::read_npy(fixture("denoiser_labels.npy"));
  const flowmatch::LabelVector labels =
      Eigen::Map<const flowmatch::LabelVector>(array.integers.data(), tokens.cols());
  Matrix<double> posterior(12, tokens.cols());
  denoiser(t, tokens, labels, posterior);
  CHECK((posterior - batch("denoiser_labels_posterior.npy")).cwiseAbs().maxCoeff() < 1e-12);

  // The plain call is the null label's posterior (column 2 has label 2, the null label).
  Matrix<double> unconditional(12, tokens.cols());
  denoiser(t, tokens, unconditional);
  CHECK((unconditional.col(2) - posterior.col(2)).cwiseAbs().maxCoeff() == 0.0);
  CHECK((unconditional.col(0) - posterior.col(0)).cwiseAbs().maxCoeff() > 1e-3);

  SECTION("guided sampling runs and is reproducible at a fixed seed") {
    const flowmatch::MixturePath<flowmatch::CondOT<double>> path;
    const auto source = flowmatch::DiscreteSource<double>::masked(4);
    const flowmatch::TokenMatrix x0 = flowmatch::TokenMatrix::Constant(3, 6, 4);  // all masked
    const flowmatch::LabelVector classes =
        (flowmatch::LabelVector(6) << 0, 1, 0, 1, 0, 1).finished();
    const Vector<double> weights = Vector<double>::Constant(6, 2.0);
    flowmatch::DiscreteSamplerOptions<double> options;
    options.step_size = 0.1;
    const auto guided = [&] {
      std::mt19937_64 generator(17);
      return flowmatch::sample_discrete_guided(denoiser, path, source, x0, classes, weights,
                                               options, generator);
    };
    const auto first = guided();
    CHECK(first.tokens == guided().tokens);
    CHECK((first.tokens.array() >= 0).all());
    CHECK((first.tokens.array() < 4).all());
  }

  using Catch::Matchers::Contains;
  flowmatch::LabelVector bad = labels;
  bad(1) = 3;
  CHECK_THROWS_WITH(denoiser(t, tokens, bad, posterior), Contains("labels(1)"));
  CHECK_THROWS_TYPED(
      flowmatch::TorchScriptDenoiser<double>(fixture("denoiser_labels_float64.pt"), 4, 3),
      flowmatch::torch_model_error, Contains("takes (x: Tensor, t: Tensor, c: Tensor)"));
  CHECK_THROWS_AS(ConditionalTorchScriptDenoiser<double>(fixture("denoiser_float64.pt"), 4, 3, 2),
                  flowmatch::torch_model_error);
}

TEST_CASE("TorchScript denoisers that break the convention give typed errors", "[torch]") {
  using Catch::Matchers::Contains;
  using flowmatch::TorchScriptDenoiser;
  SECTION("logits of the wrong shape, and a vocabulary or length the module does not have") {
    CHECK_THROWS_TYPED(TorchScriptDenoiser<float>(fixture("denoiser_wrong_shape.pt"), 4, 3),
                       flowmatch::torch_model_error, Contains("has shape [1, 3, 5]"));
    CHECK_THROWS_TYPED(TorchScriptDenoiser<float>(fixture("denoiser_float32.pt"), 5, 3),
                       flowmatch::torch_model_error, Contains("[1, 3, 5] (logits [N, L, K])"));
    CHECK_THROWS_AS(TorchScriptDenoiser<float>(fixture("denoiser_float32.pt"), 4, 2),
                    flowmatch::torch_model_error);
  }
  SECTION("a float64 module as a float32 denoiser") {
    CHECK_THROWS_TYPED(TorchScriptDenoiser<float>(fixture("denoiser_float64.pt"), 4, 3),
                       flowmatch::torch_model_error, Contains("has dtype Double"));
  }
  SECTION("velocity modules: a forward without t, and one whose output is not logits") {
    CHECK_THROWS_TYPED(TorchScriptDenoiser<float>(fixture("wrong_signature.pt"), 4, 3),
                       flowmatch::torch_model_error, Contains("takes (x: Tensor)"));
    // torch.cat promotes the int64 tokens, so the MLP runs and returns [N, L].
    CHECK_THROWS_TYPED(TorchScriptDenoiser<float>(fixture("mlp_float32.pt"), 4, 3),
                       flowmatch::torch_model_error, Contains("has shape [1, 3], expected"));
    CHECK_THROWS_TYPED(TorchScriptDenoiser<float>(fixture("mlp_float32.pt"), 4, 2),
                       flowmatch::torch_model_error, Contains("failed on x of shape [1, 2]"));
  }
  SECTION("files that are missing or not TorchScript; bad sizes") {
    CHECK_THROWS_AS(TorchScriptDenoiser<float>(fixture("missing.pt"), 4, 3),
                    flowmatch::io::io_error);
    CHECK_THROWS_AS(TorchScriptDenoiser<float>(fixture("denoiser_tokens.npy"), 4, 3),
                    flowmatch::io::format_error);
    CHECK_THROWS_AS(TorchScriptDenoiser<float>(fixture("denoiser_float32.pt"), 0, 3),
                    std::invalid_argument);
  }
  SECTION("tokens beyond the embedding, and batches of the wrong form") {
    const TorchScriptDenoiser<double> denoiser(fixture("denoiser_float64.pt"), 4, 3);
    flowmatch::TokenMatrix tokens = flowmatch::TokenMatrix::Zero(3, 2);
    const Vector<double> t = Vector<double>::Constant(2, 0.5);
    Matrix<double> posterior(12, 2);
    tokens(1, 1) = 5;  // the embedding has K + 1 = 5 rows
    CHECK_THROWS_TYPED(denoiser(t, tokens, posterior), flowmatch::torch_model_error,
                       Contains("index out of range"));
    CHECK_THROWS_AS(denoiser(t, flowmatch::TokenMatrix::Zero(2, 2), posterior),
                    std::invalid_argument);
    CHECK_THROWS_AS(
        denoiser(Vector<double>::Zero(3), flowmatch::TokenMatrix::Zero(3, 2), posterior),
        std::invalid_argument);
  }
  SECTION("non-finite logits name the time and the sequence") {
    const TorchScriptDenoiser<double> denoiser(fixture("denoiser_float64.pt"), 4, 3);
    Vector<double> t(2);
    t << 0.5, std::numeric_limits<double>::infinity();
    Matrix<double> posterior(12, 2);
    try {
      denoiser(t, flowmatch::TokenMatrix::Zero(3, 2), posterior);
      FAIL("no numerical_error");
    } catch (const flowmatch::numerical_error& error) {
      CHECK(error.sample() == 1);
    }
  }
}

TEST_CASE("LibTorch's thread count is set through set_torch_threads", "[torch]") {
  const int before = flowmatch::torch_threads();
  flowmatch::set_torch_threads(1);
  CHECK(flowmatch::torch_threads() == 1);
  flowmatch::set_torch_threads(before);
  CHECK_THROWS_AS(flowmatch::set_torch_threads(0), std::invalid_argument);
}

TEST_CASE("retain_freed_memory applies on glibc and leaves results unchanged", "[torch]") {
  // The exact divergence of images in chunks of one direction: a pass per direction, each
  // allocating and freeing its tensors, before and after the allocator keeps freed memory.
  const Matrix<double> x = batch("image64_x.npy");
  flowmatch::TorchScriptOptions one_direction;
  one_direction.max_pass_rows = x.cols();
  const TorchScriptField<double> field(fixture("image_float64.pt"), {1, 4, 4}, one_direction);
  Vector<double> before(x.cols()), after(x.cols());
  field.divergence(0.6, x, before);
#if defined(__GLIBC__)
  CHECK(flowmatch::retain_freed_memory());
#else
  CHECK_FALSE(flowmatch::retain_freed_memory());
#endif
  field.divergence(0.6, x, after);
  CHECK(after == before);
  CHECK(relative_error(after, batch("image64_divergence_t0.6.npy").transpose()) < 1e-12);
}
