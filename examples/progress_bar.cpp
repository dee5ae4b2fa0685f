// Shows a progress bar while sampling, through the solver's observer hook.
//
// The field is the exact velocity of the straight-line (CondOT) path from N(0, I) to
// N(μ, s²I): u_t(x) = μ + (t s² − (1 − t))/(t² s² + (1 − t)²)·(x − tμ). Its flow maps a noise
// point x0 to μ + s·x0 at t = 1, which the program checks at the end.
#include <cmath>
#include <cstdio>
#include <random>

#include "flowmatch/solver/integrate.hpp"

namespace {

struct GaussianFlow {
  flowmatch::Vector<double> mu;
  double s;
  void operator()(double t, const flowmatch::ConstMatrixRef<double>& x,
                  flowmatch::MatrixRef<double> out) const {
    const double rate = (t * s * s - (1 - t)) / (t * t * s * s + (1 - t) * (1 - t));
    for (Eigen::Index j = 0; j < x.cols(); ++j) out.col(j) = rate * (x.col(j) - t * mu) + mu;
  }
};

// Redraws a 40-character bar when the completed percentage changes.
class ProgressBar {
 public:
  void show(double fraction) {
    const int percent = static_cast<int>(std::lround(100 * fraction));
    if (percent == last_percent_) return;
    last_percent_ = percent;
    const int filled = percent * width / 100;
    std::printf("\r[%.*s%*s] %3d%%", filled, "########################################",
                width - filled, "", percent);
    std::fflush(stdout);
  }

 private:
  static constexpr int width = 40;
  int last_percent_ = -1;
};

}  // namespace

int main() {
  const GaussianFlow flow{flowmatch::Vector<double>::LinSpaced(8, -1.0, 1.0), 0.5};
  std::mt19937_64 generator(42);
  std::normal_distribution<double> normal;
  flowmatch::Matrix<double> noise(8, 256);
  for (double& entry : noise.reshaped()) entry = normal(generator);

  ProgressBar bar;
  flowmatch::SolverOptions<double> options;
  options.method = flowmatch::Method::rk4;
  options.step_size = 1e-3;
  // t runs from 0 to 1 when sampling, so t is the completed fraction.
  options.observer = [&bar](double t, const flowmatch::Matrix<double>&,
                            const flowmatch::SolverStats&) { bar.show(t); };
  const auto result = flowmatch::sample(flow, noise, options);

  flowmatch::Matrix<double> exact = flow.s * noise;
  exact.colwise() += flow.mu;
  std::printf("\nsampled %ld points in %zu steps (%zu evaluations); max error %.2e\n",
              static_cast<long>(noise.cols()), result.stats.accepted, result.stats.nfe,
              (result.state - exact).cwiseAbs().maxCoeff());
  return (result.state - exact).cwiseAbs().maxCoeff() < 1e-8 ? 0 : 1;
}
