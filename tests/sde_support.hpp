// Shared by tests and benchmarks (test_sde, test_likelihood, sde_weak_order,
// density_tolerance): the data mixture the stochastic sampler and the density defaults are
// measured on, and the least-squares slope of a log-log fit.
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

#include "flowmatch/core/types.hpp"
#include "flowmatch/oracle/gaussian_mixture.hpp"

namespace flowmatch_test {

/// Three components in the plane with full covariances.
inline flowmatch::GaussianMixture<double> sde_data_mixture() {
  flowmatch::Vector<double> weights(3);
  weights << 0.5, 0.3, 0.2;
  flowmatch::Matrix<double> means(2, 3);
  means << -2.0, 2.0, 0.5,  //
      0.0, 1.0, -2.0;
  flowmatch::Matrix<double> first(2, 2), second(2, 2), third(2, 2);
  first << 0.30, 0.10, 0.10, 0.20;
  second << 0.25, -0.05, -0.05, 0.40;
  third << 0.50, 0.00, 0.00, 0.15;
  return flowmatch::GaussianMixture<double>::with_covariances(weights, means,
                                                              {first, second, third});
}

/// The least-squares slope of log y against log x.
inline double log_log_slope(const std::vector<double>& x, const std::vector<double>& y) {
  double mean_x = 0, mean_y = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    mean_x += std::log(x[i]) / static_cast<double>(x.size());
    mean_y += std::log(y[i]) / static_cast<double>(y.size());
  }
  double covariance = 0, variance = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    covariance += (std::log(x[i]) - mean_x) * (std::log(y[i]) - mean_y);
    variance += (std::log(x[i]) - mean_x) * (std::log(x[i]) - mean_x);
  }
  return covariance / variance;
}

}  // namespace flowmatch_test
