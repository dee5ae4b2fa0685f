// Riemannian flow matching on the sphere S² and on the torus T².
//
// On S² the data are a mixture of three von Mises–Fisher distributions, drawn exactly by
// Wood's algorithm; on T² a mixture of wrapped normals. Each is learned by an Mlp trained on the
// Riemannian flow-matching loss (CondOT geodesic path from the uniform base, predictions
// projected onto the tangent spaces), and the program prints the test negative log-likelihood
// of the model (log_likelihood_on_manifold, RK4) beside that of the true density.
//
// T² is represented as S¹ × S¹, two unit circles in R⁴ (a Product of spheres), so that the
// network sees a point through continuous coordinates: a field of the raw angles would jump
// where an angle wraps from 2π to 0. The flat metric and the volume dθ₁dθ₂ are the same, so
// the densities agree with those of the angles.
//
// Pictures (longitude–latitude maps of S², the square [−π, π)² for T²): data next to samples,
// and the true log-density next to the learned one.
//
// Usage: manifold_sphere_torus [output directory (default manifold_out)] [training steps
// (default 3000)]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "flowmatch/manifold/geodesic_path.hpp"
#include "flowmatch/manifold/integrate.hpp"
#include "flowmatch/manifold/log_likelihood.hpp"
#include "flowmatch/manifold/product.hpp"
#include "flowmatch/manifold/sphere.hpp"
#include "flowmatch/manifold/training.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/nn/mlp_workspace.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/train/adam.hpp"
#include "flowmatch/train/parameters.hpp"
#include "support/plot.hpp"

namespace {

using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::Vector;
constexpr double pi = std::numbers::pi;

/// log(Σ exp(values)) without overflow.
double log_sum_exp(const std::vector<double>& values) {
  const double largest = *std::max_element(values.begin(), values.end());
  double sum = 0;
  for (const double value : values) sum += std::exp(value - largest);
  return largest + std::log(sum);
}

/// An equal-weight mixture of von Mises–Fisher distributions on S² with concentration κ:
/// p(x) = (1/K)·Σ_k C(κ)·exp(κ⟨μ_k, x⟩), C(κ) = κ/(4π sinh κ).
struct VonMisesFisherMixture {
  std::vector<Eigen::Vector3d> means;
  double concentration;

  /// Wood's algorithm in R^p, p = 3: with b = (−2κ + √(4κ² + (p−1)²))/(p−1), x₀ = (1−b)/(1+b)
  /// and c = κx₀ + (p−1)·log(1 − x₀²), draw z ~ Beta((p−1)/2, (p−1)/2), u ~ U(0, 1) and
  /// w = (1 − (1+b)z)/(1 − (1−b)z) until κw + (p−1)·log(1 − x₀w) − c ≥ log u; then
  /// x = w·μ + √(1 − w²)·v with v uniform among the unit vectors orthogonal to μ.
  Eigen::Vector3d draw(const Eigen::Vector3d& mean, std::mt19937_64& generator) const {
    const double kappa = concentration, p1 = 2;  // p − 1
    const double b = (-2 * kappa + std::sqrt(4 * kappa * kappa + p1 * p1)) / p1;
    const double x0 = (1 - b) / (1 + b);
    const double c = kappa * x0 + p1 * std::log(1 - x0 * x0);
    std::gamma_distribution<double> gamma(p1 / 2, 1.0);
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    double w = 0;
    while (true) {
      const double g1 = gamma(generator), g2 = gamma(generator);
      const double z = g1 / (g1 + g2);
      w = (1 - (1 + b) * z) / (1 - (1 - b) * z);
      if (kappa * w + p1 * std::log(1 - x0 * w) - c >= std::log(uniform(generator))) break;
    }
    std::normal_distribution<double> normal;
    Eigen::Vector3d direction;
    do {
      direction << normal(generator), normal(generator), normal(generator);
      direction -= direction.dot(mean) * mean;
    } while (direction.norm() < 1e-12);
    return w * mean + std::sqrt(std::max(0.0, 1 - w * w)) * direction.normalized();
  }

  [[nodiscard]] Matrix<double> sample(Index count, std::mt19937_64& generator) const {
    Matrix<double> points(3, count);
    std::uniform_int_distribution<std::size_t> component(0, means.size() - 1);
    for (Index n = 0; n < count; ++n) {
      const Eigen::Vector3d point = draw(means[component(generator)], generator);
      // Entry by entry: GCC 12 misreads a vectorised copy of a 3-vector as out of bounds.
      for (Index i = 0; i < 3; ++i) points(i, n) = point(i);
    }
    return points;
  }

