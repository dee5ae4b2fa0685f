// The subcommands that integrate a model's flow: sample, encode, loglik and score.
#include <cmath>
#include <cstdint>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "flowmatch/guidance/classifier_free.hpp"
#include "flowmatch/io/mlp_safetensors.hpp"
#include "flowmatch/io/npy.hpp"
#include "flowmatch/io/safetensors.hpp"
#include "flowmatch/likelihood/conditioned_field.hpp"
#include "flowmatch/likelihood/divergence.hpp"
#include "flowmatch/likelihood/log_likelihood.hpp"
#include "flowmatch/manifold/euclidean.hpp"
#include "flowmatch/manifold/integrate.hpp"
#include "flowmatch/manifold/log_likelihood.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/parallel/parallel_field.hpp"
#include "flowmatch/parallel/thread_pool.hpp"
#include "flowmatch/path/affine_path.hpp"
#include "flowmatch/path/schedule_transform.hpp"
#include "flowmatch/score/exact_score.hpp"
#include "flowmatch/score/velocity_score.hpp"
#include "flowmatch/solver/diffusion.hpp"
#include "flowmatch/solver/integrate.hpp"
#include "flowmatch/solver/sde.hpp"
#include "inputs.hpp"
#include "options.hpp"
#include "runtime_field.hpp"
#include "runtime_manifold.hpp"
#include "torchscript_model.hpp"

namespace flowmatch_cli {

namespace {

using flowmatch::Index;
using flowmatch::Matrix;
using flowmatch::Mlp;
using flowmatch::SolverStats;
using flowmatch::Vector;

/// Columns per chunk of the network's batch on the thread pool.
constexpr Index kChunkColumns = 256;

/// The network evaluated chunk by chunk on a pool of threads. Chunks do not depend on the
/// number of threads, so neither do the results.
template <class Scalar>
struct ParallelNetwork {
  ParallelNetwork(std::shared_ptr<const Mlp<Scalar>> network, int threads)
      : mlp(std::move(network)), pool(threads), field(std::cref(*mlp), pool, kChunkColumns) {}

  std::shared_ptr<const Mlp<Scalar>> mlp;
  flowmatch::ThreadPool pool;
  flowmatch::ParallelField<std::reference_wrapper<const Mlp<Scalar>>> field;
};

/// The model as a velocity field: the network on --threads threads, with its conditions bound
/// (and guided) if it is conditional.
template <class Scalar>
AnyField<Scalar> model_field(std::shared_ptr<const Mlp<Scalar>> mlp, int threads,
                             const std::optional<Matrix<Scalar>>& conditions,
                             const std::optional<Vector<Scalar>>& guidance_weights) {
  using Network = flowmatch::ParallelField<std::reference_wrapper<const Mlp<Scalar>>>;
  // Not const: the pool's threads change its state on every evaluation.
  const auto parallel = std::make_shared<ParallelNetwork<Scalar>>(std::move(mlp), threads);
  // Shares ownership of the whole ParallelNetwork, points at its field.
  const std::shared_ptr<const Network> network(parallel, &parallel->field);
  if (!conditions) return AnyField<Scalar>(std::cref(*network), network);
  if (!guidance_weights) {
    return AnyField<Scalar>(flowmatch::ConditionedField(std::cref(*network), *conditions), network);
  }
  return AnyField<Scalar>(
      flowmatch::classifier_free_guidance(std::cref(*network), *conditions, *guidance_weights),
      network);
}

/// The model of a command: a safetensors network, or a TorchScript module (--shape), whose
/// field is made once the conditions are known (command_field).
template <class Scalar>
struct CommandModel {
  std::shared_ptr<const Mlp<Scalar>> mlp;  ///< null for a TorchScript module
  std::string path;
  std::vector<std::int64_t> shape;  ///< a TorchScript module's sample shape
  Index dimension = 0;              ///< a TorchScript module's d, the product of the shape
  Index condition_rows = 0;         ///< a TorchScript module's k, from the conditions given

