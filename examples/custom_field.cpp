// custom_field: a lambda as a velocity field, sampled with a fixed-step and an adaptive method
// and encoded back (the program shown in the README).
#include <flowmatch/solver/integrate.hpp>

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
  flowmatch::Matrix<double> x0 = flowmatch::Matrix<double>::Random(2, 1000);

  flowmatch::SolverOptions<double> options;
  options.method = flowmatch::Method::rk4;  // euler, midpoint, heun2, heun3, rk4, rk38
  options.step_size = 0.05;
  const auto fixed = flowmatch::sample(rotation, x0, options);  // t: 0 -> 1
  options.method = flowmatch::Method::dopri5;                   // or tsit5, rkf78
  options.step_size.reset();                                    // fixed-step methods only
  options.rtol = options.atol = 1e-8;
  const auto adaptive = flowmatch::sample(rotation, x0, options);
  const auto back = flowmatch::encode(rotation, adaptive.state, options);  // t: 1 -> 0
  std::cout << "rk4: " << fixed.stats.nfe << " evaluations; dopri5: " << adaptive.stats.nfe
            << " evaluations, " << adaptive.stats.rejected << " rejected steps; largest gap "
            << (fixed.state - adaptive.state).cwiseAbs().maxCoeff() << "; round trip error "
            << (back.state - x0).cwiseAbs().maxCoeff() << "\n";
  return (back.state - x0).cwiseAbs().maxCoeff() < 1e-6 ? 0 : 1;
}
