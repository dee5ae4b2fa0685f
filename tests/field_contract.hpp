// The contract battery of the field protocol (field/capabilities.hpp): one set of checks that
// every field type must pass, against mathematics independent of the field's code:
//
//   - the velocity is a finite d×N batch;
//   - the Jacobian-vector product agrees with central differences of the velocity;
//   - the vector-Jacobian product is its adjoint: ⟨J v, w⟩ = ⟨v, Jᵀ w⟩ per sample;
//   - the divergence is the trace of the Jacobian (assembled from products with e_1..e_d);
//   - the gradient of the divergence agrees with central differences of the divergence;
//   - the fused velocity with divergence equals the two computed apart, and so do the fused
//     velocity, vjp and divergence gradient;
//   - where promised, the batch gives bit for bit what the columns give one at a time;
//   - where promised, the velocity and the fused members allocate nothing once a first call has
//     sized the field's buffers.
//
// Each check runs when the library can compute the capability for the field (a member, or
// forward mode: flowmatch::Derivable). A new field type gets the battery with one line:
//
//     FLOWMATCH_FIELD_CONTRACT("my field", make_my_field(), promises);
//
// The allocation counter replaces operator new and configures Eigen: include this header first
// in its program (see allocation_counter.hpp).
#pragma once

#include "allocation_counter.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include "flowmatch/autodiff/field_derivatives.hpp"
#include "flowmatch/core/types.hpp"
#include "flowmatch/field/capabilities.hpp"

