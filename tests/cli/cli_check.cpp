// Companion of cli_test.sh: writes the input files of the end-to-end test of the flowmatch tool
// and checks its outputs against independent closed forms.
//
// The test models have no hidden layer, u_t(x | c) = a ⊙ x + w·t + B·c + b with a diagonal
// linear part, so their flow is solved in closed form coordinate by coordinate:
//
//     x(t₁) = e^{a(t₁−t₀)}·x(t₀) + β·J₀ + w·J₁,   β = b + B·c (per sample),
//     J₀ = ∫ e^{a(t₁−s)} ds = (E − 1)/a,   J₁ = ∫ s·e^{a(t₁−s)} ds = (t₀E − t₁)/a + (E − 1)/a²,
//
// with E = e^{a(t₁−t₀)}, integrals over [t₀, t₁]. From N(0, I) at t = 0 the density at time t is
// Gaussian with mean x(t) of x(0) = 0 and variances e^{2at}, so the log-likelihood is
// log N(x(0)) − Σ a and the exact score −(x − mean)/e^{2at}. Guidance with weight g combines
// the conditional and null fields linearly, (1 − g)·u(·|0) + g·u(·|c), which is the same model
// with β = b + g·B·c.
//
// Sampling under another scheduler (ᾱ, σ̄) starts from x̄_0 = s_0·x_{t_0} of the CondOT flow,
// where ρ(t_0) = ᾱ_0/σ̄_0 (CondOT: t_0 = ρ/(1 + ρ)) and s_0 = σ̄_0/(1 − t_0), and ends at x̄_1 = x_1.
// For VP (β_min = 0.1, β_max = 20) ᾱ_0 = e^{−(β_min + β_max)/4}, for linear VP ᾱ_0 = 0, and both
// have σ̄_0 = sqrt(1 − ᾱ_0²).
//
// Usage: cli_check <mode> <arguments>; exit status 0 when the check passes.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <numbers>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "flowmatch/io/mlp_safetensors.hpp"
#include "flowmatch/io/npy.hpp"
#include "flowmatch/nn/mlp.hpp"

namespace {

using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::Vector;

/// The closed-form flow of a model without hidden layers (see the file comment).
class LinearFlow {
 public:
  explicit LinearFlow(const flowmatch::Mlp<double>& model) : dim_(model.dim()) {
    const Matrix<double>& weight = model.weight(0);
    const Matrix<double> linear = weight.leftCols(dim_);
    if (model.layer_count() != 1 || !linear.isDiagonal()) {
      throw std::invalid_argument("expected a model without hidden layers, diagonal in x");
    }
    rate_ = linear.diagonal();
    time_weight_ = weight.col(dim_);
    cond_weight_ = weight.rightCols(model.cond_dim());
    bias_ = model.bias(0);
  }

  /// β per sample: b + g_n·B·c_n (c_n the one-hot of label ℓ_n, zero for −1).
  [[nodiscard]] Matrix<double> biases(Index samples, const std::vector<std::int64_t>& labels,
                                      const Vector<double>& guidance) const {
    Matrix<double> result = bias_.replicate(1, samples);
    for (Index n = 0; n < samples && !labels.empty(); ++n) {
      const std::int64_t label = labels[static_cast<std::size_t>(n)];
      if (label >= 0) result.col(n) += guidance(n) * cond_weight_.col(label);
    }
    return result;
  }

  /// x(t1) from x(t0) (columns are samples), with per-sample biases β.
  [[nodiscard]] Matrix<double> flow(const Matrix<double>& x, double t0, double t1,
                                    const Matrix<double>& beta) const {
    Matrix<double> result(x.rows(), x.cols());
    for (Index i = 0; i < dim_; ++i) {
      const double a = rate_(i);
      const double growth = std::exp(a * (t1 - t0));
      const double j0 = (growth - 1) / a;
      const double j1 = (t0 * growth - t1) / a + (growth - 1) / (a * a);
      result.row(i) = growth * x.row(i) + j0 * beta.row(i);
      result.row(i).array() += time_weight_(i) * j1;
    }
    return result;
  }

