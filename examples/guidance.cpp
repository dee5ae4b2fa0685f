// guidance: class-conditional sampling with classifier-free guidance on a 2-D mixture of three
// classes. The conditional field of class k is the exact velocity of the path to component k;
// the null condition (all zeros) gives the exact velocity of the whole mixture. Each class is
// sampled at several guidance weights; the samples go to <folder>/class<k>_w<weight>.npy and a
// summary (class means and their distance to the nearest other class) is printed.
//
// Usage: guidance [output-folder] [samples-per-run]      (defaults: out 1000)
#include <array>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "flowmatch/guidance/classifier_free.hpp"
#include "flowmatch/io/npy.hpp"
#include "flowmatch/likelihood/standard_normal.hpp"
#include "flowmatch/oracle/gaussian_mixture_path.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/solver/integrate.hpp"

namespace {

using flowmatch::ConstMatrixRef;
using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::MatrixRef;
using flowmatch::Vector;
using Path = flowmatch::GaussianMixturePath<flowmatch::CondOT<double>>;

constexpr Index kClasses = 3;

Matrix<double> class_means() {
  Matrix<double> means(2, kClasses);
  means << -2.0, 2.0, 0.0,  //
      0.0, 0.0, 2.5;
  return means;
}

// u_t(x | c) with c a one-hot column over the classes, or all zeros for "unconditional".
class ClassConditionalField {
 public:
  ClassConditionalField()
      : mixture_(flowmatch::GaussianMixture<double>::with_diagonal_covariances(
            Vector<double>::Ones(kClasses), class_means(),
            Matrix<double>::Constant(2, kClasses, 0.6))) {
    for (Index k = 0; k < kClasses; ++k) {
      classes_.emplace_back(flowmatch::GaussianMixture<double>::with_diagonal_covariances(
          Vector<double>::Ones(1), class_means().col(k), Matrix<double>::Constant(2, 1, 0.6)));
    }
  }

  void operator()(double t, const ConstMatrixRef<double>& x, const ConstMatrixRef<double>& c,
                  MatrixRef<double> out) const {
    flowmatch::evaluate_velocity<double>(mixture_, t, x, out);
    for (Index k = 0; k < kClasses; ++k) {
      const Matrix<double> velocity =
          flowmatch::evaluate_velocity<double>(classes_[static_cast<std::size_t>(k)], t, x);
      for (Index col = 0; col < x.cols(); ++col) {
        if (c(k, col) == 1.0) out.col(col) = velocity.col(col);
      }
    }
  }

 private:
  Path mixture_;
  std::vector<Path> classes_;
};

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::filesystem::path folder = argc > 1 ? argv[1] : "out";
    const Index samples = argc > 2 ? std::stol(argv[2]) : 1000;
    if (samples < 1) throw std::invalid_argument("samples-per-run must be at least 1");
    std::filesystem::create_directories(folder);

    const ClassConditionalField field;
    std::mt19937_64 generator(7);
    const Matrix<double> noise = flowmatch::StandardNormal::sample(2, samples, generator);

    flowmatch::SolverOptions<double> options;
    options.rtol = options.atol = 1e-6;
    const Matrix<double> means = class_means();
    std::cout << std::fixed << std::setprecision(3);
    for (Index k = 0; k < kClasses; ++k) {
      const Matrix<double> labels =
          Matrix<double>::Identity(kClasses, kClasses).col(k).replicate(1, samples);
      for (const double weight : {0.0, 1.0, 2.0, 4.0}) {
        const auto guided =
            flowmatch::classifier_free_guidance<double>(std::cref(field), labels, weight);
        const Matrix<double> result = flowmatch::sample(guided, noise, options).state;
        const Vector<double> mean = result.rowwise().mean();
        double nearest_other = std::numeric_limits<double>::infinity();
        for (Index other = 0; other < kClasses; ++other) {
          if (other != k) nearest_other = std::min(nearest_other, (mean - means.col(other)).norm());
        }
        std::ostringstream name;
        name << "class" << k << "_w" << weight << ".npy";
        flowmatch::io::save_npy((folder / name.str()).string(), result);
        std::cout << "class " << k << ", w = " << weight << ": mean (" << mean.transpose()
                  << "), distance to the nearest other class mean " << nearest_other << "\n";
      }
    }
    std::cout << "samples written to " << folder.string() << "\n";
    return EXIT_SUCCESS;
  } catch (const std::exception& error) {
    std::cerr << "guidance: " << error.what() << "\n";
    return EXIT_FAILURE;
  }
}