namespace flowmatch_test {

/// What a field type promises beyond the protocol, and where it is checked.
struct FieldContract {
  flowmatch::Index dim = 3;      ///< d of the batch the checks use.
  flowmatch::Index samples = 5;  ///< N.
  double t = 0.4;                ///< the time of the checks.
  double scale = 1.0;            ///< standard deviation of the random points.
  /// Column n of the result depends on column n of x alone, bit for bit (false for fields
  /// bound to one batch: bound conditions, guidance).
  bool columns_independent = true;
  /// Once sized by a first call, the velocity (and the fused members, where available) of a
  /// batch of the same width allocates nothing.
  bool allocation_free_once_sized = false;
};

namespace detail {

using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::Vector;

inline Matrix<double> random_batch(Index rows, Index cols, double scale, std::uint64_t seed) {
  std::mt19937_64 generator(seed);
  std::normal_distribution<double> normal(0.0, scale);
  Matrix<double> batch(rows, cols);
  for (Index i = 0; i < batch.size(); ++i) batch(i) = normal(generator);
  return batch;
}

/// max |a − b| relative to 1 + max |b|.
inline double relative_gap(const Matrix<double>& a, const Matrix<double>& b) {
  return (a - b).cwiseAbs().maxCoeff() / (1.0 + b.cwiseAbs().maxCoeff());
}

template <class Field>
Vector<double> divergence_at(const Field& field, double t, const Matrix<double>& x) {
  Vector<double> divergence(x.cols());
  flowmatch::exact_divergence<double>(field, t, x, divergence);
  return divergence;
}

template <class Field>
Matrix<double> jvp_at(const Field& field, double t, const Matrix<double>& x,
                      const Matrix<double>& tangent) {
  Matrix<double> product(x.rows(), x.cols());
  flowmatch::jacobian_vector_product<double>(field, t, x, tangent, product);
  return product;
}

}  // namespace detail

/// Runs the battery on @p field (see the file comment).
template <class Field>
void verify_field_contract(const Field& field, const FieldContract& contract) {
  using flowmatch::Derivable;
  using flowmatch::Index;
  using flowmatch::Matrix;
  using flowmatch::Vector;
  namespace capability = flowmatch::capability;
  const Index dim = contract.dim;
  const Index samples = contract.samples;
  const double t = contract.t;
  const Matrix<double> x = detail::random_batch(dim, samples, contract.scale, 1);
  // Central differences: error O(h²) from truncation plus O(ε/h) from rounding.
  const double step = 1e-5;
  const double difference_tolerance = 1e-6;

  const Matrix<double> velocity = flowmatch::evaluate_velocity<double>(field, t, x);
  REQUIRE(velocity.rows() == dim);
  REQUIRE(velocity.cols() == samples);
  CHECK(velocity.allFinite());

  if (contract.columns_independent) {
    for (Index n = 0; n < samples; ++n) {
      const Matrix<double> column = x.col(n);
      const Matrix<double> alone = flowmatch::evaluate_velocity<double>(field, t, column);
      CHECK(alone.col(0) == velocity.col(n));
    }
  }

  if constexpr (Derivable<capability::Jvp, Field, double>) {
    const Matrix<double> tangent = detail::random_batch(dim, samples, 1.0, 2);
    const Matrix<double> product = detail::jvp_at(field, t, x, tangent);
    const Matrix<double> forward = x + step * tangent;
    const Matrix<double> backward = x - step * tangent;
    const Matrix<double> differences = (flowmatch::evaluate_velocity<double>(field, t, forward) -
                                        flowmatch::evaluate_velocity<double>(field, t, backward)) /
                                       (2 * step);
    CHECK(detail::relative_gap(product, differences) < difference_tolerance);

    if constexpr (Derivable<capability::Vjp, Field, double>) {
      const Matrix<double> cotangent = detail::random_batch(dim, samples, 1.0, 3);
      Matrix<double> pulled(dim, samples);
      flowmatch::vector_jacobian_product<double>(field, t, x, cotangent, pulled);
      const Vector<double> forward_pairing =
          product.cwiseProduct(cotangent).colwise().sum().transpose();
      const Vector<double> adjoint_pairing =
          tangent.cwiseProduct(pulled).colwise().sum().transpose();
      CHECK(detail::relative_gap(adjoint_pairing, forward_pairing) < 1e-12);
    }

    if constexpr (Derivable<capability::Divergence, Field, double>) {
      Vector<double> trace = Vector<double>::Zero(samples);
      for (Index i = 0; i < dim; ++i) {
        Matrix<double> unit = Matrix<double>::Zero(dim, samples);
        unit.row(i).setOnes();
        trace += detail::jvp_at(field, t, x, unit).row(i).transpose();
      }
      CHECK(detail::relative_gap(detail::divergence_at(field, t, x), trace) < 1e-12);
    }
  }

  if (contract.allocation_free_once_sized) {
    Matrix<double> out(dim, samples);
    flowmatch::evaluate_velocity<double>(field, t, x, out);
    CHECK(allocations_during([&] { flowmatch::evaluate_velocity<double>(field, t, x, out); }) == 0);
    if constexpr (Derivable<capability::VelocityDivergence, Field, double>) {
      Vector<double> divergence(samples);
      flowmatch::velocity_with_divergence<double>(field, t, x, out, divergence);
      CHECK(allocations_during([&] {
              flowmatch::velocity_with_divergence<double>(field, t, x, out, divergence);
            }) == 0);
    }
    if constexpr (Derivable<capability::VelocityVjpDivergenceGradient, Field, double>) {
      const Matrix<double> cotangent = detail::random_batch(dim, samples, 1.0, 4);
      Matrix<double> pulled(dim, samples);
      Matrix<double> gradient(dim, samples);
      flowmatch::velocity_with_vjp_and_divergence_gradient<double>(field, t, x, cotangent, out,
                                                                   pulled, gradient);
      CHECK(allocations_during([&] {
              flowmatch::velocity_with_vjp_and_divergence_gradient<double>(field, t, x, cotangent,
                                                                           out, pulled, gradient);
            }) == 0);
    }
  }

  if constexpr (Derivable<capability::VelocityVjpDivergenceGradient, Field, double>) {
    const Matrix<double> cotangent = detail::random_batch(dim, samples, 1.0, 4);
    Matrix<double> fused_velocity(dim, samples);
    Matrix<double> fused_vjp(dim, samples);
    Matrix<double> fused_gradient(dim, samples);
    flowmatch::velocity_with_vjp_and_divergence_gradient<double>(
        field, t, x, cotangent, fused_velocity, fused_vjp, fused_gradient);
    Matrix<double> pulled(dim, samples);
    flowmatch::vector_jacobian_product<double>(field, t, x, cotangent, pulled);
    Matrix<double> gradient(dim, samples);
    flowmatch::divergence_gradient<double>(field, t, x, gradient);
    CHECK(detail::relative_gap(fused_velocity, velocity) < 1e-13);
    CHECK(detail::relative_gap(fused_vjp, pulled) < 1e-13);
    CHECK(detail::relative_gap(fused_gradient, gradient) < 1e-13);
  }

  if constexpr (Derivable<capability::Divergence, Field, double>) {
    Matrix<double> fused_velocity(dim, samples);
    Vector<double> fused_divergence(samples);
    flowmatch::velocity_with_divergence<double>(field, t, x, fused_velocity, fused_divergence);
    CHECK(detail::relative_gap(fused_velocity, velocity) < 1e-13);
    CHECK(detail::relative_gap(fused_divergence, detail::divergence_at(field, t, x)) < 1e-13);

    if constexpr (Derivable<capability::DivergenceGradient, Field, double>) {
      Matrix<double> gradient(dim, samples);
      flowmatch::divergence_gradient<double>(field, t, x, gradient);
      Matrix<double> differences(dim, samples);
      for (Index i = 0; i < dim; ++i) {
        Matrix<double> forward = x;
        Matrix<double> backward = x;
        forward.row(i).array() += step;
        backward.row(i).array() -= step;
        differences.row(i) =
            (detail::divergence_at(field, t, forward) - detail::divergence_at(field, t, backward))
                .transpose() /
            (2 * step);
      }
      CHECK(detail::relative_gap(gradient, differences) < difference_tolerance);
    }
  }
}

}  // namespace flowmatch_test

/// Enrols a field type in the contract battery: one test case named after @p name.
#define FLOWMATCH_FIELD_CONTRACT(name, field_expression, contract)     \
  TEST_CASE("field contract: " name, "[contract]") {                   \
    const auto field_under_test = field_expression;                    \
    flowmatch_test::verify_field_contract(field_under_test, contract); \
  }
