// Tests of the core conventions: the field concept, evaluation adapters and argument checks.
// Includes the umbrella header, so that every header is compiled together at least once.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "flowmatch/detail/validate.hpp"
#include "flowmatch/flowmatch.hpp"

namespace test_core {

namespace {

using flowmatch::ConstMatrixRef;
using flowmatch::Matrix;
using flowmatch::MatrixRef;

// Rotation u(x) = A x with A = [[0, -1], [1, 0]], written in place.
struct InPlaceRotation {
  void operator()(double, const ConstMatrixRef<double>& x, MatrixRef<double> out) const {
    out.row(0) = -x.row(1);
    out.row(1) = x.row(0);
  }
};

}  // namespace

TEST_CASE("a plain lambda and an in-place functor are both velocity fields", "[field]") {
  auto returning = [](double t, const auto& x) { return (t * x).eval(); };
  static_assert(flowmatch::VelocityField<decltype(returning), double>);
  static_assert(flowmatch::ReturningVelocityField<decltype(returning), double>);
  static_assert(flowmatch::InPlaceVelocityField<InPlaceRotation, double>);
  static_assert(!flowmatch::HasDivergence<InPlaceRotation, double>);
  static_assert(!flowmatch::HasJvp<InPlaceRotation, double>);
  auto not_a_field = [](int) { return 0; };
  static_assert(!flowmatch::VelocityField<decltype(not_a_field), double>);

  Matrix<double> x(2, 3);
  x << 1, 2, 3, 4, 5, 6;
  const Matrix<double> scaled = flowmatch::evaluate_velocity<double>(returning, 0.5, x);
  CHECK(scaled.isApprox(0.5 * x));

  Matrix<double> rotated(2, 3);
  flowmatch::evaluate_velocity<double>(InPlaceRotation{}, 0.0, x, rotated);
  // A rotation by 90 degrees is orthogonal to its argument and keeps its length.
  CHECK((rotated.array() * x.array()).colwise().sum().abs().maxCoeff() == 0.0);
  CHECK(rotated.colwise().norm().isApprox(x.colwise().norm()));
}

TEST_CASE("a column block of a batch is evaluated without touching other columns", "[field]") {
  Matrix<double> x = Matrix<double>::Random(2, 4);
  Matrix<double> out = Matrix<double>::Zero(2, 4);
  flowmatch::evaluate_velocity<double>(InPlaceRotation{}, 0.0, x.middleCols(1, 2),
                                       out.middleCols(1, 2));
  CHECK(out.col(0).isZero(0.0));
  CHECK(out.col(3).isZero(0.0));
  CHECK(out(0, 1) == -x(1, 1));
}

TEST_CASE("a returning field of the wrong shape throws", "[field]") {
  auto wrong = [](double, const auto& x) { return Matrix<double>::Zero(x.rows() + 1, x.cols()); };
  Matrix<double> x = Matrix<double>::Zero(2, 3);
  CHECK_THROWS_AS(flowmatch::evaluate_velocity<double>(wrong, 0.0, x), std::invalid_argument);
  CHECK_THROWS_WITH(flowmatch::evaluate_velocity<double>(wrong, 0.0, x),
                    Catch::Contains("3x3") && Catch::Contains("2x3"));
}

TEST_CASE("argument checks name the argument and the problem", "[core]") {
  Matrix<double> x = Matrix<double>::Zero(2, 3);
  CHECK_NOTHROW(flowmatch::detail::require_shape("x", x, 2, -1));
  CHECK_THROWS_WITH(flowmatch::detail::require_shape("x", x, 3, 3),
                    Catch::Contains("x has shape 2x3"));
  x(1, 2) = std::numeric_limits<double>::quiet_NaN();
  CHECK(flowmatch::detail::first_nonfinite_index(x) == 2);
  CHECK_THROWS_WITH(flowmatch::detail::require_finite("x", x),
                    Catch::Contains("x has a non-finite entry in column 2 (row 1"));
  // A vector's entry is named by its index, in a column and in a row vector.
  flowmatch::Vector<double> weights = flowmatch::Vector<double>::Ones(5);
  weights(3) = std::numeric_limits<double>::infinity();
  CHECK(flowmatch::detail::first_nonfinite_index(weights) == 3);
  CHECK(flowmatch::detail::first_nonfinite_index(weights.transpose()) == 3);
  CHECK_THROWS_WITH(flowmatch::detail::require_finite("weights", weights),
                    Catch::Contains("weights has a non-finite entry at index 3"));
  CHECK_THROWS_WITH(flowmatch::detail::require_finite("weights", weights.transpose()),
                    Catch::Contains("weights has a non-finite entry at index 3"));
  CHECK_THROWS_AS(flowmatch::detail::require_unit_time("t", 1.5), std::domain_error);
  CHECK_THROWS_AS(flowmatch::detail::require_unit_time("t", std::nan("")), std::domain_error);

  const flowmatch::numerical_error error("blew up", 0.25, 7);
  CHECK(error.time() == 0.25);
  CHECK(error.sample() == 7);
}

namespace {

// The message of the exception that @p check throws, which must be of type Exception.
template <class Exception, class Check>
std::string failure_message(Check&& check) {
  try {
    check();
  } catch (const Exception& error) {
    return error.what();
  }
  FAIL("the check did not throw the documented type");
  return {};
}

}  // namespace

TEST_CASE(
    "every failing check follows the grammar '<function>: <argument> <finding>, expected "
    "<expectation>' and throws its documented type",
    "[core]") {
  namespace detail = flowmatch::detail;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Matrix<double> batch = Matrix<double>::Zero(2, 3);
  batch(0, 1) = -std::numeric_limits<double>::infinity();
  flowmatch::Vector<double> vector = flowmatch::Vector<double>::Zero(6);
  vector(5) = nan;
  const Matrix<double> no_rows(0, 3);
  const Matrix<double> no_columns(2, 0);
  using Argument = std::invalid_argument;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {failure_message<Argument>([&] { detail::require_shape("f: a", batch, 3, -1); }),
       "f: a has shape 2x3, expected 3xany"},
      {failure_message<Argument>([&] { detail::require_finite("f: a", batch); }),
       "f: a has a non-finite entry in column 1 (row 0, value -inf), expected finite entries"},
      {failure_message<Argument>([&] { detail::require_finite("f: a", vector); }),
       "f: a has a non-finite entry at index 5 (value nan), expected finite entries"},
      {failure_message<Argument>([&] { detail::require_batch("f: a", no_rows); }),
       "f: a has shape 0x3, expected a d×N batch with d >= 1"},
      {failure_message<Argument>([&] { detail::require_nonempty_batch("f: a", no_columns); }),
       "f: a has shape 2x0, expected a d×N batch with N >= 1"},
      {failure_message<Argument>([&] { detail::require_finite_value("f: a", nan); }),
       "f: a is nan, expected finite"},
      {failure_message<std::domain_error>([&] { detail::require_unit_time("f: a", 1.5); }),
       "f: a is 1.5, expected in [0, 1]"},
      {failure_message<Argument>([&] { detail::require_nonnegative("f: a", -0.25); }),
       "f: a is -0.25, expected finite and >= 0"},
      {failure_message<Argument>([&] { detail::require_positive("f: a", 0.0); }),
       "f: a is 0, expected finite and > 0"},
      {failure_message<Argument>([&] { detail::require_in_range("f: a", 1.0, 0.0, 1.0); }),
       "f: a is 1, expected in [0, 1)"},
      {failure_message<Argument>([&] { detail::require_count("f: a", 0, 1); }),
       "f: a is 0, expected >= 1"},
      {failure_message<std::domain_error>(
           [&] { detail::reject_argument<std::domain_error>("f: a", "is 2", "< 1"); }),
       "f: a is 2, expected < 1"},
  };
  for (const auto& [message, expected] : cases) CHECK(message == expected);

  // Passing values pass, at the edges of their ranges too.
  CHECK_NOTHROW(detail::require_unit_time("f: a", 0.0));
  CHECK_NOTHROW(detail::require_unit_time("f: a", 1.0));
  CHECK_NOTHROW(detail::require_nonnegative("f: a", 0.0));
  CHECK_NOTHROW(detail::require_in_range("f: a", 0.0, 0.0, 1.0));
  CHECK_NOTHROW(detail::require_count("f: a", 1, 1));
  CHECK_NOTHROW(detail::require_positive("f: a", std::numeric_limits<double>::min()));
  // Infinity is out of range for the checks that expect a finite value.
  CHECK_THROWS_AS(detail::require_positive("f: a", std::numeric_limits<double>::infinity()),
                  std::invalid_argument);
  CHECK_THROWS_AS(detail::require_nonnegative("f: a", std::numeric_limits<double>::infinity()),
                  std::invalid_argument);
}

}  // namespace test_core
