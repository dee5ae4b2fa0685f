// Every field type the library ships, through the contract battery of field_contract.hpp.
#include "field_contract.hpp"  // first: it counts allocations (allocation_counter.hpp)

#include <catch2/catch.hpp>

#include <functional>
#include <random>

#include "flowmatch/field/any_field.hpp"
#include "flowmatch/guidance/classifier_free.hpp"
#include "flowmatch/likelihood/conditioned_field.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/oracle/gaussian_mixture_path.hpp"
#include "flowmatch/parallel/parallel_field.hpp"
#include "flowmatch/parallel/thread_pool.hpp"
#include "flowmatch/path/schedule_transform.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/scheduler/cosine.hpp"
#include "generic_mixture_field.hpp"

namespace {

using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::Mlp;
using flowmatch::Vector;
using flowmatch_test::FieldContract;

constexpr Index kDim = 3;
constexpr Index kSamples = 5;
constexpr Index kConditionDim = 2;

// A network whose parameters are large enough for its derivatives to be far from zero.
Mlp<double> network(Index cond_dim) {
  std::mt19937_64 generator(11);
  return Mlp<double>(
      flowmatch::MlpConfig{
          kDim, cond_dim, {16, 12}, flowmatch::Activation::silu, flowmatch::TimeEmbedding{}},
      generator);
}

const Mlp<double>& plain_network() {
  static const Mlp<double> net = network(0);
  return net;
}

const Mlp<double>& conditional_network() {
  static const Mlp<double> net = network(kConditionDim);
  return net;
}

Matrix<double> conditions() {
  Matrix<double> condition = Matrix<double>::Zero(kConditionDim, kSamples);
  for (Index n = 0; n < kSamples; ++n) condition(n % kConditionDim, n) = 1.0;
  return condition;
}

Vector<double> guidance_weights() {
  Vector<double> weights(kSamples);
  weights << 0.0, 1.0, 2.5, -0.5, 4.0;
  return weights;
}

flowmatch::GaussianMixturePath<flowmatch::CondOT<double>> oracle_field() {
  std::mt19937_64 generator(5);
  std::normal_distribution<double> normal;
  Matrix<double> means(kDim, 2);
  for (Index i = 0; i < means.size(); ++i) means(i) = 2.0 * normal(generator);
  return flowmatch::GaussianMixturePath<flowmatch::CondOT<double>>(
      flowmatch::GaussianMixture<double>::with_diagonal_covariances(
          Vector<double>::Constant(2, 0.5), means, Matrix<double>::Constant(kDim, 2, 0.3)));
}

// The 2-D generic mixture field: a lambda generic over its scalar type (forward mode).
auto generic_field() {
  return flowmatch_test::DiagonalMixture::two_dimensional().field();
}

FieldContract planar() {
  FieldContract contract;
  contract.dim = 2;
  return contract;
}

// The network's matrix products may sum in another order for another batch width, so its
// columns agree with the batch only to rounding.
FieldContract network_contract() {
  FieldContract contract;
  contract.columns_independent = false;
  contract.allocation_free_once_sized = true;
  return contract;
}

FieldContract bound_to_batch() {
  FieldContract contract;
  contract.columns_independent = false;
  contract.allocation_free_once_sized = true;
  return contract;
}

flowmatch::ThreadPool& pool() {
  static flowmatch::ThreadPool threads(2);
  return threads;
}

}  // namespace

FLOWMATCH_FIELD_CONTRACT("generic lambda", generic_field(), planar())
FLOWMATCH_FIELD_CONTRACT("Gaussian-mixture oracle", oracle_field(), FieldContract{})
FLOWMATCH_FIELD_CONTRACT("Mlp", plain_network(), network_contract())
FLOWMATCH_FIELD_CONTRACT("conditioned Mlp",
                         flowmatch::ConditionedField(std::cref(conditional_network()),
                                                     conditions()),
                         bound_to_batch())
FLOWMATCH_FIELD_CONTRACT("guided Mlp",
                         flowmatch::classifier_free_guidance(std::cref(conditional_network()),
                                                             conditions(), guidance_weights()),
                         bound_to_batch())
FLOWMATCH_FIELD_CONTRACT("schedule-transformed Mlp",
                         flowmatch::transform_schedule(std::cref(plain_network()),
                                                       flowmatch::CondOT<double>{},
                                                       flowmatch::Cosine<double>{}),
                         network_contract())
FLOWMATCH_FIELD_CONTRACT("parallel Mlp",
                         flowmatch::parallel_field(std::cref(plain_network()), pool(), 2),
                         network_contract())
FLOWMATCH_FIELD_CONTRACT("parallel generic lambda",
                         flowmatch::parallel_field(generic_field(), pool(), 2), planar())
FLOWMATCH_FIELD_CONTRACT("type-erased Mlp", flowmatch::AnyField<double>(std::cref(plain_network())),
                         network_contract())
FLOWMATCH_FIELD_CONTRACT("type-erased generic lambda", flowmatch::AnyField<double>(generic_field()),
                         planar())
FLOWMATCH_FIELD_CONTRACT("type-erased guided Mlp",
                         flowmatch::AnyField<double>(flowmatch::classifier_free_guidance(
                             std::cref(conditional_network()), conditions(), guidance_weights())),
                         bound_to_batch())
