// digits_torch: an image model trained in PyTorch, run end to end from C++. The model is a
// class-conditional convolutional velocity field on scikit-learn's 8×8 handwritten digits
// (examples/digits/train_digits.py trains it with label dropout and saves it as TorchScript);
// it is loaded as a ConditionalTorchScriptField, and the program
//
//   1. samples every class at the guidance weights 0, 1, 2 and 4 from the same noise and draws
//      the samples as a PNG grid (rows: classes 0..9; column groups: test images of the class,
//      then one group per weight);
//   2. measures the test split's bits per dimension, unconditionally (the null label) and
//      conditionally on the true labels, each with the exact divergence and with Hutchinson's
//      estimator, on the same dequantised images, noise and solver;
//   3. encodes the test images to noise and decodes them back, and reports the round-trip error
//      in pixel units.
//
// Model space (the map of train_digits.py): a pixel p ∈ {0, ..., 16} is dequantised, y = p + u
// with u ~ U[0, 1), and mapped to z = 2·y/17 − 1 ∈ [−1, 1). The flow is a density over z.
//
// Bits per dimension. The dequantised density of y is p_y(y) = p_z(z)·|dz/dy|^d with
// dz/dy = 2/17 in each of the d = 64 pixels, so log p_y(y) = log p_z(z) + d·log(2/17). For the
// discrete image, log P(p) = log ∫_{[0,1)^d} p_y(p + u) du ≥ E_u[log p_y(p + u)] (Jensen), so
//   bpd = −E_u[log p_y(p + u)] / (d·ln 2) = −(E_u[log p_z(z)] + d·log(2/17)) / (d·ln 2)
// is an upper bound on the discrete model's code length, in bits per pixel; one u is drawn per
// test image (an unbiased estimate of the expectation). flowmatch::bits_per_dimension with the
// bin width Δ = 2/17 (one grey level in model units) computes exactly this.
//
// Checks (the program exits with status 1 if one fails): the exact and Hutchinson estimates of
// the mean bits per dimension agree within four standard errors of their per-image difference
// (both integrate the same trajectories, so the difference is the probes' noise alone, of mean
// zero), and the largest encode/decode round-trip error is below a tenth of a grey level.
//
// Usage: digits_torch MODEL DATA-FOLDER OUTPUT-FOLDER [options]
//   MODEL          the TorchScript file of train_digits.py (digits_model.pt)
//   DATA-FOLDER    holds test_pixels.npy (float32 [N, 64], 0..16) and test_labels.npy (int64 [N])
//   OUTPUT-FOLDER  receives digits.png, results.json and the samples (.npy)
// Options: --test-images N (default: all), --samples S per cell of the grid (default 4),
//   --steps K midpoint steps of the likelihood integration (default 20), --probes K
//   Hutchinson probes per image (default 1), --threads T LibTorch threads (default 1).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "flowmatch/guidance/classifier_free.hpp"
#include "flowmatch/interop/torch.hpp"
#include "flowmatch/io/npy.hpp"
#include "flowmatch/likelihood/bits_per_dimension.hpp"
#include "flowmatch/likelihood/conditioned_field.hpp"
#include "flowmatch/likelihood/log_likelihood.hpp"
#include "flowmatch/likelihood/standard_normal.hpp"
#include "flowmatch/solver/integrate.hpp"
#include "support/arguments.hpp"
#include "support/plot.hpp"