  [[nodiscard]] Index dim() const { return mlp ? mlp->dim() : dimension; }
  [[nodiscard]] Index cond_dim() const { return mlp ? mlp->cond_dim() : condition_rows; }
};

/// The model of --model: a TorchScript file is recognised by its content, anything else is read
/// as safetensors.
template <class Scalar>
CommandModel<Scalar> load_command_model(const ModelOptions& options,
                                        const GuidanceOptions& guidance) {
  CommandModel<Scalar> model;
  model.path = options.path;
  if (!is_torchscript_file(options.path)) {
    if (!options.shape.empty()) {
      throw std::invalid_argument("--shape applies to TorchScript models; " + options.path +
                                  " is not one");
    }
    if (guidance.null_label) {
      throw std::invalid_argument("--null-label applies to TorchScript label models; " +
                                  options.path + " is not one (its label -1 is the null label)");
    }
    model.mlp = load_model<Scalar>(options.path, options.activation);
    return model;
  }
#ifdef FLOWMATCH_CLI_WITH_TORCH
  if (options.shape.empty()) {
    throw std::invalid_argument("the TorchScript model " + options.path +
                                " needs --shape, the shape of one sample (e.g. --shape 1,8,8)");
  }
  if (options.activation) {
    throw std::invalid_argument(
        "--activation applies to safetensors models, not to the "
        "TorchScript model " +
        options.path);
  }
  model.shape = options.shape;
  model.dimension = 1;
  for (const std::int64_t extent : options.shape) model.dimension *= extent;
  return model;
#else
  throw std::invalid_argument(options.path +
                              " is a TorchScript model; this build of flowmatch has no LibTorch "
                              "(install libtorch-dev and configure again)");
#endif
}

/// The field of @p model for @p samples samples with the conditions and guidance of the command
/// line; LibTorch or the network on --threads threads.
template <class Scalar>
AnyField<Scalar> command_field(CommandModel<Scalar>& model, const ConditionOptions& conditions,
                               const GuidanceOptions& guidance, int threads, Index samples) {
  if (model.mlp) {
    return model_field<Scalar>(model.mlp, threads,
                               load_conditions<Scalar>(conditions, samples, *model.mlp),
                               load_guidance<Scalar>(guidance, samples, *model.mlp));
  }
#ifdef FLOWMATCH_CLI_WITH_TORCH
  // The module receives --cond as float [N, k] and --labels as int64 [N]; label -1 stands for
  // the --null-label.
  TorchScriptConditions kind = TorchScriptConditions::none;
  std::optional<Matrix<Scalar>> bound;
  if (!conditions.cond.empty()) {
    kind = TorchScriptConditions::vectors;
    bound = read_conditions<Scalar>(conditions, samples);
  } else if (!conditions.labels.empty()) {
    kind = TorchScriptConditions::labels;
    const std::vector<std::int64_t> labels = flowmatch::io::load_npy_labels(conditions.labels);
    if (static_cast<Index>(labels.size()) != samples) {
      throw std::invalid_argument("--labels " + conditions.labels + " has " +
                                  std::to_string(labels.size()) + " entries, expected " +
                                  std::to_string(samples) + " (one per sample)");
    }
    bound = Matrix<Scalar>(1, samples);
    for (Index n = 0; n < samples; ++n) {
      std::int64_t label = labels[static_cast<std::size_t>(n)];
      if (label == -1 && guidance.null_label) label = *guidance.null_label;
      if (label < 0) {
        throw std::invalid_argument("--labels " + conditions.labels + ": label " +
                                    std::to_string(label) + " of sample " + std::to_string(n) +
                                    " is negative (-1 stands for --null-label when given)");
      }
      (*bound)(0, n) = static_cast<Scalar>(label);
    }
  }
  model.condition_rows = bound ? bound->rows() : 0;
  const std::optional<Vector<Scalar>> weights = load_guidance<Scalar>(guidance, samples, model);
  if (weights && kind == TorchScriptConditions::labels && !guidance.null_label) {
    throw std::invalid_argument(
        "guidance of a TorchScript label model needs --null-label K, the label the model was "
        "trained with for no condition");
  }
  return torchscript_field<Scalar>(model.path, model.shape, kind, bound, weights,
                                   guidance.null_label, threads);
#else
  throw std::logic_error("command_field: a TorchScript model in a build without LibTorch");
#endif
}

/// Whether any setting of the adaptive methods' step control is given.
bool adaptive_settings_given(const SolverCliOptions& options) {
  return options.min_step || options.max_step || options.first_step || options.force_min_step ||
         !options.controller.empty() || !options.pid_coefficients.empty();
}

/// The solver's settings from the command line over the defaults @p solver (the density
/// commands start from SolverOptions::for_density()); options that do not apply to the method
/// are errors rather than silently ignored.
template <class Scalar>
flowmatch::SolverOptions<Scalar> solver_options(const SolverCliOptions& options,
                                                flowmatch::SolverOptions<Scalar> solver = {}) {
  const std::string method = options.method.empty() ? "dopri5" : options.method;
  solver.method = flowmatch::method_from_name(method);
  const bool adaptive = flowmatch::is_adaptive(solver.method);
  if (adaptive && options.step_size) {
    throw std::invalid_argument("--step-size applies to the fixed-step methods, not to " + method +
                                " (use --rtol and --atol)");
  }
  if (!adaptive && (options.rtol || options.atol)) {
    throw std::invalid_argument("--rtol and --atol apply to the adaptive methods, not to " +
                                method + " (use --step-size)");
  }
  if (!adaptive && adaptive_settings_given(options)) {
    throw std::invalid_argument(
        "--min-step, --max-step, --first-step, --force-min-step, --controller and "
        "--pid-coefficients apply to the adaptive methods, not to " +
        method);
  }
  if (options.controller == "integral" && !options.pid_coefficients.empty()) {
    throw std::invalid_argument("--pid-coefficients applies to --controller pid");
  }
  if (options.force_min_step && !options.min_step) {
    throw std::invalid_argument("--force-min-step needs --min-step");
  }
  if (options.step_size) solver.step_size = static_cast<Scalar>(*options.step_size);
  if (options.rtol) solver.rtol = static_cast<Scalar>(*options.rtol);
  if (options.atol) solver.atol = static_cast<Scalar>(*options.atol);
  if (options.min_step) solver.min_step = static_cast<Scalar>(*options.min_step);
  if (options.max_step) solver.max_step = static_cast<Scalar>(*options.max_step);
  if (options.first_step) solver.first_step = static_cast<Scalar>(*options.first_step);
  solver.force_min_step = options.force_min_step;
  if (!options.controller.empty()) {
    solver.controller = flowmatch::controller_from_name(options.controller);
  }
  if (!options.pid_coefficients.empty()) {
    solver.pid_coefficients = flowmatch::pid_coefficients_from_name(options.pid_coefficients);
  }
  for (const double stop : options.tstops) solver.tstops.push_back(static_cast<Scalar>(stop));
  return solver;
}

/// The work of one or two integrations, as the JSON object --stats prints.
nlohmann::json stats_json(const SolverStats& stats, const SolverStats* encoding = nullptr) {
  nlohmann::json json{{"nfe", stats.nfe},           {"accepted", stats.accepted},
                      {"rejected", stats.rejected}, {"forced", stats.forced},
                      {"min_step", stats.min_step}, {"max_step", stats.max_step}};
  if (encoding != nullptr) {
    json["nfe"] = stats.nfe + encoding->nfe;
    json["accepted"] = stats.accepted + encoding->accepted;
    json["rejected"] = stats.rejected + encoding->rejected;
    json["forced"] = stats.forced + encoding->forced;
    json["encode"] = stats_json(*encoding);
  }
  return json;
}

/// The integration grid from @p start to @p end through the --times, and where in it each of
/// the --times lies (the rows of the --trajectory array).
template <class Scalar>
struct Grid {
  std::vector<Scalar> times;
  std::vector<std::size_t> reported;
};

template <class Scalar>
Grid<Scalar> grid_through(const std::vector<double>& requested, double start, double end) {
  const std::vector<double> reported = requested.empty() ? std::vector{start, end} : requested;
  const double direction = end > start ? 1 : -1;
  for (std::size_t k = 0; k < reported.size(); ++k) {
    if (!(reported[k] >= 0 && reported[k] <= 1)) {
      std::ostringstream message;
      message << "--times: " << reported[k] << " lies outside [0, 1]";
      throw std::invalid_argument(message.str());
    }
    if (k > 0 && !(direction * (reported[k] - reported[k - 1]) > 0)) {
      throw std::invalid_argument(std::string("--times must be strictly ") +
                                  (direction > 0 ? "increasing" : "decreasing") +
                                  " in the direction of integration");
    }
  }
  Grid<Scalar> grid;
  if (reported.front() != start) grid.times.push_back(static_cast<Scalar>(start));
  for (const double t : reported) {
    grid.reported.push_back(grid.times.size());
    grid.times.push_back(static_cast<Scalar>(t));
  }
  if (reported.back() != end) grid.times.push_back(static_cast<Scalar>(end));
  return grid;
}

/// An integration through the --times: its result, and with --trajectory the states at the
/// --times as the elements of a [len(times), N, d] array.
template <class Scalar>
struct TimedIntegration {
  flowmatch::SolveResult<Scalar> result;
  std::vector<std::int64_t> trajectory_shape;
  std::vector<Scalar> trajectory;
};

/// Carries a state through a grid of times: flowmatch::integrate of a field, or
/// flowmatch::sample_transformed under another scheduler.
template <class Scalar>
using GridIntegrator = std::function<flowmatch::SolveResult<Scalar>(
    const Matrix<Scalar>&, std::span<const Scalar>, const flowmatch::SolverOptions<Scalar>&)>;

/// The integration of @p field itself (referenced).
template <class Scalar>
GridIntegrator<Scalar> plain_integration(const AnyField<Scalar>& field) {
  return [&field](const Matrix<Scalar>& x, std::span<const Scalar> times,
                  const flowmatch::SolverOptions<Scalar>& solver) {
    return flowmatch::integrate(field, x, times, solver);
  };
}

/// Integrates from @p start to @p end through the --times with the settings @p solver.
template <class Scalar>
TimedIntegration<Scalar> run_through_times(const GridIntegrator<Scalar>& integrator,
                                           const Matrix<Scalar>& x, double start, double end,
                                           const SolverCliOptions& options,
                                           flowmatch::SolverOptions<Scalar> solver) {
  const Grid<Scalar> grid = grid_through<Scalar>(options.times, start, end);
  solver.return_trajectory = !options.trajectory.empty();
  TimedIntegration<Scalar> run{
      integrator(x, std::span<const Scalar>(grid.times), solver),
      {static_cast<std::int64_t>(grid.reported.size()), x.cols(), x.rows()},
      {}};
  for (const std::size_t k : grid.reported) {
    if (!solver.return_trajectory) break;
    // A d×N column-major state has the memory of an [N, d] C-order array.
    const Matrix<Scalar>& state = run.result.trajectory[k];
    run.trajectory.insert(run.trajectory.end(), state.data(), state.data() + state.size());
  }
  return run;
}

/// Integrates from @p start to @p end through the --times with the solver of the command line.
template <class Scalar>
TimedIntegration<Scalar> integrate_through_times(const GridIntegrator<Scalar>& integrator,
                                                 const Matrix<Scalar>& x, double start, double end,
                                                 const SolverCliOptions& options) {
  return run_through_times(integrator, x, start, end, options, solver_options<Scalar>(options));
}

/// Writes the states at the --times to the --trajectory file, if one is given.
template <class Scalar>
void save_trajectory(const SolverCliOptions& options, const TimedIntegration<Scalar>& run) {
  if (options.trajectory.empty()) return;
  flowmatch::io::save_npy_array<Scalar>(options.trajectory, run.trajectory_shape, run.trajectory);
}

/// Writes the final state of @p run to @p out, with --trajectory the states at the --times, and
/// with --stats the statistics.
template <class Scalar>
void save_run(const TimedIntegration<Scalar>& run, const SolverCliOptions& options,
              const std::string& out) {
  flowmatch::io::save_npy(out, run.result.state);
  save_trajectory(options, run);
  if (options.stats) std::cout << stats_json(run.result.stats).dump() << "\n";
}

/// Integrates from @p start to @p end, writes the final state to @p out and, with
/// --trajectory, the states at the --times.
template <class Scalar>
void integrate_and_save(const GridIntegrator<Scalar>& integrator, const Matrix<Scalar>& x,
                        double start, double end, const SolverCliOptions& options,
                        const std::string& out) {
  save_run(integrate_through_times(integrator, x, start, end, options), options, out);
}

/// The diffusion of --sde: constant:G, sigma:G or vanishing:G with G a number >= 0.
template <class Scalar>
flowmatch::Diffusion<Scalar> diffusion_from_text(const std::string& text) {
  const std::string expected =
      "--sde: expected constant:G, sigma:G or vanishing:G with a number G >= 0, got '" + text + "'";
  const std::size_t colon = text.find(':');
  if (colon == std::string::npos) throw std::invalid_argument(expected);
  flowmatch::Diffusion<Scalar> diffusion;
  try {
    diffusion.profile = flowmatch::diffusion_profile_from_name(text.substr(0, colon));
  } catch (const std::invalid_argument& error) {
    throw std::invalid_argument(std::string("--sde: ") + error.what());
  }
  const std::string scale = text.substr(colon + 1);
  std::size_t parsed = 0;
  double value = -1;
  try {
    value = std::stod(scale, &parsed);
  } catch (const std::exception&) {
    parsed = 0;
  }
  if (scale.empty() || parsed != scale.size() || !std::isfinite(value) || !(value >= 0)) {
    throw std::invalid_argument(expected);
  }
  diffusion.scale = static_cast<Scalar>(value);
  return diffusion;
}

/// sample --sde: the SDE with the marginals of the model's flow on its --scheduler's path,
/// through the --times, the noise seeded by --seed.
template <class Scalar>
void sample_sde_and_save(const AnyField<Scalar>& field, const Matrix<Scalar>& noise,
                         const SampleOptions& options) {
  if (!options.solver.step_size) {
    throw std::invalid_argument("--sde needs --step-size (the SDE schemes take fixed steps)");
  }
  flowmatch::SdeOptions<Scalar> sde;
  sde.method = flowmatch::sde_method_from_name(options.sde_method);
  sde.diffusion = diffusion_from_text<Scalar>(options.sde);
  sde.step_size = static_cast<Scalar>(*options.solver.step_size);
  const flowmatch::AffinePath<NamedScheduler<Scalar>> path{
      NamedScheduler<Scalar>(options.model.scheduler)};
  const GridIntegrator<Scalar> stochastic = [&](const Matrix<Scalar>& x,
                                                std::span<const Scalar> times,
                                                const flowmatch::SolverOptions<Scalar>& solver) {
    flowmatch::SdeOptions<Scalar> run = sde;
    run.return_trajectory = solver.return_trajectory;
    std::mt19937_64 generator(options.divergence.seed);
    return flowmatch::integrate_sde(field, path, x, times, run, generator);
  };
  // Only the trajectory flag of these solver options is read.
  save_run(run_through_times(stochastic, noise, 0.0, 1.0, options.solver,
                             flowmatch::SolverOptions<Scalar>{}),
           options.solver, options.out);
}

/// Calls @p run with the divergence estimator chosen by --divergence.
template <class Run>
auto with_divergence_estimator(const DivergenceOptions& options, Run&& run) {
  if (options.divergence == "exact") return run(flowmatch::ExactDivergence{});
  std::mt19937_64 generator(options.seed);
  const flowmatch::Hutchinson<std::mt19937_64> hutchinson(
      options.probes, flowmatch::ProbeDistribution::rademacher, generator);
  return run(hutchinson);
}

/// Calls @p run with the divergence chosen by --divergence for log_likelihood_on_manifold:
/// no argument for the exact divergence; for Hutchinson's, the ambient probes of the points
/// @p x, --probes per point, Rademacher entries drawn from --seed as the Euclidean estimator
/// draws them (with_divergence_estimator).
template <class Scalar, class Run>
auto with_manifold_divergence(const DivergenceOptions& options, const Matrix<Scalar>& x,
                              Run&& run) {
  if (options.divergence == "exact") return run();
  std::mt19937_64 generator(options.seed);
  const Matrix<Scalar> probes = flowmatch::draw_probes<Scalar>(
      x.rows(), x.cols(), options.probes, flowmatch::ProbeDistribution::rademacher, generator);
  return run(probes);
}

/// A log-likelihood integration from @p start to @p end through the --times (one pass: x, its
/// log-density and, with --trajectory, the states at the --times); writes the trajectory files
/// and prints the statistics. @p loglik_trajectory, if not empty, receives log p_t(x_t) at the
/// --times as a [len(times), N] float64 array.
template <class Scalar, class Compute>
flowmatch::LikelihoodResult<Scalar> likelihood_through_times(const SolverCliOptions& options,
                                                             double start, double end,
                                                             const std::string& loglik_trajectory,
                                                             Compute&& compute) {
  const Grid<Scalar> grid = grid_through<Scalar>(options.times, start, end);
  const flowmatch::LikelihoodResult<Scalar> result =
      compute(std::span<const Scalar>(grid.times),
              solver_options(options, flowmatch::SolverOptions<Scalar>::for_density()));
  const auto rows = static_cast<std::int64_t>(grid.reported.size());
  if (!options.trajectory.empty()) {
    std::vector<Scalar> states;
    for (const std::size_t k : grid.reported) {
      // A d×N column-major state has the memory of an [N, d] C-order array.
      const Matrix<Scalar>& state = result.trajectory[k];
      states.insert(states.end(), state.data(), state.data() + state.size());
    }
    const Matrix<Scalar>& last = result.trajectory.back();
    flowmatch::io::save_npy_array<Scalar>(options.trajectory, {rows, last.cols(), last.rows()},
                                          states);
  }
  if (!loglik_trajectory.empty()) {
    std::vector<double> densities;
    for (const std::size_t k : grid.reported) {
      const Vector<Scalar>& at_time = result.log_prob_trajectory[k];
      for (Index n = 0; n < at_time.size(); ++n) densities.push_back(at_time(n));
    }
    flowmatch::io::save_npy_array<double>(loglik_trajectory, {rows, result.log_prob.size()},
                                          densities);
  }
  if (options.stats) std::cout << stats_json(result.stats).dump() << "\n";
  return result;
}

/// With --trajectory, the states at the --times of an integration of x alone from @p start to
/// @p end (for the subcommands whose own integration carries more than x).
template <class Scalar>
std::optional<TimedIntegration<Scalar>> trajectory_of(const AnyField<Scalar>& field,
                                                      const Matrix<Scalar>& x, double start,
                                                      double end, const SolverCliOptions& options) {
  if (options.trajectory.empty()) return std::nullopt;
  return integrate_through_times(plain_integration(field), x, start, end, options);
}

// --- Points on a manifold (--manifold) ---------------------------------------------------------

/// The manifold of a command on the model at @p model_path (of dimension @p dimension):
/// --manifold, else the model file's metadata `manifold`, else R^d. Returns std::nullopt for R^d,
/// which the ordinary solvers integrate. A --manifold other than the file's is an error.
template <class Scalar>
std::optional<RuntimeManifold<Scalar>> manifold_for(const ManifoldCliOptions& options,
                                                    const std::string& model_path,
                                                    Index dimension) {
  // A TorchScript model records no manifold.
  const auto metadata = is_torchscript_file(model_path)
                            ? std::map<std::string, std::string>{}
                            : flowmatch::io::read_safetensors(model_path).metadata;
  const auto recorded = metadata.find(kManifoldMetadataKey);
  std::optional<RuntimeManifold<Scalar>> manifold;
  if (options.manifold) manifold.emplace(*options.manifold, dimension);
  if (recorded != metadata.end()) {
    const RuntimeManifold<Scalar> trained_on(recorded->second, dimension);
    if (manifold && manifold->name() != trained_on.name()) {
      throw std::invalid_argument("--manifold " + *options.manifold + " disagrees with the model " +
                                  model_path + ", trained on " + trained_on.name());
    }
    if (!manifold) manifold = trained_on;
  }
  if (manifold && manifold->is_euclidean()) return std::nullopt;
  return manifold;
}

/// The [N, d] points of @p path for @p model, in the library's coordinates of @p manifold (if
/// any): a point farther from it than √ε (|x| − 1 on a sphere, an angle outside [−π, π] on a
/// torus) is an error unless @p project snaps it onto the manifold.
template <class Scalar, class Model>
Matrix<Scalar> load_manifold_points(const std::string& path, const std::string& option,
                                    const Model& model,
                                    const std::optional<RuntimeManifold<Scalar>>& manifold,
                                    bool project) {
  Matrix<Scalar> points = load_points<Scalar>(path, option, model);
  if (manifold) manifold->points_to_library(points, option + " " + path, project);
  return points;
}

/// The fixed-step settings of the manifold integrators from the command line: --method euler,
/// midpoint or rk4 (default), --step-size (default 0.01) and --stepping; the adaptive methods
/// and their settings are errors.
template <class Scalar>
flowmatch::ManifoldSolverOptions<Scalar> manifold_solver_options(const SolverCliOptions& options,
                                                                 const std::string& stepping) {
  flowmatch::ManifoldSolverOptions<Scalar> solver;
  const std::string method = options.method.empty() ? "rk4" : options.method;
  if (method == "euler") {
    solver.method = flowmatch::ManifoldMethod::euler;
  } else if (method == "midpoint") {
    solver.method = flowmatch::ManifoldMethod::midpoint;
  } else if (method == "rk4") {
    solver.method = flowmatch::ManifoldMethod::rk4;
  } else {
    throw std::invalid_argument("--method " + method +
                                ": on a manifold the methods take fixed steps: euler, midpoint "
                                "or rk4 (with --step-size)");
  }
  if (options.rtol || options.atol || adaptive_settings_given(options) || !options.tstops.empty()) {
    throw std::invalid_argument(
        "--rtol, --atol, --min-step, --max-step, --first-step, --force-min-step, --controller, "
        "--pid-coefficients and --tstops do not apply on a manifold, whose methods take fixed "
        "steps (use --step-size)");
  }
  solver.step_size = static_cast<Scalar>(options.step_size.value_or(0.01));
  solver.stepping = stepping == "exponential" ? flowmatch::ManifoldStepping::exponential
                                              : flowmatch::ManifoldStepping::projection;
  return solver;
}

/// The integration of @p field on @p manifold (both referenced) with @p solver; its states are
/// returned in the command line's coordinates.
template <class Scalar>
GridIntegrator<Scalar> manifold_integration(
    const RuntimeManifold<Scalar>& manifold, const AnyField<Scalar>& field,
    const flowmatch::ManifoldSolverOptions<Scalar>& solver) {
  return [&manifold, &field, solver](const Matrix<Scalar>& x, std::span<const Scalar> times,
                                     const flowmatch::SolverOptions<Scalar>& settings) {
    flowmatch::ManifoldSolverOptions<Scalar> run = solver;
    run.return_trajectory = settings.return_trajectory;
    flowmatch::SolveResult<Scalar> result =
        flowmatch::integrate_on_manifold(manifold, field, x, times, run);
    manifold.to_command_line(result.state);
    for (Matrix<Scalar>& state : result.trajectory) manifold.to_command_line(state);
    return result;
  };
}

/// Integrates @p x on @p manifold from @p start to @p end through the --times and writes the
/// result as integrate_and_save does.
template <class Scalar>
void integrate_on_manifold_and_save(const RuntimeManifold<Scalar>& manifold,
                                    const AnyField<Scalar>& field, const Matrix<Scalar>& x,
                                    double start, double end, const SolverCliOptions& options,
                                    const std::string& stepping, const std::string& out) {
  // Only the trajectory flag of these solver options is read.
  save_run(
      run_through_times(
          manifold_integration(manifold, field, manifold_solver_options<Scalar>(options, stepping)),
          x, start, end, options, flowmatch::SolverOptions<Scalar>{}),
      options, out);
}

/// Throws std::invalid_argument naming @p option if @p given: it does not apply on a manifold.
void reject_on_manifold(bool given, const std::string& option) {
  if (given) throw std::invalid_argument(option + " is not available on a manifold");
}

/// The starting points of `sample`: --num-samples draws from the base distribution (of the
/// manifold, else N(0, I)) seeded by --seed, or the --noise file.
template <class Scalar, class Model>
Matrix<Scalar> sample_noise(const SampleOptions& options, const Model& model,
                            const std::optional<RuntimeManifold<Scalar>>& manifold) {
  if (!options.num_samples) {
    if (options.noise.empty()) throw std::invalid_argument("sample needs --noise or --num-samples");
    return load_manifold_points<Scalar>(options.noise, "--noise", model, manifold,
                                        options.manifold.project);
  }
  // A stream apart from the one --seed gives the Hutchinson probes and the --sde noise.
  std::mt19937_64 generator(options.divergence.seed ^ 0x9e3779b97f4a7c15ULL);
  if (manifold) return flowmatch::sample_base(*manifold, *options.num_samples, generator);
  return flowmatch::sample_base(flowmatch::Euclidean<Scalar>(model.dim()), *options.num_samples,
                                generator);
}

}  // namespace

template <class Scalar>
void run_sample(const SampleOptions& options) {
  CommandModel<Scalar> model = load_command_model<Scalar>(options.model, options.guidance);
  const auto manifold = manifold_for<Scalar>(options.manifold, options.model.path, model.dim());
  const Matrix<Scalar> noise = sample_noise(options, model, manifold);
  AnyField<Scalar> field = command_field(model, options.conditions, options.guidance,
                                         options.common.threads, noise.cols());
  if (options.loglik.empty() && !options.loglik_trajectory.empty()) {
    throw std::invalid_argument("--loglik-trajectory needs --loglik");
  }
  if (manifold) {
    reject_on_manifold(!options.loglik.empty(), "sample --loglik (use loglik on the samples)");
    reject_on_manifold(!options.sde.empty(), "--sde");
    reject_on_manifold(!options.transform_to.empty(), "--transform-to");
    integrate_on_manifold_and_save(*manifold, field, noise, 0.0, 1.0, options.solver,
                                   options.manifold.stepping, options.out);
    return;
  }
  if (!options.sde.empty()) {
    sample_sde_and_save(field, noise, options);
    return;
  }
  if (options.loglik.empty()) {
    if (options.transform_to.empty()) {
      integrate_and_save(plain_integration(field), noise, 0.0, 1.0, options.solver, options.out);
      return;
    }
    // Exact also where the other scheduler's field is singular at r = 1 (vp, linear-vp).
    const NamedScheduler<Scalar> from(options.model.scheduler);
    const NamedScheduler<Scalar> to(options.transform_to);
    const GridIntegrator<Scalar> transformed = [&](const Matrix<Scalar>& x,
                                                   std::span<const Scalar> times,
                                                   const flowmatch::SolverOptions<Scalar>& solver) {
      return flowmatch::sample_transformed(field, from, to, x, times, solver);
    };
    integrate_and_save(transformed, noise, 0.0, 1.0, options.solver, options.out);
    return;
  }
  if (options.transform_to == "vp" || options.transform_to == "linear-vp") {
    throw std::invalid_argument("--loglik does not combine with --transform-to " +
                                options.transform_to +
                                ", whose velocity is singular at t = 1; sample without --loglik");
  }
  if (!options.transform_to.empty()) {
    field = AnyField<Scalar>(
        flowmatch::transform_schedule(field, NamedScheduler<Scalar>(options.model.scheduler),
                                      NamedScheduler<Scalar>(options.transform_to)));
  }
  const auto result = likelihood_through_times<Scalar>(
      options.solver, 0.0, 1.0, options.loglik_trajectory, [&](auto times, const auto& solver) {
        return with_divergence_estimator(options.divergence, [&](const auto& estimator) {
          return flowmatch::sample_with_log_likelihood(field, noise, times, solver, estimator);
        });
      });
  flowmatch::io::save_npy(options.out, result.data);
  flowmatch::io::save_npy_vector<double>(options.loglik, result.log_prob.template cast<double>());
}

template <class Scalar>
void run_encode(const EncodeOptions& options) {
  CommandModel<Scalar> model = load_command_model<Scalar>(options.model, options.guidance);
  const auto manifold = manifold_for<Scalar>(options.manifold, options.model.path, model.dim());
  const Matrix<Scalar> data = load_manifold_points<Scalar>(options.data, "--data", model, manifold,
                                                           options.manifold.project);
  const AnyField<Scalar> field = command_field(model, options.conditions, options.guidance,
                                               options.common.threads, data.cols());
  if (manifold) {
    integrate_on_manifold_and_save(*manifold, field, data, 1.0, 0.0, options.solver,
                                   options.manifold.stepping, options.out);
    return;
  }
  integrate_and_save(plain_integration(field), data, 1.0, 0.0, options.solver, options.out);
}

template <class Scalar>
void run_loglik(const LoglikOptions& options) {
  CommandModel<Scalar> model = load_command_model<Scalar>(options.model, options.guidance);
  const auto manifold = manifold_for<Scalar>(options.manifold, options.model.path, model.dim());
  const Matrix<Scalar> data = load_manifold_points<Scalar>(options.data, "--data", model, manifold,
                                                           options.manifold.project);
  const AnyField<Scalar> field = command_field(model, options.conditions, options.guidance,
                                               options.common.threads, data.cols());
  if (manifold) {
    reject_on_manifold(!options.solver.times.empty() || !options.solver.trajectory.empty() ||
                           !options.loglik_trajectory.empty(),
                       "loglik --times, --trajectory or --loglik-trajectory");
    const auto solver = manifold_solver_options<Scalar>(options.solver, options.manifold.stepping);
    const auto result =
        with_manifold_divergence<Scalar>(options.divergence, data, [&](const auto&... probes) {
          return flowmatch::log_likelihood_on_manifold(*manifold, field, data, probes..., solver);
        });
    if (options.solver.stats) std::cout << stats_json(result.stats).dump() << "\n";
    flowmatch::io::save_npy_vector<double>(options.out, result.log_prob.template cast<double>());
    return;
  }
  const auto result = likelihood_through_times<Scalar>(
      options.solver, 1.0, 0.0, options.loglik_trajectory, [&](auto times, const auto& solver) {
        return with_divergence_estimator(options.divergence, [&](const auto& estimator) {
          return flowmatch::log_likelihood(field, data, times, solver, estimator);
        });
      });
  flowmatch::io::save_npy_vector<double>(options.out, result.log_prob.template cast<double>());
}

template <class Scalar>
void run_score(const ScoreOptions& options) {
  CommandModel<Scalar> model = load_command_model<Scalar>(options.model, options.guidance);
  if (manifold_for<Scalar>({}, options.model.path, model.dim())) {
    throw std::invalid_argument("score is not available for a model trained on a manifold (" +
                                options.model.path + " records one)");
  }
  const Matrix<Scalar> data = load_points<Scalar>(options.data, "--data", model);
  const AnyField<Scalar> field = command_field(model, options.conditions, options.guidance,
                                               options.common.threads, data.cols());
  const auto t = static_cast<Scalar>(options.t);
  if (options.mode == "approx") {
    if (!options.solver.times.empty() || !options.solver.trajectory.empty()) {
      throw std::invalid_argument(
          "--times and --trajectory apply to --mode exact (--mode approx does not integrate)");
    }
    const flowmatch::AffinePath<NamedScheduler<Scalar>> path{
        NamedScheduler<Scalar>(options.model.scheduler)};
    flowmatch::io::save_npy(options.out, flowmatch::velocity_score(field, path, t, data));
    if (options.solver.stats) std::cout << stats_json(SolverStats{1, 0, 0, 0, 0}).dump() << "\n";
    return;
  }
  const flowmatch::ScoreResult<Scalar> result = flowmatch::exact_score(
      field, t, data,
      solver_options(options.solver, flowmatch::SolverOptions<Scalar>::for_density()));
  // The exact score encodes the points from t to 0; --trajectory shows that path.
  const auto trajectory = trajectory_of(field, data, options.t, 0.0, options.solver);
  flowmatch::io::save_npy(options.out, result.score);
  if (trajectory) save_trajectory(options.solver, *trajectory);
  if (options.solver.stats) {
    std::cout << stats_json(result.stats, &result.encode_stats).dump() << "\n";
  }
}

template void run_sample<float>(const SampleOptions&);
template void run_sample<double>(const SampleOptions&);
template void run_encode<float>(const EncodeOptions&);
template void run_encode<double>(const EncodeOptions&);
template void run_loglik<float>(const LoglikOptions&);
template void run_loglik<double>(const LoglikOptions&);
template void run_score<float>(const ScoreOptions&);
template void run_score<double>(const ScoreOptions&);

}  // namespace flowmatch_cli