  [[nodiscard]] Vector<double> log_likelihood(const Matrix<double>& x,
                                              const Matrix<double>& beta) const {
    const Matrix<double> noise = flow(x, 1, 0, beta);
    const double normaliser = 0.5 * static_cast<double>(dim_) * std::log(2 * std::numbers::pi);
    return (-0.5 * noise.colwise().squaredNorm().array() - normaliser - rate_.sum())
        .matrix()
        .transpose();
  }

  [[nodiscard]] Matrix<double> exact_score(const Matrix<double>& x, double t,
                                           const Matrix<double>& beta) const {
    const Matrix<double> mean = flow(Matrix<double>::Zero(x.rows(), x.cols()), 0, t, beta);
    const Vector<double> variance = (2 * t * rate_).array().exp();
    return -(variance.cwiseInverse().asDiagonal() * (x - mean));
  }

  /// The score read off the velocity on the CondOT path: (t·u − x)/(1 − t).
  [[nodiscard]] Matrix<double> condot_velocity_score(const Matrix<double>& x, double t,
                                                     const Matrix<double>& beta) const {
    Matrix<double> velocity = rate_.asDiagonal() * x + beta;
    velocity.colwise() += t * time_weight_;
    return (t * velocity - x) / (1 - t);
  }

 private:
  Index dim_;
  Vector<double> rate_, time_weight_, bias_;
  Matrix<double> cond_weight_;
};

/// A model u = a ⊙ x + w·t + B·c + b of dimension 2 with @p classes condition entries.
flowmatch::Mlp<double> linear_model(Index classes) {
  flowmatch::MlpConfig config;
  config.dim = 2;
  config.cond_dim = classes;
  flowmatch::Mlp<double> model(config);
  Matrix<double> weight = Matrix<double>::Zero(2, 3 + classes);
  weight(0, 0) = 0.5;
  weight(1, 1) = -0.3;
  weight.col(2) << 0.2, -0.1;
  for (Index k = 0; k < classes; ++k) {
    weight.col(3 + k) << std::cos(2.0 * k), std::sin(2.0 * k) + 0.5;
  }
  model.set_weight(0, weight);
  model.set_bias(0, Vector<double>{{1.0, -0.5}});
  return model;
}

/// A model u = s·(r·a ⊙ x + w·t + b) of dimension @p dim without hidden layers, a_i = 0.5 − 0.2i,
/// w_i = 0.2, b_i = 1 − 0.5i, s = @p scale (zero velocity for 0) and r = @p rate (0 for a field
/// that does not depend on x, continuous on a torus).
flowmatch::Mlp<double> scaled_linear_model(Index dim, double scale, double rate) {
  flowmatch::MlpConfig config;
  config.dim = dim;
  flowmatch::Mlp<double> model(config);
  Matrix<double> weight = Matrix<double>::Zero(dim, dim + 1);
  Vector<double> bias(dim);
  for (Index i = 0; i < dim; ++i) {
    weight(i, i) = scale * rate * (0.5 - 0.2 * static_cast<double>(i));
    weight(i, dim) = scale * 0.2;
    bias(i) = scale * (1 - 0.5 * static_cast<double>(i));
  }
  model.set_weight(0, weight);
  model.set_bias(0, bias);
  return model;
}

/// The entries of the [N, D] array at @p path in the columns [first, first + count) of each
/// row (all columns without @p first), as N rows.
Matrix<double> row_blocks(const std::string& path, const std::vector<std::string>& args,
                          std::size_t first_arg) {
  const Matrix<double> points = flowmatch::io::load_npy_batch<double>(path);
  const Index first = args.size() > first_arg ? std::stol(args[first_arg]) : 0;
  const Index count = args.size() > first_arg + 1 ? std::stol(args[first_arg + 1]) : points.rows();
  return points.middleRows(first, count).transpose();
}

std::vector<double> numbers(const std::string& text) {
  std::vector<double> values;
  std::size_t begin = 0;
  while (begin <= text.size()) {
    const std::size_t comma = text.find(',', begin);
    values.push_back(std::stod(text.substr(begin, comma - begin)));
    if (comma == std::string::npos) break;
    begin = comma + 1;
  }
  return values;
}

/// Compares two arrays element by element; prints the largest difference.
bool close(const flowmatch::io::NpyArray& actual, const flowmatch::io::NpyArray& expected,
           double tolerance, const std::string& what) {
  if (actual.shape != expected.shape) {
    std::cerr << what << ": shapes differ\n";
    return false;
  }
  double largest = 0;
  for (std::size_t k = 0; k < actual.values.size(); ++k) {
    const double difference = std::abs(actual.values[k] - expected.values[k]);
    largest = std::isnan(difference) ? INFINITY : std::max(largest, difference);
  }
  std::cout << what << ": largest difference " << largest << " (tolerance " << tolerance << ")\n";
  return largest <= tolerance;
}

/// Compares the file at @p path with @p expected, a d×N batch ([N, d] in the file).
bool close_to(const std::string& path, const Matrix<double>& expected, double tolerance) {
  flowmatch::io::NpyArray reference;
  reference.shape = {expected.cols(), expected.rows()};
  reference.values.assign(expected.data(), expected.data() + expected.size());
  return close(flowmatch::io::read_npy(path), reference, tolerance, path);
}

/// Compares the file at @p path with the length-N @p expected ([N] in the file).
bool close_to(const std::string& path, const Vector<double>& expected, double tolerance) {
  flowmatch::io::NpyArray reference;
  reference.shape = {expected.size()};
  reference.values.assign(expected.data(), expected.data() + expected.size());
  return close(flowmatch::io::read_npy(path), reference, tolerance, path);
}

int run(const std::vector<std::string>& args) {
  const std::string& mode = args.at(0);
  if (mode == "linear-model") {  // linear-model OUT [classes]
    const Index classes = args.size() > 2 ? std::stol(args[2]) : 0;
    flowmatch::io::save_mlp(args.at(1), linear_model(classes));
    return 0;
  }
  if (mode == "model") {  // model OUT d scale [rate]: scaled_linear_model, rate 1 by default
    const double rate = args.size() > 4 ? std::stod(args[4]) : 1;
    flowmatch::io::save_mlp(
        args.at(1), scaled_linear_model(std::stol(args.at(2)), std::stod(args.at(3)), rate));
    return 0;
  }
  if (mode == "unit-rows") {  // unit-rows FILE TOL [first count]: each row's block has norm 1
    const Matrix<double> rows = row_blocks(args.at(1), args, 3);
    const double largest = (rows.rowwise().norm().array() - 1).abs().maxCoeff();
    std::cout << args[1] << ": largest | |x| - 1 | " << largest << "\n";
    return largest <= std::stod(args.at(2)) ? 0 : 1;
  }
  if (mode == "in-range") {  // in-range FILE LO HI [first count]: entries in [LO, HI)
    const Matrix<double> rows = row_blocks(args.at(1), args, 4);
    return rows.minCoeff() >= std::stod(args.at(2)) && rows.maxCoeff() < std::stod(args.at(3)) ? 0
                                                                                               : 1;
  }
  if (mode == "constant") {  // constant FILE VALUE TOL: every entry is VALUE
    const flowmatch::io::NpyArray array = flowmatch::io::read_npy(args.at(1));
    double largest = 0;
    for (const double value : array.values) {
      const double difference = std::abs(value - std::stod(args.at(2)));
      if (!(difference <= largest)) largest = difference;  // NaN too
    }
    std::cout << args[1] << ": largest difference " << largest << "\n";
    return !array.values.empty() && largest <= std::stod(args.at(3)) ? 0 : 1;
  }
  if (mode == "normal") {  // normal OUT N d seed [shift]: N(shift, I) points, [N, d]
    std::mt19937_64 generator(std::stoull(args.at(4)));
    std::normal_distribution<double> normal;
    Matrix<double> points(std::stol(args.at(3)), std::stol(args.at(2)));
    for (double& value : points.reshaped()) value = normal(generator);
    if (args.size() > 5) points.array() += std::stod(args[5]);
    flowmatch::io::save_npy(args.at(1), points);
    return 0;
  }
  if (mode == "labels") {  // labels OUT N K: n mod (K + 1) − 1, so −1 (null) occurs
    const std::int64_t count = std::stol(args.at(2)), classes = std::stol(args.at(3));
    flowmatch::io::NpyArray array;
    array.type = flowmatch::io::NpyType::i8;
    array.shape = {count};
    for (std::int64_t n = 0; n < count; ++n) array.integers.push_back(n % (classes + 1) - 1);
    flowmatch::io::write_npy(args.at(1), array);
    return 0;
  }
  if (mode == "tokens") {  // tokens OUT N L first [K]: [N, L] int64, (first + n + l) mod K
    const std::int64_t count = std::stol(args.at(2)), length = std::stol(args.at(3));
    const std::int64_t first = std::stol(args.at(4));
    const std::int64_t vocabulary = args.size() > 5 ? std::stol(args[5]) : 3;
    flowmatch::io::NpyArray array;
    array.type = flowmatch::io::NpyType::i8;
    array.shape = {count, length};
    for (std::int64_t n = 0; n < count; ++n) {
      for (std::int64_t l = 0; l < length; ++l)
        array.integers.push_back((first + n + l) % vocabulary);
    }
    flowmatch::io::write_npy(args.at(1), array);
    return 0;
  }
  if (mode == "tokens-in") {  // tokens-in FILE K: an int64 array of tokens in [0, K)
    const flowmatch::io::NpyArray array = flowmatch::io::read_npy(args.at(1));
    const std::int64_t vocabulary = std::stol(args.at(2));
    if (array.type != flowmatch::io::NpyType::i8 || array.integers.empty()) return 1;
    for (const std::int64_t token : array.integers) {
      if (token < 0 || token >= vocabulary) return 1;
    }
    return 0;
  }
  if (mode == "float64") {  // float64 FILE: an array of dtype float64
    return flowmatch::io::read_npy(args.at(1)).type == flowmatch::io::NpyType::f8 ? 0 : 1;
  }
  if (mode == "vector") {  // vector OUT v0,v1,...
    const std::vector<double> values = numbers(args.at(2));
    flowmatch::io::save_npy_vector(args.at(1),
                                   Vector<double>(Eigen::Map<const Vector<double>>(
                                       values.data(), static_cast<Index>(values.size()))));
    return 0;
  }
  if (mode == "close") {  // close A B TOL
    return close(flowmatch::io::read_npy(args.at(1)), flowmatch::io::read_npy(args.at(2)),
                 std::stod(args.at(3)), args[1] + " vs " + args[2])
               ? 0
               : 1;
  }
  if (mode == "unbiased") {  // unbiased A B Z: mean of A − B within Z standard errors of 0
    const flowmatch::io::NpyArray estimate = flowmatch::io::read_npy(args.at(1));
    const flowmatch::io::NpyArray exact = flowmatch::io::read_npy(args.at(2));
    if (estimate.values.size() != exact.values.size() || exact.values.size() < 2) return 1;
    const auto count = static_cast<Index>(exact.values.size());
    const Vector<double> difference =
        Eigen::Map<const Vector<double>>(estimate.values.data(), count) -
        Eigen::Map<const Vector<double>>(exact.values.data(), count);
    const double mean = difference.mean();
    // The standard error of the mean, from the sample variance.
    const double error = std::sqrt((difference.array() - mean).square().sum() /
                                   static_cast<double>((count - 1) * count));
    std::cout << args[1] << " - " << args[2] << ": mean " << mean << ", standard error " << error
              << "\n";
    // A zero spread would mean the estimate did not vary at all: no estimator ran.
    return error > 0 && std::abs(mean) <= std::stod(args.at(3)) * error ? 0 : 1;
  }
  if (mode == "shape") {  // shape FILE d0,d1,...
    const flowmatch::io::NpyArray array = flowmatch::io::read_npy(args.at(1));
    std::vector<std::int64_t> expected;
    for (const double extent : numbers(args.at(2))) {
      expected.push_back(static_cast<std::int64_t>(extent));
    }
    return array.shape == expected ? 0 : 1;
  }
  if (mode == "trajectory-ends") {  // trajectory-ends TRAJ FIRST LAST TOL
    flowmatch::io::NpyArray trajectory = flowmatch::io::read_npy(args.at(1));
    const flowmatch::io::NpyArray first = flowmatch::io::read_npy(args.at(2));
    const flowmatch::io::NpyArray last = flowmatch::io::read_npy(args.at(3));
    const std::size_t size = first.values.size();
    flowmatch::io::NpyArray head = first, tail = last;
    head.values.assign(trajectory.values.begin(), trajectory.values.begin() + size);
    tail.values.assign(trajectory.values.end() - size, trajectory.values.end());
    const double tolerance = std::stod(args.at(4));
    return close(head, first, tolerance, "trajectory[0]") &&
                   close(tail, last, tolerance, "trajectory[-1]")
               ? 0
               : 1;
  }
  if (mode == "row") {  // row ARRAY k VECTOR TOL: row k of a [T, N] array against an [N] file
    const flowmatch::io::NpyArray rows = flowmatch::io::read_npy(args.at(1));
    flowmatch::io::NpyArray expected = flowmatch::io::read_npy(args.at(3));
    const std::size_t size = expected.values.size();
    const std::size_t row = std::stoul(args.at(2));
    flowmatch::io::NpyArray selected = expected;
    selected.values.assign(rows.values.begin() + static_cast<std::ptrdiff_t>(row * size),
                           rows.values.begin() + static_cast<std::ptrdiff_t>((row + 1) * size));
    return close(selected, expected, std::stod(args.at(4)), "row " + args[2]) ? 0 : 1;
  }
  if (mode == "trajectory-row") {  // trajectory-row TRAJ k OUT: the [N, d] state of row k
    const flowmatch::io::NpyArray trajectory = flowmatch::io::read_npy(args.at(1));
    const std::size_t row = std::stoul(args.at(2));
    const std::size_t size =
        static_cast<std::size_t>(trajectory.shape.at(1) * trajectory.shape.at(2));
    flowmatch::io::NpyArray state;
    state.shape = {trajectory.shape[1], trajectory.shape[2]};
    state.values.assign(trajectory.values.begin() + static_cast<std::ptrdiff_t>(row * size),
                        trajectory.values.begin() + static_cast<std::ptrdiff_t>((row + 1) * size));
    flowmatch::io::write_npy(args.at(3), state);
    return 0;
  }
  if (mode == "one-hot") {  // one-hot LABELS K OUT: [N, K] float rows, zeros for label -1
    const std::vector<std::int64_t> labels = flowmatch::io::load_npy_labels(args.at(1));
    Matrix<double> one_hot =
        Matrix<double>::Zero(std::stol(args.at(2)), static_cast<Index>(labels.size()));
    for (std::size_t n = 0; n < labels.size(); ++n) {
      if (labels[n] >= 0) one_hot(labels[n], static_cast<Index>(n)) = 1;
    }
    flowmatch::io::save_npy(args.at(3), one_hot);
    return 0;
  }
  if (mode == "shift") {  // shift IN OUT i h: the points with coordinate i moved by h
    Matrix<double> points = flowmatch::io::load_npy_batch<double>(args.at(1));
    points.row(std::stol(args.at(3))).array() += std::stod(args.at(4));
    flowmatch::io::save_npy(args.at(2), points);
    return 0;
  }
  // central-difference SCORE i PLUS MINUS h TOL: component i of the score against
  // (log p(x + h e_i) − log p(x − h e_i))/(2h).
  if (mode == "central-difference") {
    const Matrix<double> score = flowmatch::io::load_npy_batch<double>(args.at(1));
    const Vector<double> plus = flowmatch::io::load_npy_vector<double>(args.at(3));
    const Vector<double> minus = flowmatch::io::load_npy_vector<double>(args.at(4));
    const double step = std::stod(args.at(5));
    const Vector<double> component = score.row(std::stol(args.at(2))).transpose();
    const double largest = (component - (plus - minus) / (2 * step)).cwiseAbs().maxCoeff();
    std::cout << "score component " << args[2] << " vs central differences: largest difference "
              << largest << "\n";
    return largest <= std::stod(args.at(6)) ? 0 : 1;
  }
  // Closed-form checks: <mode> MODEL INPUT OUTPUT TOL [t] [LABELS GUIDANCE|-], where "flow"
  // takes two times (from, to) and "transformed-sample" a scheduler (vp or linear-vp) instead.
  const flowmatch::Mlp<double> model = flowmatch::io::load_mlp<double>(args.at(1));
  const LinearFlow linear(model);
  const Matrix<double> input = flowmatch::io::load_npy_batch<double>(args.at(2));
  const std::string& output = args.at(3);
  const double tolerance = std::stod(args.at(4));
  if (mode == "transformed-sample") {
    const std::string& scheduler = args.at(5);
    if (scheduler != "vp" && scheduler != "linear-vp") {
      throw std::invalid_argument("transformed-sample: expected vp or linear-vp");
    }
    const double alpha = scheduler == "vp" ? std::exp(-(0.1 + 20.0) / 4) : 0.0;
    const double sigma = std::sqrt(1 - alpha * alpha);
    const double start = (alpha / sigma) / (1 + alpha / sigma);
    const double scale = sigma / (1 - start);
    const Matrix<double> no_condition = linear.biases(input.cols(), {}, {});
    return close_to(output, linear.flow(input / scale, start, 1, no_condition), tolerance) ? 0 : 1;
  }
  const bool timed = mode == "exact-score" || mode == "approx-score" || mode == "flow";
  const double t = timed ? std::stod(args.at(5)) : 0;
  const double flow_end = mode == "flow" ? std::stod(args.at(6)) : 0;
  const std::size_t label_argument = mode == "flow" ? 7 : timed ? 6 : 5;
  std::vector<std::int64_t> labels;
  Vector<double> guidance = Vector<double>::Ones(input.cols());
  if (args.size() > label_argument) {
    labels = flowmatch::io::load_npy_labels(args[label_argument]);
    if (args.size() > label_argument + 1) {
      const std::string& weights = args[label_argument + 1];
      guidance = weights.ends_with(".npy")
                     ? flowmatch::io::load_npy_vector<double>(weights)
                     : Vector<double>::Constant(input.cols(), std::stod(weights));
    }
  }
  const Matrix<double> beta = linear.biases(input.cols(), labels, guidance);
  if (mode == "sample") return close_to(output, linear.flow(input, 0, 1, beta), tolerance) ? 0 : 1;
  if (mode == "encode") return close_to(output, linear.flow(input, 1, 0, beta), tolerance) ? 0 : 1;
  if (mode == "flow")
    return close_to(output, linear.flow(input, t, flow_end, beta), tolerance) ? 0 : 1;
  if (mode == "loglik")
    return close_to(output, linear.log_likelihood(input, beta), tolerance) ? 0 : 1;
  if (mode == "exact-score") {
    return close_to(output, linear.exact_score(input, t, beta), tolerance) ? 0 : 1;
  }
  if (mode == "approx-score") {
    return close_to(output, linear.condot_velocity_score(input, t, beta), tolerance) ? 0 : 1;
  }
  throw std::invalid_argument("unknown mode " + mode);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const std::exception& error) {
    std::cerr << "cli_check: " << error.what() << "\n";
    return EXIT_FAILURE;
  }
}