  /// log p(x); log C(κ) = log κ − log 2π − κ − log(1 − e^{−2κ}) avoids sinh's overflow.
  [[nodiscard]] Vector<double> log_density(const Matrix<double>& points) const {
    const double kappa = concentration;
    const double log_normaliser =
        std::log(kappa) - std::log(2 * pi) - kappa - std::log1p(-std::exp(-2 * kappa));
    Vector<double> out(points.cols());
    std::vector<double> terms(means.size());
    for (Index n = 0; n < points.cols(); ++n) {
      for (std::size_t k = 0; k < means.size(); ++k) {
        terms[k] = log_normaliser + kappa * means[k].dot(points.col(n));
      }
      out(n) = log_sum_exp(terms) - std::log(double(means.size()));
    }
    return out;
  }
};

/// An equal-weight mixture of isotropic wrapped normals on T² (angles θ ∈ [−π, π)²):
/// p(θ) = (1/K)·Σ_k Σ_{m ∈ Z²} N(θ + 2πm; μ_k, s²I), the sum over |m_i| ≤ 2 (the rest is
/// below e^{−(3π)²/2s²} for s ≤ 1).
struct WrappedNormalMixture {
  std::vector<Eigen::Vector2d> means;
  double deviation;

  /// Angles [−π, π)², 2×count.
  [[nodiscard]] Matrix<double> sample(Index count, std::mt19937_64& generator) const {
    std::uniform_int_distribution<std::size_t> component(0, means.size() - 1);
    std::normal_distribution<double> normal(0.0, deviation);
    Matrix<double> angles(2, count);
    for (Index n = 0; n < count; ++n) {
      const Eigen::Vector2d& mean = means[component(generator)];
      for (Index i = 0; i < 2; ++i) {
        const double angle = mean(i) + normal(generator);
        angles(i, n) = angle - 2 * pi * std::floor((angle + pi) / (2 * pi));
      }
    }
    return angles;
  }