namespace {

using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::Vector;
using Field = flowmatch::ConditionalTorchScriptField<float>;
using Generator = std::mt19937_64;

constexpr int kSide = 8;
constexpr Index kDim = kSide * kSide;
constexpr float kLevels = 17;  // grey levels 0..16, dequantised to [0, 17)
constexpr Index kClasses = 10;
constexpr float kNullLabel = 10;          // the label of "no class" (label dropout)
constexpr float kBinWidth = 2 / kLevels;  // one grey level in model units: dz/dy = 2/17
const std::vector<float> kWeights = {0, 1, 2, 4};

struct Settings {
  std::string model, data, output;
  Index test_images = 0;  // 0: all
  Index samples = 4;
  Index steps = 20;
  Index probes = 1;
  int threads = 1;
};

Settings parse(int argc, char** argv) {
  if (argc < 4) {
    throw std::invalid_argument(
        "usage: digits_torch MODEL DATA-FOLDER OUTPUT-FOLDER [--test-images N] [--samples S] "
        "[--steps K] [--probes K] [--threads T]");
  }
  Settings settings{argv[1], argv[2], argv[3]};
  for (int i = 4; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) throw std::invalid_argument(flag + " needs a value");
    const std::int64_t value = arguments::positive_count(argv[i + 1], flag);
    if (flag == "--test-images") {
      settings.test_images = value;
    } else if (flag == "--samples") {
      settings.samples = value;
    } else if (flag == "--steps") {
      settings.steps = value;
    } else if (flag == "--probes") {
      settings.probes = value;
    } else if (flag == "--threads") {
      settings.threads = static_cast<int>(value);
    } else {
      throw std::invalid_argument("unknown option " + flag);
    }
  }
  return settings;
}

// A grey value y ∈ [0, 17) → model space z = 2·y/17 − 1.
float to_model(float y) {
  return 2 * y / kLevels - 1;
}

// Pixels (d×N, values 0..16) → model space z = 2·(p + u)/17 − 1 with u ~ U[0, 1).
Matrix<float> dequantise(const Matrix<float>& pixels, Generator& generator) {
  std::uniform_real_distribution<float> uniform(0, 1);
  return pixels.unaryExpr([&](float p) { return to_model(p + uniform(generator)); });
}

