/// @file result.hpp
/// @brief What an integration returns: the final state, an optional trajectory, statistics.
#pragma once

#include <cstddef>
#include <vector>

#include "flowmatch/core/types.hpp"

namespace flowmatch {

/// Work done by one integration.
struct SolverStats {
  std::size_t nfe = 0;       ///< Evaluations of the system (the velocity field), all stages.
  std::size_t accepted = 0;  ///< Accepted steps (every step of a fixed-step method).
  std::size_t rejected = 0;  ///< Steps rejected by the error control (adaptive methods).
  std::size_t forced = 0;    ///< Steps taken at min_step without error control (force_min_step).
  double min_step = 0;       ///< Smallest |step| accepted (0 before the first step).
  double max_step = 0;       ///< Largest |step| accepted.
};

/// The outcome of an integration over a grid t_0, ..., t_K.
template <class Scalar>
struct SolveResult {
  /// The state at the last grid time t_K (same shape as the initial state).
  Matrix<Scalar> state;
  /// With SolverOptions::return_trajectory: the state at every grid time, trajectory[k] at
  /// times[k] (trajectory[0] is the initial state); otherwise empty.
  std::vector<Matrix<Scalar>> trajectory;
  /// The grid t_0, ..., t_K.
  std::vector<Scalar> times;
  /// Function evaluations and step counts.
  SolverStats stats;
};

}  // namespace flowmatch