  [[nodiscard]] Vector<double> log_density(const Matrix<double>& angles) const {
    const double variance = deviation * deviation;
    Vector<double> out(angles.cols());
    std::vector<double> terms;
    for (Index n = 0; n < angles.cols(); ++n) {
      terms.clear();
      for (const Eigen::Vector2d& mean : means) {
        for (int m1 = -2; m1 <= 2; ++m1) {
          for (int m2 = -2; m2 <= 2; ++m2) {
            const double d1 = angles(0, n) + 2 * pi * m1 - mean(0);
            const double d2 = angles(1, n) + 2 * pi * m2 - mean(1);
            terms.push_back(-(d1 * d1 + d2 * d2) / (2 * variance) - std::log(2 * pi * variance));
          }
        }
      }
      out(n) = log_sum_exp(terms) - std::log(double(means.size()));
    }
    return out;
  }
};

/// Angles (2×N) as points of S¹ × S¹ ⊂ R⁴: (cos θ₁, sin θ₁, cos θ₂, sin θ₂).
Matrix<double> circles_from_angles(const Matrix<double>& angles) {
  Matrix<double> points(4, angles.cols());
  points.row(0) = angles.row(0).array().cos();
  points.row(1) = angles.row(0).array().sin();
  points.row(2) = angles.row(1).array().cos();
  points.row(3) = angles.row(1).array().sin();
  return points;
}

/// The angles in [−π, π)² of points of S¹ × S¹ (atan2 gives (−π, π]; π itself maps to −π).
Matrix<double> angles_from_circles(const Matrix<double>& points) {
  Matrix<double> angles(2, points.cols());
  for (Index n = 0; n < points.cols(); ++n) {
    for (Index i = 0; i < 2; ++i) {
      const double angle = std::atan2(points(2 * i + 1, n), points(2 * i, n));
      angles(i, n) = angle >= pi ? angle - 2 * pi : angle;
    }
  }
  return angles;
}

/// Longitude and latitude (2×N) of unit vectors of R³.
Matrix<double> longitude_latitude(const Matrix<double>& points) {
  Matrix<double> map(2, points.cols());
  for (Index n = 0; n < points.cols(); ++n) {
    map(0, n) = std::atan2(points(1, n), points(0, n));
    map(1, n) = std::asin(std::clamp(points(2, n), -1.0, 1.0));
  }
  return map;
}

/// Unit vectors at longitude λ and latitude φ.
Matrix<double> from_longitude_latitude(const Matrix<double>& map) {
  Matrix<double> points(3, map.cols());
  points.row(0) = map.row(1).array().cos() * map.row(0).array().cos();
  points.row(1) = map.row(1).array().cos() * map.row(0).array().sin();
  points.row(2) = map.row(1).array().sin();
  return points;
}

/// The points of a columns × rows grid over x_range × y_range (2×(rows·columns), row-major
/// from the bottom left: entry (i, j) of a heat map is column i·columns + j).
Matrix<double> grid(plot::Range x_range, plot::Range y_range, Index columns, Index rows) {
  Matrix<double> points(2, rows * columns);
  for (Index i = 0; i < rows; ++i) {
    for (Index j = 0; j < columns; ++j) {
      points.col(i * columns + j) << x_range.low + (x_range.high - x_range.low) * double(j) /
                                                       double(columns - 1),
          y_range.low + (y_range.high - y_range.low) * double(i) / double(rows - 1);
    }
  }
  return points;
}

/// Trains @p model on @p data (points of @p manifold) with Adam on the Riemannian
/// flow-matching loss, batches drawn with replacement; prints the loss now and then.
template <class M>
void train(const M& manifold, flowmatch::Mlp<double>& model, const Matrix<double>& data, int steps,
           std::mt19937_64& generator) {
  const flowmatch::GeodesicPath path(manifold, flowmatch::CondOT<double>());
  flowmatch::AdamOptions<double> options;
  flowmatch::Adam<double> adam(flowmatch::parameter_count(model), options);
  flowmatch::MlpWorkspace<double> workspace;
  flowmatch::MlpGradient<double> gradient = model.zero_gradient();
  std::uniform_int_distribution<Index> pick(0, data.cols() - 1);
  Matrix<double> x1(data.rows(), 256);
  for (int step = 1; step <= steps; ++step) {
    for (Index col = 0; col < x1.cols(); ++col) x1.col(col) = data.col(pick(generator));
    const auto batch = flowmatch::riemannian_flow_matching_batch(path, x1, generator);
    const double loss =
        flowmatch::mlp_riemannian_flow_matching_loss(manifold, model, workspace, batch, gradient);
    adam.step(model.parameters(), gradient.flat(), 2e-3);
    if (step % 1000 == 0 || step == steps) std::printf("  step %d  loss %.4f\n", step, loss);
  }
}

/// Samples of @p model on @p manifold from @p count base draws (RK4, h = 0.01).
template <class M>
Matrix<double> sample(const M& manifold, const flowmatch::Mlp<double>& model, Index count,
                      std::mt19937_64& generator) {
  flowmatch::ManifoldSolverOptions<double> options;
  options.step_size = 0.01;
  const Matrix<double> noise = flowmatch::sample_base(manifold, count, generator);
  return flowmatch::integrate_on_manifold(manifold, model, noise, {0.0, 1.0}, options).state;
}

/// log p of @p model's flow at @p points (RK4, h = 0.02, exact divergence).
template <class M>
Vector<double> model_log_density(const M& manifold, const flowmatch::Mlp<double>& model,
                                 const Matrix<double>& points) {
  flowmatch::ManifoldSolverOptions<double> options;
  options.step_size = 0.02;
  return flowmatch::log_likelihood_on_manifold(manifold, model, points, options).log_prob;
}

/// Two scatter panels over x_range × y_range: @p data and @p samples (2×N each).
void data_and_samples(const std::string& path, const Matrix<double>& data,
                      const Matrix<double>& samples, plot::Range x_range, plot::Range y_range,
                      int panel_height, const std::string& x_name, const std::string& y_name) {
  plot::Canvas canvas(1080, panel_height + 180);
  plot::Panel left(canvas, {90, 90, 440, panel_height}, x_range, y_range);
  plot::Panel right(canvas, {610, 90, 440, panel_height}, x_range, y_range);
  left.axes("data (" + std::to_string(data.cols()) + " test points)", x_name, y_name);
  left.scatter(data, plot::blue);
  right.axes("model samples (" + std::to_string(samples.cols()) + ")", x_name, y_name);
  right.scatter(samples, plot::orange);
  canvas.save_png(path);
}

/// Two heat maps with one colour scale: the true log-density and the model's (rows × columns
/// each, from grid()).
void true_and_learned(const std::string& path, const Matrix<double>& truth,
                      const Matrix<double>& learned, plot::Range x_range, plot::Range y_range,
                      int panel_height, const std::string& x_name, const std::string& y_name) {
  plot::Canvas canvas(1180, panel_height + 180);
  const double highest = std::max(truth.maxCoeff(), learned.maxCoeff());
  const plot::Range colours{highest - 8, highest};
  const plot::ColourMap colour_map = plot::viridis();
  const auto heat = [&](int left, const Matrix<double>& values, const std::string& title) {
    plot::Panel panel(canvas, {left, 90, 440, panel_height}, x_range, y_range);
    panel.heat_map(values.cwiseMax(colours.low), colours, colour_map);
    panel.draw_frame_and_labels(title, x_name, y_name);
  };
  heat(90, truth, "true log-density");
  heat(610, learned, "learned log-density");
  plot::colour_bar(canvas, {1090, 120, 22, panel_height - 60}, colours, colour_map, "log p");
  canvas.save_png(path);
}

}  // namespace

