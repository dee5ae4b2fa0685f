// Accuracy against function evaluations of the adaptive methods on Gaussian-mixture flows in
// 2 and 32 dimensions, next to a plain textbook Dormand–Prince 5(4) loop with an RMS error
// norm (Hairer–Nørsett–Wanner II.4: scale atol + rtol·max(|x_old|, |x_new|), controller
// 0.9·err^(−1/5) clamped to [0.2, 10], FSAL).
// The reference endpoint is rkf78 at rtol = atol = 1e-12.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "flowmatch/oracle/gaussian_mixture_path.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/solver/integrate.hpp"

namespace {

using flowmatch::Matrix;
using Path = flowmatch::GaussianMixturePath<flowmatch::CondOT<double>>;

Path make_path(Eigen::Index dim, Eigen::Index components, std::mt19937_64& generator) {
  std::normal_distribution<double> normal;
  std::uniform_real_distribution<double> uniform(0.05, 0.5);
  Matrix<double> means(dim, components), variances(dim, components);
  for (double& entry : means.reshaped()) entry = 2 * normal(generator);
  for (double& entry : variances.reshaped()) entry = uniform(generator);
  const flowmatch::Vector<double> weights = flowmatch::Vector<double>::Ones(components);
  return Path(
      flowmatch::GaussianMixture<double>::with_diagonal_covariances(weights, means, variances));
}

struct Outcome {
  double error;
  std::size_t nfe;
};

// Textbook Dormand–Prince 5(4) from t = 0 to 1 with an RMS norm over the whole batch.
Outcome reference_dopri5(const Path& path, const Matrix<double>& x0, const Matrix<double>& exact,
                         double tol) {
  static const double c[7] = {0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1, 1};
  static const double a[7][6] = {
      {},
      {1.0 / 5},
      {3.0 / 40, 9.0 / 40},
      {44.0 / 45, -56.0 / 15, 32.0 / 9},
      {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729},
      {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656},
      {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84}};
  static const double e[7] = {71.0 / 57600,      0,          -71.0 / 16695, 71.0 / 1920,
                              -17253.0 / 339200, 22.0 / 525, -1.0 / 40};
  std::size_t nfe = 0;
  const auto f = [&](double t, const Matrix<double>& x, Matrix<double>& out) {
    ++nfe;
    path(std::clamp(t, 0.0, 1.0), x, out);
  };
  std::vector<Matrix<double>> k(7, Matrix<double>(x0.rows(), x0.cols()));
  Matrix<double> x = x0, stage(x0.rows(), x0.cols()), error(x0.rows(), x0.cols());
  double t = 0, h = 0.01;
  f(t, x, k[0]);
  while (t < 1) {
    h = std::min(h, 1 - t);
    for (int s = 1; s < 7; ++s) {
      stage = x;
      for (int j = 0; j < s; ++j) stage += h * a[s][j] * k[j];
      f(t + c[s] * h, stage, k[s]);
    }
    error.setZero();
    for (int s = 0; s < 7; ++s) error += h * e[s] * k[s];
    const double norm = std::sqrt(
        (error.array() / (tol + tol * x.array().abs().max(stage.array().abs()))).square().mean());
    if (norm <= 1) {
      t = h == 1 - t ? 1 : t + h;
      x = stage;
      k[0] = k[6];
    }
    h *= std::clamp(0.9 * std::pow(std::max(norm, 1e-10), -0.2), 0.2, 10.0);
  }
  return {(x - exact).cwiseAbs().maxCoeff(), nfe};
}

Outcome run(const Path& path, const Matrix<double>& x0, const Matrix<double>& exact,
            flowmatch::Method method, flowmatch::ErrorNorm norm, double tol) {
  flowmatch::SolverOptions<double> options;
  options.method = method;
  options.error_norm = norm;
  options.rtol = options.atol = tol;
  const auto result = flowmatch::sample(path, x0, options);
  return {(result.state - exact).cwiseAbs().maxCoeff(), result.stats.nfe};
}

void table(Eigen::Index dim, std::mt19937_64& generator) {
  const Path path = make_path(dim, 4, generator);
  std::normal_distribution<double> normal;
  Matrix<double> x0(dim, 256);
  for (double& entry : x0.reshaped()) entry = normal(generator);
  flowmatch::SolverOptions<double> reference_options;
  reference_options.method = flowmatch::Method::rkf78;
  reference_options.rtol = reference_options.atol = 1e-12;
  const Matrix<double> exact = flowmatch::sample(path, x0, reference_options).state;

  std::printf("\nd = %ld, N = %ld: max error / NFE\n", static_cast<long>(dim),
              static_cast<long>(x0.cols()));
  std::printf("%8s %20s %20s %20s %20s %20s\n", "tol", "reference dp5 rms", "dopri5 rms",
              "dopri5 max", "tsit5 rms", "rkf78 rms");
  using flowmatch::ErrorNorm;
  using flowmatch::Method;
  for (const double tol : {1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8}) {
    const Outcome outcomes[] = {reference_dopri5(path, x0, exact, tol),
                                run(path, x0, exact, Method::dopri5, ErrorNorm::rms, tol),
                                run(path, x0, exact, Method::dopri5, ErrorNorm::max, tol),
                                run(path, x0, exact, Method::tsit5, ErrorNorm::rms, tol),
                                run(path, x0, exact, Method::rkf78, ErrorNorm::rms, tol)};
    std::printf("%8.0e", tol);
    for (const Outcome& outcome : outcomes)
      std::printf(" %11.2e / %5zu", outcome.error, outcome.nfe);
    std::printf("\n");
  }
}

}  // namespace

int main() {
  std::mt19937_64 generator(2024);
  table(2, generator);
  table(32, generator);
}