// Model space → the continuous grey scale y = (z + 1)·17/2, nominally in [0, 17).
Matrix<float> to_grey(const Matrix<float>& z) {
  return ((z.array() + 1) * (kLevels / 2)).matrix();
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The grid: rows are classes, column groups the test images of the class (if any) and the
// samples at each weight; @p groups[g] is d×(classes·S), column k·S + s for class k.
void draw_grid(const std::string& path, const std::vector<Matrix<float>>& groups,
               const std::vector<std::string>& titles, Index per_cell) {
  constexpr int scale = 4, cell = kSide * scale, gap = 2, group_gap = 14, left = 28, top = 30;
  const int group_width = int(per_cell) * (cell + gap) - gap;
  const int width = left + int(groups.size()) * (group_width + group_gap);
  const int height = top + int(kClasses) * (cell + gap) + 4;
  plot::Canvas canvas(width, height);
  for (std::size_t g = 0; g < groups.size(); ++g) {
    const int x0 = left + int(g) * (group_width + group_gap);
    canvas.centred_text(x0 + group_width / 2, 8, titles[g], plot::black);
    const Matrix<float> grey = to_grey(groups[g]);
    for (Index k = 0; k < kClasses; ++k) {
      const int y0 = top + int(k) * (cell + gap);
      if (g == 0) canvas.text(8, y0 + cell / 2 - 7, std::to_string(k), plot::black);
      for (Index s = 0; s < per_cell; ++s) {
        const int cx = x0 + int(s) * (cell + gap);
        for (int pixel = 0; pixel < kDim; ++pixel) {
          // Dark ink on white: grey level 0 is white, 17 black.
          const float ink = std::clamp(grey(pixel, k * per_cell + s) / kLevels, 0.0f, 1.0f);
          const auto level = std::uint8_t(std::lround(255 * (1 - ink)));
          canvas.fill({cx + (pixel % kSide) * scale, y0 + (pixel / kSide) * scale, scale, scale},
                      {level, level, level});
        }
      }
    }
  }
  canvas.save_png(path);
}

// Mean and standard error of the mean of @p values.
std::pair<double, double> mean_and_error(const Vector<double>& values) {
  const double mean = values.mean();
  const double variance =
      values.size() > 1 ? (values.array() - mean).square().sum() / double(values.size() - 1) : 0;
  return {mean, std::sqrt(variance / double(values.size()))};
}

struct BitsPerDimension {
  double exact = 0, hutchinson = 0;
  double difference_error = 0;  // standard error of the mean per-image difference
  double exact_seconds = 0, hutchinson_seconds = 0;
  [[nodiscard]] bool agree() const {
    return std::abs(hutchinson - exact) <= 4 * difference_error + 1e-4;
  }
};

// The test split's bits per dimension under @p field (a plain field: the null label or the true
// labels bound), exact and Hutchinson, on the same points with the same solver.
template <class Plain>
BitsPerDimension bits_per_dimension(const Plain& field, const Matrix<float>& z,
                                    const Settings& settings, Generator& generator) {
  flowmatch::SolverOptions<float> solver;
  solver.method = flowmatch::Method::midpoint;
  solver.step_size = 1.0f / float(settings.steps);
  const auto bits = [&](const auto& estimator, double& seconds) {
    const auto start = std::chrono::steady_clock::now();
    const auto result = flowmatch::log_likelihood(field, z, solver, estimator);
    seconds = seconds_since(start);
    return flowmatch::bits_per_dimension(result.log_prob, kDim, kBinWidth)
        .template cast<double>()
        .eval();
  };
  BitsPerDimension out;
  const Vector<double> exact = bits(flowmatch::ExactDivergence{}, out.exact_seconds);
  const flowmatch::Hutchinson hutchinson(settings.probes, flowmatch::ProbeDistribution::rademacher,
                                         generator);
  const Vector<double> estimated = bits(hutchinson, out.hutchinson_seconds);
  out.exact = exact.mean();
  out.hutchinson = estimated.mean();
  out.difference_error = mean_and_error(estimated - exact).second;
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Settings settings = parse(argc, argv);
    const std::filesystem::path folder = settings.output;
    std::filesystem::create_directories(folder);
    const auto file = [&](const std::string& name) { return (folder / name).string(); };
    flowmatch::set_torch_threads(settings.threads);
    // The exact divergence runs 64 passes per evaluation; keeping the heap's freed memory saves
    // faulting it in again at every pass (see retain_freed_memory).
    flowmatch::retain_freed_memory();

    const Field field(settings.model, {1, kSide, kSide}, flowmatch::TorchCondition::labels());
    Matrix<float> pixels = flowmatch::io::load_npy_batch<float>(
        (std::filesystem::path(settings.data) / "test_pixels.npy").string());
    const std::vector<std::int64_t> all_labels = flowmatch::io::load_npy_labels(
        (std::filesystem::path(settings.data) / "test_labels.npy").string());
    if (pixels.rows() != kDim || Index(all_labels.size()) != pixels.cols()) {
      throw std::invalid_argument("test_pixels.npy must be [N, 64] and test_labels.npy [N]");
    }
    const Index count =
        settings.test_images > 0 ? std::min(settings.test_images, pixels.cols()) : pixels.cols();
    pixels.conservativeResize(Eigen::NoChange, count);
    Matrix<float> labels(1, count);
    for (Index n = 0; n < count; ++n) labels(0, n) = float(all_labels[std::size_t(n)]);
    Generator generator(2024);
    std::map<std::string, double> results{{"test_images", double(count)},
                                          {"likelihood_midpoint_steps", double(settings.steps)},
                                          {"hutchinson_probes", double(settings.probes)},
                                          {"torch_threads", double(settings.threads)}};

    // 1. The grid: the same noise for every weight, S samples per class.
    const auto start_sampling = std::chrono::steady_clock::now();
    const Index per_cell = settings.samples;
    Matrix<float> classes(1, kClasses * per_cell);
    for (Index k = 0; k < kClasses; ++k) classes.middleCols(k * per_cell, per_cell).setConstant(k);
    const Matrix<float> noise =
        flowmatch::StandardNormal::sample<float>(kDim, kClasses * per_cell, generator);
    flowmatch::GuidanceOptions<float> guidance;
    guidance.null_condition = Vector<float>::Constant(1, kNullLabel);
    flowmatch::SolverOptions<float> sampler;
    sampler.rtol = sampler.atol = 1e-4f;
    std::vector<Matrix<float>> groups;
    std::vector<std::string> titles;
    Matrix<float> examples = Matrix<float>::Constant(kDim, kClasses * per_cell, -1);
    for (Index k = 0; k < kClasses; ++k) {
      Index found = 0;
      for (Index n = 0; n < count && found < per_cell; ++n) {
        // Shown at the centre of their bins, y = p + ½.
        if (labels(0, n) == float(k)) {
          examples.col(k * per_cell + found++) =
              pixels.col(n).unaryExpr([](float p) { return to_model(p + 0.5f); });
        }
      }
    }
    groups.push_back(examples);
    titles.emplace_back("test images");
    for (const float weight : kWeights) {
      const auto guided =
          flowmatch::classifier_free_guidance(std::cref(field), classes, weight, guidance);
      groups.push_back(flowmatch::sample(guided, noise, sampler).state);
      std::ostringstream title;
      title << "w = " << weight;
      titles.push_back(title.str());
      flowmatch::io::save_npy(file("samples_w" + std::to_string(int(weight)) + ".npy"),
                              to_grey(groups.back()));
    }
    draw_grid(file("digits.png"), groups, titles, per_cell);
    results["sampling_seconds"] = seconds_since(start_sampling);

    // 2. Bits per dimension of the dequantised test images.
    const Matrix<float> z = dequantise(pixels, generator);
    const flowmatch::ConditionedField<float, std::reference_wrapper<const Field>> unconditional(
        std::cref(field), Matrix<float>::Constant(1, count, kNullLabel));
    const flowmatch::ConditionedField<float, std::reference_wrapper<const Field>> conditional(
        std::cref(field), labels);
    bool passed = true;
    std::cout << std::fixed << std::setprecision(4) << count << " test images, midpoint with "
              << settings.steps << " steps, Hutchinson with " << settings.probes
              << " Rademacher probe(s) per image\n";
    for (const auto& [name, plain] :
         {std::pair{"unconditional", &unconditional}, std::pair{"conditional", &conditional}}) {
      const BitsPerDimension bpd = bits_per_dimension(*plain, z, settings, generator);
      std::cout << "bits/dim " << name << ": exact " << bpd.exact << " (" << std::setprecision(1)
                << bpd.exact_seconds << " s), Hutchinson " << std::setprecision(4) << bpd.hutchinson
                << " (" << std::setprecision(1) << bpd.hutchinson_seconds << " s), difference "
                << std::setprecision(4) << bpd.hutchinson - bpd.exact << " +- "
                << bpd.difference_error << (bpd.agree() ? "" : "  FAILED") << "\n";
      passed = passed && bpd.agree();
      const std::string key = std::string("bpd_") + name;
      results[key + "_exact"] = bpd.exact;
      results[key + "_hutchinson"] = bpd.hutchinson;
      results[key + "_difference_standard_error"] = bpd.difference_error;
      results[key + "_exact_seconds"] = bpd.exact_seconds;
      results[key + "_hutchinson_seconds"] = bpd.hutchinson_seconds;
    }

    // 3. Encode to noise and decode back (unconditional field, adaptive solver).
    const auto start_round_trip = std::chrono::steady_clock::now();
    flowmatch::SolverOptions<float> tight;
    tight.rtol = tight.atol = 1e-6f;
    const Matrix<float> encoded = flowmatch::encode(unconditional, z, tight).state;
    const Matrix<float> decoded = flowmatch::sample(unconditional, encoded, tight).state;
    const Matrix<float> error = (to_grey(decoded) - to_grey(z)).cwiseAbs();
    const double max_error = error.maxCoeff(), mean_error = error.mean();
    const bool round_trip_ok = max_error < 0.1;
    passed = passed && round_trip_ok;
    results["round_trip_max_error_grey_levels"] = max_error;
    results["round_trip_mean_error_grey_levels"] = mean_error;
    results["round_trip_seconds"] = seconds_since(start_round_trip);
    std::cout << std::scientific << std::setprecision(2)
              << "round trip data -> noise -> data (grey levels): max " << max_error << ", mean "
              << mean_error << (round_trip_ok ? "" : "  FAILED") << "\n";

    std::ofstream json(file("results.json"));
    json << "{\n" << std::setprecision(9);
    for (auto it = results.begin(); it != results.end(); ++it) {
      json << "  \"" << it->first << "\": " << it->second
           << (std::next(it) == results.end() ? "\n" : ",\n");
    }
    json << "}\n";
    if (!json) throw std::runtime_error("cannot write " + file("results.json"));
    std::cout << "wrote digits.png, samples_w*.npy and results.json to " << folder.string() << "\n";
    return passed ? EXIT_SUCCESS : EXIT_FAILURE;
  } catch (const std::exception& error) {
    std::cerr << "digits_torch: " << error.what() << "\n";
    return EXIT_FAILURE;
  }
}