int main(int argc, char** argv) {
  const std::filesystem::path out = argc > 1 ? argv[1] : "manifold_out";
  const int steps = argc > 2 ? std::stoi(argv[2]) : 3000;
  std::filesystem::create_directories(out);
  std::mt19937_64 generator(7);
  constexpr Index train_count = 20000, test_count = 2000;
  flowmatch::MlpConfig config;
  config.hidden = {64, 64, 64};

  // S²: three vMF components, κ = 20.
  const VonMisesFisherMixture sphere_data{
      {Eigen::Vector3d(1, 0, 0), Eigen::Vector3d(0, 1, 1).normalized(),
       Eigen::Vector3d(-1, -1, -0.5).normalized()},
      20.0};
  const flowmatch::Sphere<double> sphere(3);
  config.dim = 3;
  flowmatch::Mlp<double> sphere_model(config, generator);
  std::printf("S^2, mixture of 3 von Mises-Fisher (kappa = 20)\n");
  train(sphere, sphere_model, sphere_data.sample(train_count, generator), steps, generator);
  const Matrix<double> sphere_test = sphere_data.sample(test_count, generator);
  std::printf("  test NLL: model %.4f, true density %.4f (nats)\n",
              -model_log_density(sphere, sphere_model, sphere_test).mean(),
              -sphere_data.log_density(sphere_test).mean());
  const plot::Range longitude{-pi, pi}, latitude{-pi / 2, pi / 2};
  data_and_samples((out / "sphere_samples.png").string(), longitude_latitude(sphere_test),
                   longitude_latitude(sample(sphere, sphere_model, test_count, generator)),
                   longitude, latitude, 220, "longitude", "lat");
  const Matrix<double> sphere_grid = from_longitude_latitude(grid(longitude, latitude, 121, 61));
  true_and_learned(
      (out / "sphere_density.png").string(),
      sphere_data.log_density(sphere_grid).reshaped(121, 61).transpose(),
      model_log_density(sphere, sphere_model, sphere_grid).reshaped(121, 61).transpose(), longitude,
      latitude, 220, "longitude", "latitude");

  // T² = S¹ × S¹: three wrapped normals, s = 0.4, one across the seam at ±π.
  const WrappedNormalMixture torus_data{
      {Eigen::Vector2d(-1.5, -1.5), Eigen::Vector2d(1.0, 0.5), Eigen::Vector2d(pi - 0.2, -2.0)},
      0.4};
  const flowmatch::Product torus(flowmatch::Sphere<double>(2), flowmatch::Sphere<double>(2));
  config.dim = 4;
  flowmatch::Mlp<double> torus_model(config, generator);
  std::printf("T^2, mixture of 3 wrapped normals (s = 0.4)\n");
  train(torus, torus_model, circles_from_angles(torus_data.sample(train_count, generator)), steps,
        generator);
  const Matrix<double> torus_test = torus_data.sample(test_count, generator);
  std::printf("  test NLL: model %.4f, true density %.4f (nats)\n",
              -model_log_density(torus, torus_model, circles_from_angles(torus_test)).mean(),
              -torus_data.log_density(torus_test).mean());
  const plot::Range angle{-pi, pi};
  data_and_samples((out / "torus_samples.png").string(), torus_test,
                   angles_from_circles(sample(torus, torus_model, test_count, generator)), angle,
                   angle, 440, "angle 1", "angle 2");
  const Matrix<double> torus_grid = grid(angle, angle, 81, 81);
  true_and_learned((out / "torus_density.png").string(),
                   torus_data.log_density(torus_grid).reshaped(81, 81).transpose(),
                   model_log_density(torus, torus_model, circles_from_angles(torus_grid))
                       .reshaped(81, 81)
                       .transpose(),
                   angle, angle, 440, "angle 1", "angle 2");
  std::printf("pictures in %s\n", out.string().c_str());
  return 0;
}
