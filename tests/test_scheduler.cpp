// Tests of the schedulers against closed forms, finite differences and round trips.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <numbers>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/scheduler/cosine.hpp"
#include "flowmatch/scheduler/linear_vp.hpp"
#include "flowmatch/scheduler/polynomial.hpp"
#include "flowmatch/scheduler/scheduler.hpp"
#include "flowmatch/scheduler/vp.hpp"

namespace test_scheduler {

namespace {

using Catch::Matchers::WithinAbs;
using Catch::Matchers::WithinRel;
using flowmatch::CondOT;
using flowmatch::Cosine;
using flowmatch::LinearVP;
using flowmatch::Polynomial;
using flowmatch::VP;

// The instances each scheduler family is tested with.
template <class Scalar>
std::vector<CondOT<Scalar>> instances(std::type_identity<CondOT<Scalar>>) {
  return {CondOT<Scalar>{}};
}
template <class Scalar>
std::vector<Polynomial<Scalar>> instances(std::type_identity<Polynomial<Scalar>>) {
  return {Polynomial<Scalar>(0.5), Polynomial<Scalar>(1), Polynomial<Scalar>(2),
          Polynomial<Scalar>(3.5)};
}
template <class Scalar>
std::vector<VP<Scalar>> instances(std::type_identity<VP<Scalar>>) {
  return {VP<Scalar>(), VP<Scalar>(0, 20), VP<Scalar>(5, 5), VP<Scalar>(Scalar(0.1), 1)};
}
template <class Scalar>
std::vector<LinearVP<Scalar>> instances(std::type_identity<LinearVP<Scalar>>) {
  return {LinearVP<Scalar>{}};
}
template <class Scalar>
std::vector<Cosine<Scalar>> instances(std::type_identity<Cosine<Scalar>>) {
  return {Cosine<Scalar>{}};
}

template <class S>
std::vector<S> instances_of() {
  return instances(std::type_identity<S>{});
}

// A readable name of a tested instance, for failure messages.
template <class Scalar>
std::string scalar_name() {
  return std::is_same_v<Scalar, float> ? "float" : "double";
}
template <class Scalar>
std::string describe(const CondOT<Scalar>&) {
  return "CondOT<" + scalar_name<Scalar>() + ">";
}
template <class Scalar>
std::string describe(const Polynomial<Scalar>& scheduler) {
  return "Polynomial<" + scalar_name<Scalar>() + ">(" + std::to_string(scheduler.exponent()) + ")";
}
template <class Scalar>
std::string describe(const VP<Scalar>& scheduler) {
  return "VP<" + scalar_name<Scalar>() + ">(" + std::to_string(scheduler.beta_min()) + ", " +
         std::to_string(scheduler.beta_max()) + ")";
}
template <class Scalar>
std::string describe(const LinearVP<Scalar>&) {
  return "LinearVP<" + scalar_name<Scalar>() + ">";
}
template <class Scalar>
std::string describe(const Cosine<Scalar>&) {
  return "Cosine<" + scalar_name<Scalar>() + ">";
}

template <class S>
constexpr bool is_vp = std::is_same_v<S, VP<typename S::scalar_type>>;

using AllSchedulers =
    std::tuple<CondOT<double>, Polynomial<double>, VP<double>, LinearVP<double>, Cosine<double>,
               CondOT<float>, Polynomial<float>, VP<float>, LinearVP<float>, Cosine<float>>;

// Evenly spaced times first, first + step, ..., last.
template <class Scalar>
std::vector<Scalar> grid(double first, double last, int intervals) {
  std::vector<Scalar> times;
  for (int k = 0; k <= intervals; ++k) {
    times.push_back(static_cast<Scalar>(first + (last - first) * k / intervals));
  }
  return times;
}

template <class S>
typename S::scalar_type snr(const S& scheduler, typename S::scalar_type t) {
  return scheduler.alpha(t) / scheduler.sigma(t);
}

// A scheduler written outside the library: α = t², σ = 1 − t (not convex).
struct UserScheduler {
  using scalar_type = double;
  double alpha(double t) const { return t * t; }
  double sigma(double t) const { return 1 - t; }
  double d_alpha(double t) const { return 2 * t; }
  double d_sigma(double) const { return -1; }
  double snr_inverse(double rho) const {
    return std::isinf(rho) ? 1 : (std::sqrt(rho * rho + 4 * rho) - rho) / 2;
  }
};

// Like UserScheduler but without σ̇.
struct MissingDerivative {
  using scalar_type = double;
  double alpha(double t) const { return t; }
  double sigma(double t) const { return 1 - t; }
  double d_alpha(double) const { return 1; }
  double snr_inverse(double rho) const { return rho / (1 + rho); }
};

}  // namespace

static_assert(flowmatch::Scheduler<UserScheduler>);
static_assert(!flowmatch::ConvexScheduler<UserScheduler>);
static_assert(!flowmatch::Scheduler<MissingDerivative>);
static_assert(flowmatch::ConvexScheduler<CondOT<double>>);
static_assert(flowmatch::ConvexScheduler<Polynomial<float>>);
static_assert(!flowmatch::ConvexScheduler<VP<double>>);
static_assert(!flowmatch::ConvexScheduler<LinearVP<double>>);
static_assert(!flowmatch::ConvexScheduler<Cosine<double>>);

TEST_CASE("a user-defined scheduler works with scheduler_values", "[scheduler]") {
  const auto values = flowmatch::scheduler_values(UserScheduler{}, 0.5);
  CHECK(values.alpha == 0.25);
  CHECK(values.sigma == 0.5);
  CHECK(values.d_alpha == 1.0);
  CHECK(values.d_sigma == -1.0);
}

// Central differences (f(t + h) − f(t − h))/2h err by h²·|f'''|/6 (truncation) plus about
// 4ε·|f|/h (rounding of the two values). h = ε^(1/3) balances the two. On [0.05, 0.95] every
// tested instance has |α'''|, |σ'''| ≤ 2000 (the largest, ~1.6e3, is σ of VP(5, 5) near t = 0.95,
// where σ ~ sqrt(5(1 − t))) and |α|, |σ| ≤ 1, which bounds the error by h²·2000/6 + 4ε/h:
// about 1.2e-8 in double and 8e-3 in float.
TEMPLATE_LIST_TEST_CASE("derivatives agree with central finite differences", "[scheduler]",
                        AllSchedulers) {
  using Scalar = typename TestType::scalar_type;
  constexpr Scalar eps = std::numeric_limits<Scalar>::epsilon();
  const Scalar h = std::cbrt(eps);
  const Scalar tolerance = h * h * Scalar(2000) / Scalar(6) + Scalar(4) * eps / h;
  for (const TestType& scheduler : instances_of<TestType>()) {
    INFO(describe(scheduler));
    for (const Scalar t : grid<Scalar>(0.05, 0.95, 18)) {
      const Scalar after = t + h;
      const Scalar before = t - h;
      const Scalar width = after - before;  // the step actually taken
      INFO("t = " << t);
      CHECK_THAT(scheduler.d_alpha(t),
                 WithinAbs((scheduler.alpha(after) - scheduler.alpha(before)) / width, tolerance));
      CHECK_THAT(scheduler.d_sigma(t),
                 WithinAbs((scheduler.sigma(after) - scheduler.sigma(before)) / width, tolerance));
    }
  }
}

// ρ is computed from α and σ with a relative error of a few ε; t(ρ) amplifies a relative error
// δ of ρ into an absolute error δ/(d log ρ/dt) in t, and d log ρ/dt = α̇/α − σ̇/σ ≥ 0.5 for every
// tested instance on [0, 1]. With the rounding of snr_inverse itself, 64ε bounds the error.
TEMPLATE_LIST_TEST_CASE("snr_inverse inverts alpha/sigma on [0, 1]", "[scheduler]", AllSchedulers) {
  using Scalar = typename TestType::scalar_type;
  const Scalar tolerance = 64 * std::numeric_limits<Scalar>::epsilon();
  for (const TestType& scheduler : instances_of<TestType>()) {
    INFO(describe(scheduler));
    for (const Scalar t : grid<Scalar>(0, 1, 100)) {
      INFO("t = " << t);
      CHECK_THAT(scheduler.snr_inverse(snr(scheduler, t)), WithinAbs(t, tolerance));
    }
    CHECK(scheduler.snr_inverse(std::numeric_limits<Scalar>::infinity()) == Scalar(1));
    CHECK_THROWS_AS(scheduler.snr_inverse(Scalar(-1)), std::domain_error);
    CHECK_THROWS_AS(scheduler.snr_inverse(std::numeric_limits<Scalar>::quiet_NaN()),
                    std::domain_error);
    CHECK_THROWS_WITH(scheduler.snr_inverse(Scalar(-1)), Catch::Contains("rho"));
  }
}

TEMPLATE_LIST_TEST_CASE("kappa_inverse inverts alpha for convex schedulers", "[scheduler]",
                        AllSchedulers) {
  using Scalar = typename TestType::scalar_type;
  if constexpr (flowmatch::ConvexScheduler<TestType>) {
    const Scalar tolerance = 16 * std::numeric_limits<Scalar>::epsilon();
    for (const TestType& scheduler : instances_of<TestType>()) {
      INFO(describe(scheduler));
      for (const Scalar t : grid<Scalar>(0, 1, 100)) {
        INFO("t = " << t);
        CHECK_THAT(scheduler.kappa_inverse(scheduler.alpha(t)), WithinAbs(t, tolerance));
        CHECK_THAT(scheduler.sigma(t), WithinAbs(1 - scheduler.alpha(t), tolerance));
      }
      CHECK_THROWS_AS(scheduler.kappa_inverse(Scalar(-0.5)), std::domain_error);
      CHECK_THROWS_AS(scheduler.kappa_inverse(Scalar(1.5)), std::domain_error);
      CHECK_THROWS_WITH(scheduler.kappa_inverse(Scalar(1.5)), Catch::Contains("kappa"));
    }
  }
}

TEMPLATE_LIST_TEST_CASE("the path joins the source at t = 0 to the data at t = 1", "[scheduler]",
                        AllSchedulers) {
  using Scalar = typename TestType::scalar_type;
  for (const TestType& scheduler : instances_of<TestType>()) {
    INFO(describe(scheduler));
    CHECK(scheduler.alpha(Scalar(1)) == Scalar(1));
    CHECK(scheduler.sigma(Scalar(1)) == Scalar(0));
    if constexpr (is_vp<TestType>) {
      // α_0 = exp(−(β_max + β_min)/4), small but not 0; σ_0 = sqrt(1 − α_0²).
      const double alpha_0 = std::exp(-(scheduler.beta_max() + scheduler.beta_min()) / 4.0);
      const double tolerance = 8 * std::numeric_limits<Scalar>::epsilon();
      CHECK_THAT(scheduler.alpha(Scalar(0)), WithinRel(alpha_0, tolerance));
      CHECK_THAT(scheduler.sigma(Scalar(0)),
                 WithinRel(std::sqrt(1 - alpha_0 * alpha_0), tolerance));
      CHECK(scheduler.alpha(Scalar(0)) > Scalar(0));
    } else {
      CHECK(scheduler.alpha(Scalar(0)) == Scalar(0));
      CHECK(scheduler.sigma(Scalar(0)) == Scalar(1));
    }
  }
}

TEMPLATE_LIST_TEST_CASE("the signal-to-noise ratio is strictly increasing", "[scheduler]",
                        AllSchedulers) {
  using Scalar = typename TestType::scalar_type;
  for (const TestType& scheduler : instances_of<TestType>()) {
    INFO(describe(scheduler));
    const auto times = grid<Scalar>(0, 1, 1000);
    for (std::size_t k = 1; k < times.size(); ++k) {
      INFO("t = " << times[k]);
      CHECK(snr(scheduler, times[k]) > snr(scheduler, times[k - 1]));
    }
  }
}

TEMPLATE_LIST_TEST_CASE("every member rejects t outside [0, 1]", "[scheduler]", AllSchedulers) {
  using Scalar = typename TestType::scalar_type;
  for (const TestType& scheduler : instances_of<TestType>()) {
    INFO(describe(scheduler));
    for (const Scalar t : {Scalar(-0.25), Scalar(1.25), std::numeric_limits<Scalar>::quiet_NaN(),
                           std::numeric_limits<Scalar>::infinity()}) {
      INFO("t = " << t);
      CHECK_THROWS_AS(scheduler.alpha(t), std::domain_error);
      CHECK_THROWS_AS(scheduler.sigma(t), std::domain_error);
      CHECK_THROWS_AS(scheduler.d_alpha(t), std::domain_error);
      CHECK_THROWS_AS(scheduler.d_sigma(t), std::domain_error);
      CHECK_THROWS_WITH(scheduler.alpha(t),
                        Catch::Contains(": t is ") && Catch::Contains(", expected in [0, 1]"));
    }
  }
}

TEST_CASE("Polynomial: closed forms, parameters and the singular derivative at t = 0",
          "[scheduler]") {
  const Polynomial<double> cubic(3);
  CHECK_THAT(cubic.alpha(0.5), WithinRel(0.125, 1e-15));
  CHECK_THAT(cubic.sigma(0.5), WithinRel(0.875, 1e-15));
  CHECK_THAT(cubic.d_alpha(0.5), WithinRel(0.75, 1e-15));
  CHECK_THAT(cubic.snr_inverse(0.125 / 0.875), WithinRel(0.5, 1e-15));
  // σ keeps its relative precision near t = 1: 1 − (1 − δ)³ = 3δ − 3δ² + δ³.
  const double delta = std::ldexp(1.0, -40);
  CHECK_THAT(cubic.sigma(1 - delta), WithinRel(3 * delta - 3 * delta * delta, 1e-14));
  CHECK(cubic.d_alpha(0) == 0);
  CHECK(Polynomial<double>(1).d_alpha(0) == 1);

  const Polynomial<double> root(0.5);
  CHECK_THROWS_AS(root.d_alpha(0), std::domain_error);
  CHECK_THROWS_AS(root.d_sigma(0), std::domain_error);
  CHECK_THROWS_WITH(root.d_sigma(0), Catch::Contains("d_sigma") && Catch::Contains("0.5"));
  CHECK_NOTHROW(root.d_alpha(1e-300));

  for (const double exponent : {0.0, -1.0, std::nan(""), HUGE_VAL}) {
    INFO("n = " << exponent);
    CHECK_THROWS_AS(Polynomial<double>(exponent), std::invalid_argument);
  }
  CHECK_THROWS_WITH(Polynomial<double>(-2), Catch::Contains("exponent") && Catch::Contains("-2"));
}

TEST_CASE("VP: closed forms, parameters and the singular derivative at t = 1", "[scheduler]") {
  const VP<double> vp(0.1, 20);
  // T(0.5) = ½·0.25·19.9 + 0.5·0.1 = 2.5375.
  CHECK_THAT(vp.alpha(0.5), WithinRel(std::exp(-0.5 * 2.5375), 1e-15));
  CHECK_THAT(vp.sigma(0.5), WithinRel(std::sqrt(1 - std::exp(-2.5375)), 1e-15));
  CHECK_THROWS_AS(vp.d_sigma(1), std::domain_error);
  CHECK_THROWS_WITH(vp.d_sigma(1), Catch::Contains("d_sigma") && Catch::Contains("beta_min"));
  CHECK_NOTHROW(vp.d_sigma(1 - 1e-12));

  // β_min = 0: σ_t = u·sqrt(β_max/2)·(1 − β_max·u²/8 + …), so σ̇ → −sqrt(β_max/2) and
  // σ̇(1 − u) differs from it by a relative 3β_max·u²/8 = 7.5e-8 at u = 1e-4.
  const VP<double> flat(0, 20);
  CHECK(flat.d_sigma(1) == -std::sqrt(10.0));
  CHECK_THAT(flat.d_sigma(1 - 1e-4), WithinRel(-std::sqrt(10.0), 1e-7));

  // β_max = β_min: T = u·β, t = 1 − T/β.
  const VP<double> constant(2, 2);
  const double rho = 0.5;  // ρ(0) = e⁻¹/sqrt(1 − e⁻²) ≈ 0.40
  CHECK_THAT(constant.snr_inverse(rho), WithinAbs(1 - std::log1p(1 / (rho * rho)) / 2, 1e-15));

  // ρ below ρ(0) is not reached on [0, 1].
  const double rho_0 = vp.alpha(0) / vp.sigma(0);
  CHECK_THROWS_AS(vp.snr_inverse(0), std::domain_error);
  CHECK_THROWS_AS(vp.snr_inverse(0.5 * rho_0), std::domain_error);
  CHECK_THROWS_WITH(vp.snr_inverse(0.5 * rho_0), Catch::Contains("rho(0)"));
  CHECK(vp.snr_inverse(rho_0) == 0);
  // Huge and tiny ratios do not overflow inside snr_inverse.
  CHECK(vp.snr_inverse(1e300) == 1);
  CHECK_THROWS_AS(vp.snr_inverse(1e-300), std::domain_error);

  CHECK_THROWS_AS(VP<double>(-0.1, 20), std::invalid_argument);
  CHECK_THROWS_AS(VP<double>(5, 1), std::invalid_argument);
  CHECK_THROWS_AS(VP<double>(0, 0), std::invalid_argument);
  CHECK_THROWS_AS(VP<double>(std::nan(""), 20), std::invalid_argument);
  CHECK_THROWS_AS(VP<double>(0.1, HUGE_VAL), std::invalid_argument);
  CHECK_THROWS_WITH(VP<double>(5, 1), Catch::Contains("beta_max") && Catch::Contains("5"));
}

TEST_CASE("LinearVP: closed forms and the singular derivative at t = 1", "[scheduler]") {
  const LinearVP<double> linear_vp;
  CHECK_THAT(linear_vp.sigma(0.6), WithinRel(0.8, 1e-15));
  CHECK_THAT(linear_vp.d_sigma(0.6), WithinRel(-0.75, 1e-15));
  CHECK_THAT(linear_vp.snr_inverse(0.75), WithinRel(0.6, 1e-15));
  CHECK(linear_vp.snr_inverse(1e300) == 1);
  CHECK_THROWS_AS(linear_vp.d_sigma(1), std::domain_error);
  CHECK_THROWS_WITH(linear_vp.d_sigma(1), Catch::Contains("d_sigma"));
}

TEST_CASE("Cosine: closed forms", "[scheduler]") {
  const Cosine<double> cosine;
  const double half = std::sqrt(0.5);
  CHECK_THAT(cosine.alpha(0.5), WithinRel(half, 1e-15));
  CHECK_THAT(cosine.sigma(0.5), WithinRel(half, 1e-15));
  CHECK_THAT(cosine.d_sigma(0.5), WithinRel(-std::numbers::pi / 2 * half, 1e-15));
  CHECK_THAT(cosine.snr_inverse(1), WithinRel(0.5, 1e-15));
  CHECK_THAT(cosine.d_alpha(1), WithinAbs(0, 0));
}

}  // namespace test_scheduler
