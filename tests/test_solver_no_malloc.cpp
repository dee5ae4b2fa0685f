// The stepping loop of every method allocates nothing once its steppers are sized.
// EIGEN_RUNTIME_NO_MALLOC must be defined before Eigen is included anywhere in this program.
// Eigen reports a forbidden allocation through eigen_assert, which release builds compile out;
// here eigen_assert counts failures instead, in every build type.
#include <cstddef>

namespace {
std::size_t failed_eigen_assertions = 0;
void record_failed_eigen_assertion() {
  ++failed_eigen_assertions;
}
}  // namespace

#define EIGEN_RUNTIME_NO_MALLOC
#define eigen_assert(condition) ((condition) ? void(0) : record_failed_eigen_assertion())
#include <catch2/catch.hpp>

#include <vector>

#include "flowmatch/solver/integrate.hpp"

namespace {

using flowmatch::ConstMatrixRef;
using flowmatch::Matrix;
using flowmatch::MatrixRef;
using flowmatch::Method;

// An in-place, allocation-free field: u_t(x) = μ + (t s² − (1 − t))/σ_t² · (x − tμ).
struct GaussianFlow {
  flowmatch::Vector<double> mu;
  double s;
  void operator()(double t, const ConstMatrixRef<double>& x, MatrixRef<double> out) const {
    const double rate = (t * s * s - (1 - t)) / (t * t * s * s + (1 - t) * (1 - t));
    for (Eigen::Index j = 0; j < x.cols(); ++j) out.col(j) = rate * (x.col(j) - t * mu) + mu;
  }
};

// Re-enables allocation however the test leaves its scope.
struct AllowMallocOnExit {
  ~AllowMallocOnExit() { Eigen::internal::set_is_malloc_allowed(true); }
};

}  // namespace

TEST_CASE("a forbidden allocation is detected", "[solver][no-malloc]") {
  failed_eigen_assertions = 0;
  Eigen::internal::set_is_malloc_allowed(false);
  const Matrix<double> allocated(16, 16);
  Eigen::internal::set_is_malloc_allowed(true);
  CHECK(allocated.size() == 256);
  CHECK(failed_eigen_assertions > 0);
}

TEST_CASE("no allocation after the first accepted step", "[solver][no-malloc]") {
  const GaussianFlow flow{flowmatch::Vector<double>::Constant(4, 0.5), 0.7};
  const Matrix<double> x0 = Matrix<double>::Random(4, 64);
  const std::vector<double> grid{0.0, 0.2, 0.25, 0.8, 1.0};
  for (const Method method :
       {Method::euler, Method::midpoint, Method::heun2, Method::heun3, Method::rk4, Method::rk38,
        Method::dopri5, Method::rkf78, Method::tsit5}) {
    for (const bool trajectory : {false, true}) {
      flowmatch::SolverOptions<double> options;
      options.method = method;
      options.step_size = 0.01;
      options.rtol = options.atol = 1e-8;
      options.return_trajectory = trajectory;
      std::size_t observed = 0;
      // The first accepted step has sized every stepper; from then on allocation is an error
      // (Eigen asserts), until the solver returns.
      options.observer = [&observed](double, const Matrix<double>&, const flowmatch::SolverStats&) {
        Eigen::internal::set_is_malloc_allowed(false);
        ++observed;
      };
      failed_eigen_assertions = 0;
      flowmatch::SolveResult<double> result;
      {
        const AllowMallocOnExit guard;
        result = flowmatch::integrate(flow, x0, grid, options);
      }
      INFO(flowmatch::method_name(method));
      CHECK(failed_eigen_assertions == 0);
      CHECK(observed == result.stats.accepted);
      CHECK(observed > 1);
      CHECK(result.state.allFinite());
    }
  }
}
