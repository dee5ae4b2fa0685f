// The settings of each subcommand of the flowmatch tool, as parsed from the command line, and
// the functions that run them (one instantiation per --precision).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace flowmatch_cli {

/// --threads and --precision, accepted by every subcommand.
struct CommonOptions {
  int threads = 1;
  std::string precision = "double";
};

/// The model file and how to read it.
struct ModelOptions {
  std::string path;
  std::optional<std::string> activation;  ///< overrides the file's metadata
  std::string scheduler = "condot";       ///< the path the model was trained on
  std::vector<std::int64_t> shape;        ///< a TorchScript model's sample shape, e.g. 1,8,8
};

/// Conditions of a conditional model: a float matrix, or integer labels made one-hot.
struct ConditionOptions {
  std::string cond;    ///< [N, k] float .npy
  std::string labels;  ///< [N] integer .npy; label -1 is the null condition (all zeros)
  std::optional<std::int64_t> num_classes;
};

/// Classifier-free guidance: one weight for all samples, or one per sample.
struct GuidanceOptions {
  std::optional<double> weight;
  std::string weight_file;                 ///< [N] float .npy
  std::optional<std::int64_t> null_label;  ///< a TorchScript label model's null label
};

/// The solver's settings, and what to report about the integration.
struct SolverCliOptions {
  std::string method;  ///< empty: dopri5, or rk4 on a manifold
  std::optional<double> step_size;
  std::optional<double> rtol;
  std::optional<double> atol;
  std::optional<double> min_step;    ///< smallest adaptive step
  std::optional<double> max_step;    ///< largest adaptive step
  std::optional<double> first_step;  ///< first adaptive step (and after each stop)
  bool force_min_step = false;       ///< take steps at min_step instead of failing
  std::vector<double> tstops;        ///< times every method ends a step on
  std::string controller;            ///< integral or pid (default: the library's)
  std::string pid_coefficients;      ///< a named coefficient set of the PID controller
  std::vector<double> times;         ///< report the states at these times
  std::string trajectory;            ///< [len(times), N, d] .npy of the states at the times
  bool stats = false;                ///< print a JSON object of the solver statistics to stdout
};

/// The manifold of the points: --manifold (default: the model file's metadata, else R^d),
/// --project and --stepping.
struct ManifoldCliOptions {
  std::optional<std::string> manifold;  ///< euclidean, sphere, torus or product:F1,F2,...
  bool project = false;                 ///< snap input points onto the manifold
  std::string stepping = "projection";  ///< how the integrators return to the manifold
};

/// The divergence estimator of the change of variables.
struct DivergenceOptions {
  std::string divergence = "exact";  ///< exact or hutchinson
  std::int64_t probes = 1;
  std::uint64_t seed = 0;
};

struct SampleOptions {
  CommonOptions common;
  ModelOptions model;
  ConditionOptions conditions;
  GuidanceOptions guidance;
  SolverCliOptions solver;
  DivergenceOptions divergence;
  ManifoldCliOptions manifold;
  std::string noise;
  std::optional<std::int64_t> num_samples;  ///< draw the noise from the base instead of --noise
  std::string out;
  std::string loglik;             ///< also write each sample's log-density here
  std::string loglik_trajectory;  ///< [len(times), N] .npy of log p_t(x_t) at the --times
  std::string transform_to;       ///< sample under this scheduler instead
  std::string sde;  ///< sample by the SDE with this diffusion: constant:G, sigma:G, ...
  std::string sde_method = "euler-maruyama";  ///< the scheme of --sde
};

struct EncodeOptions {
  CommonOptions common;
  ModelOptions model;
  ConditionOptions conditions;
  GuidanceOptions guidance;
  SolverCliOptions solver;
  ManifoldCliOptions manifold;
  std::string data;
  std::string out;
};

struct LoglikOptions {
  CommonOptions common;
  ModelOptions model;
  ConditionOptions conditions;
  GuidanceOptions guidance;
  SolverCliOptions solver;
  DivergenceOptions divergence;
  ManifoldCliOptions manifold;
  std::string data;
  std::string out;
  std::string loglik_trajectory;  ///< [len(times), N] .npy of log p_t(x_t) at the --times
};

struct ScoreOptions {
  CommonOptions common;
  ModelOptions model;
  ConditionOptions conditions;
  GuidanceOptions guidance;
  SolverCliOptions solver;
  std::string data;
  std::string out;
  double t = 0;
  std::string mode = "approx";  ///< approx (from the velocity) or exact (the model's density)
};

struct TrainOptions {
  CommonOptions common;
  ManifoldCliOptions manifold;  ///< the manifold of the data, recorded in the model file
  std::string data;
  std::string out;
  ConditionOptions conditions;
  std::vector<std::int64_t> hidden{128, 128, 128, 128};
  std::string activation = "silu";
  std::int64_t steps = 1000;  ///< total steps, counted from the start of the run
  std::int64_t batch = 256;
  double lr = 1e-3;
  std::string coupling = "independent";  ///< independent, ot or sinkhorn
  double sigma = 0;
  std::int64_t sinkhorn_iterations = 1000;   ///< the cap of --coupling sinkhorn per batch
  std::optional<double> sinkhorn_tolerance;  ///< its L1 marginal error to stop at
  double label_dropout = 0.1;
  std::uint64_t seed = 0;
  std::string resume;      ///< continue from this checkpoint
  std::string checkpoint;  ///< write the final training state here
};

struct InfoOptions {
  CommonOptions common;
  std::string model;
  std::optional<std::string> activation;
};

template <class Scalar>
void run_sample(const SampleOptions& options);
template <class Scalar>
void run_encode(const EncodeOptions& options);
template <class Scalar>
void run_loglik(const LoglikOptions& options);
template <class Scalar>
void run_score(const ScoreOptions& options);
template <class Scalar>
void run_train(const TrainOptions& options);
void run_info(const InfoOptions& options);

}  // namespace flowmatch_cli
