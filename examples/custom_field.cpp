// custom_field: any lambda is a velocity field. Rotate a batch of points by a quarter turn with
// u_t(x) = (π/2)·(−x₂, x₁), once with a fixed-step and once with an adaptive method, and
// compare with the exact rotation.
#include <flowmatch/solver/integrate.hpp>

#include <cmath>
#include <iostream>
#include <numbers>

int main() {
  const double speed = std::numbers::pi / 2;
  auto rotation = [speed](double /*t*/, const auto& x) {
    flowmatch::Matrix<double> velocity(2, x.cols());
    velocity.row(0) = -speed * x.row(1);
    velocity.row(1) = speed * x.row(0);
    return velocity;
  };
  flowmatch::Matrix<double> x0 = flowmatch::Matrix<double>::Random(2, 1000);  // one column each
  flowmatch::Matrix<double> exact(2, x0.cols());  // a quarter turn of every point
  exact << -x0.row(1), x0.row(0);

  flowmatch::SolverOptions<double> options;
  options.method = flowmatch::Method::rk4;  // or euler, midpoint, heun2, heun3, rk38, ...
  options.step_size = 0.05;
  const auto fixed = flowmatch::sample(rotation, x0, options);
  options.method = flowmatch::Method::dopri5;  // adaptive: rtol/atol control the error
  options.rtol = options.atol = 1e-8;
  const auto adaptive = flowmatch::sample(rotation, x0, options);

  std::cout << "rk4, h = 0.05: error " << (fixed.state - exact).cwiseAbs().maxCoeff() << ", "
            << fixed.stats.nfe << " evaluations\n"
            << "dopri5, tol 1e-8: error " << (adaptive.state - exact).cwiseAbs().maxCoeff() << ", "
            << adaptive.stats.nfe << " evaluations\n";
  return (adaptive.state - exact).cwiseAbs().maxCoeff() < 1e-6 ? 0 : 1;
}
