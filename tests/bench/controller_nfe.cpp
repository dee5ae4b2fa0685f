// Accuracy against function evaluations of the step-size controllers (step_controller.hpp) for
// each adaptive method, on a rotation (closed form), Van der Pol with μ = 1 (time scaled by 10
// onto [0, 1]), and a Gaussian-mixture flow in 2-D, forward (noise → data) and backward. The
// references are rkf78 at rtol = atol = 1e-12 where there is no closed form.
//
// Summary: the work-precision score of a run is NFE·error^(1/p), p the order of the method
// (the cost of reaching an error e grows like e^(−1/p)); the table gives, per controller, the
// geometric mean of its score over all problems and tolerances divided by that of the integral
// controller (below 1: the controller does better).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "flowmatch/oracle/gaussian_mixture_path.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/solver/integrate.hpp"

namespace {

using flowmatch::ConstMatrixRef;
using flowmatch::Matrix;
using flowmatch::MatrixRef;
using flowmatch::Method;
using flowmatch::PidCoefficients;
using flowmatch::SolverOptions;
using System = std::function<void(double, const ConstMatrixRef<double>&, MatrixRef<double>)>;

struct Problem {
  std::string name;
  System system;
  Matrix<double> initial;
  std::vector<double> grid;
  Matrix<double> exact;
};

Matrix<double> reference(const System& system, const Matrix<double>& initial,
                         const std::vector<double>& grid) {
  SolverOptions<double> options;
  options.method = Method::rkf78;
  options.rtol = options.atol = 1e-12;
  return flowmatch::integrate_system(system, initial, grid, options).state;
}

std::vector<Problem> problems(std::mt19937_64& generator) {
  std::normal_distribution<double> normal;
  std::vector<Problem> list;
  {
    Matrix<double> x(2, 64);
    for (double& entry : x.reshaped()) entry = normal(generator);
    const double angle = 2 * std::acos(-1.0);  // one full turn at speed 2π
    Matrix<double> exact(2, 64);
    exact.row(0) = std::cos(angle) * x.row(0) - std::sin(angle) * x.row(1);
    exact.row(1) = std::sin(angle) * x.row(0) + std::cos(angle) * x.row(1);
    list.push_back({"rotation",
                    [angle](double, const ConstMatrixRef<double>& state, MatrixRef<double> out) {
                      out.row(0) = -angle * state.row(1);
                      out.row(1) = angle * state.row(0);
                    },
                    x,
                    {0.0, 1.0},
                    exact});
  }
  {
    Matrix<double> x(2, 64);
    for (Eigen::Index n = 0; n < x.cols(); ++n) {
      x(0, n) = 2 + 0.2 * normal(generator);
      x(1, n) = 0.2 * normal(generator);
    }
    const System van_der_pol = [](double, const ConstMatrixRef<double>& state,
                                  MatrixRef<double> out) {
      constexpr double scale = 10;  // ten time units on [0, 1]
      const auto position = state.row(0).array();
      const auto speed = state.row(1).array();
      out.row(0) = scale * speed.matrix();
      out.row(1) = (scale * ((1 - position.square()) * speed - position)).matrix();
    };
    list.push_back({"van der pol", van_der_pol, x, {0.0, 1.0}, Matrix<double>()});
  }
  {
    std::uniform_real_distribution<double> uniform(0.05, 0.5);
    Matrix<double> means(2, 4), variances(2, 4);
    for (double& entry : means.reshaped()) entry = 2 * normal(generator);
    for (double& entry : variances.reshaped()) entry = uniform(generator);
    const auto path = std::make_shared<flowmatch::GaussianMixturePath<flowmatch::CondOT<double>>>(
        flowmatch::GaussianMixture<double>::with_diagonal_covariances(
            flowmatch::Vector<double>::Ones(4), means, variances));
    const System velocity = [path](double t, const ConstMatrixRef<double>& state,
                                   MatrixRef<double> out) { (*path)(t, state, out); };
    Matrix<double> x(2, 256);
    for (double& entry : x.reshaped()) entry = normal(generator);
    list.push_back({"mixture forward", velocity, x, {0.0, 1.0}, Matrix<double>()});
    const Matrix<double> data = reference(velocity, x, {0.0, 1.0});
    list.push_back({"mixture backward", velocity, data, {1.0, 0.0}, Matrix<double>()});
  }
  for (Problem& problem : list) {
    if (problem.exact.size() == 0) {
      problem.exact = reference(problem.system, problem.initial, problem.grid);
    }
  }
  return list;
}

}  // namespace

int main() {
  std::mt19937_64 generator(2026);
  const std::vector<Problem> cases = problems(generator);
  const std::vector<std::pair<std::string, PidCoefficients>> controllers{
      {"integral", PidCoefficients::integral()},
      {"h211pi", PidCoefficients::h211pi()},
      {"h312pid", PidCoefficients::h312pid()},
      {"pi34", PidCoefficients::pi34()},
      {"kennedy-carpenter", PidCoefficients::kennedy_carpenter()}};
  const std::vector<std::pair<Method, double>> methods{
      {Method::dopri5, 5}, {Method::tsit5, 5}, {Method::rkf78, 7}};
  const std::vector<double> tolerances{1e-4, 1e-6, 1e-8};
  std::vector<double> log_score(controllers.size(), 0.0);
  std::size_t runs = 0;
  for (const auto& [method, order] : methods) {
    std::printf("\n%s: max error / NFE\n%-18s %6s",
                std::string(flowmatch::method_name(method)).c_str(), "problem", "tol");
    for (const auto& controller : controllers) std::printf(" %21s", controller.first.c_str());
    std::printf("\n");
    for (const Problem& problem : cases) {
      for (const double tol : tolerances) {
        std::printf("%-18s %6.0e", problem.name.c_str(), tol);
        for (std::size_t c = 0; c < controllers.size(); ++c) {
          SolverOptions<double> options;
          options.method = method;
          options.rtol = options.atol = tol;
          options.controller = flowmatch::StepController::pid;
          options.pid_coefficients = controllers[c].second;
          const auto result =
              flowmatch::integrate_system(problem.system, problem.initial, problem.grid, options);
          const double error = (result.state - problem.exact).cwiseAbs().maxCoeff();
          std::printf(" %10.2e / %6zu", error, result.stats.nfe);
          log_score[c] += std::log(static_cast<double>(result.stats.nfe)) +
                          std::log(std::max(error, 1e-300)) / order;
        }
        std::printf("\n");
        ++runs;
      }
    }
  }
  std::printf(
      "\nwork-precision score relative to the integral controller (geometric mean of "
      "NFE·error^(1/p) over %zu runs; below 1 is better)\n",
      runs);
  for (std::size_t c = 0; c < controllers.size(); ++c) {
    std::printf("%-18s %.3f\n", controllers[c].first.c_str(),
                std::exp((log_score[c] - log_score[0]) / static_cast<double>(runs)));
  }
}
