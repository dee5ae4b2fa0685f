// Uses the installed headers: integrates u_t(x) = -x by hand with the CondOT scheduler types.
#include <flowmatch/field/velocity_field.hpp>
#include <flowmatch/scheduler/condot.hpp>

#include <cmath>
#include <cstdio>

int main() {
  static_assert(flowmatch::ConvexScheduler<flowmatch::CondOT<double>>);
  const flowmatch::CondOT<double> scheduler;
  auto field = [](double, const auto& x) { return -x; };
  flowmatch::Matrix<double> x = flowmatch::Matrix<double>::Ones(2, 3);
  const flowmatch::Matrix<double> velocity = flowmatch::evaluate_velocity<double>(field, 0.5, x);
  const bool ok = velocity.isApprox(-x) && scheduler.alpha(0.25) == 0.25;
  std::puts(ok ? "flowmatch consumer ok" : "flowmatch consumer FAILED");
  return ok ? 0 : 1;
}
