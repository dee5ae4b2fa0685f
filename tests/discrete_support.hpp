// Shared by test_discrete and test_discrete_train: random token batches and the empirical
// distribution of sampled sequences over an enumerable joint.
#pragma once

#include <random>

#include "flowmatch/core/types.hpp"
#include "flowmatch/discrete/tokens.hpp"
#include "flowmatch/oracle/discrete_joint.hpp"

namespace flowmatch_test {

/// A rows×cols batch of tokens drawn uniformly from {0, …, states − 1}.
inline flowmatch::TokenMatrix random_tokens(flowmatch::Index rows, flowmatch::Index cols,
                                            flowmatch::Index states, std::mt19937_64& generator) {
  std::uniform_int_distribution<flowmatch::Token> token(0, states - 1);
  flowmatch::TokenMatrix tokens(rows, cols);
  for (flowmatch::Index entry = 0; entry < tokens.size(); ++entry) tokens(entry) = token(generator);
  return tokens;
}

/// The counts of each sequence of @p joint among the columns of @p tokens.
inline flowmatch::Vector<double> state_counts(const flowmatch::DiscreteJoint& joint,
                                              const flowmatch::TokenMatrix& tokens) {
  flowmatch::Vector<double> counts = flowmatch::Vector<double>::Zero(joint.sequences());
  for (flowmatch::Index sequence = 0; sequence < tokens.cols(); ++sequence) {
    counts(joint.index_of(tokens, sequence)) += 1;
  }
  return counts;
}

/// The total-variation distance ½ Σ |counts/total − expected| of @p counts from @p expected.
inline double total_variation(const flowmatch::Vector<double>& counts,
                              const flowmatch::Vector<double>& expected) {
  return 0.5 * (counts / counts.sum() - expected).cwiseAbs().sum();
}

}  // namespace flowmatch_test
