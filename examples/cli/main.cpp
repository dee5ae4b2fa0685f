// flowmatch: the library from the shell, on .npy arrays ([N, d], one row per sample) and
// safetensors models.
//
//     flowmatch sample --model M.safetensors --noise X0.npy --out X1.npy
//     flowmatch encode --model M.safetensors --data X1.npy --out X0.npy
//     flowmatch loglik --model M.safetensors --data X.npy --out LL.npy
//     flowmatch score  --model M.safetensors --data X.npy --t 0.5 --out S.npy
//     flowmatch train  --data X.npy --out M.safetensors
//     flowmatch info   --model M.safetensors
//     flowmatch discrete train|sample|elbo ...   (token sequences, [N, L] int64 .npy)
//     flowmatch sample --model M.safetensors --manifold sphere --num-samples 100 --out X1.npy
//
// `flowmatch <subcommand> --help` lists the options. Errors print one line to stderr and exit
// with a non-zero status; output files are written only when complete.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <stdexcept>
#include <string>

#include "discrete_commands.hpp"
#include "options.hpp"
#include "validators.hpp"

namespace {

using namespace flowmatch_cli;

void add_common_options(CLI::App& command, CommonOptions& options,
                        const char* threads_help = "threads evaluating the network") {
  command.add_option("--threads", options.threads, threads_help)->check(CLI::Range(1, 1024));
  // A TorchScript model runs on LibTorch's own threads: --threads sets their number.
  command.add_option("--precision", options.precision, "float or double (default double)")
      ->check(CLI::IsMember({"float", "double"}));
}

void add_model_options(CLI::App& command, ModelOptions& options) {
  command
      .add_option("--model", options.path,
                  "the model: safetensors, or a TorchScript file (recognised by its content; "
                  "needs --shape)")
      ->required();
  command.add_option("--activation", options.activation,
                     "the activation, overriding the model file's metadata");
  command.add_option("--scheduler", options.scheduler,
                     "the path the model was trained on: condot (default), cosine, vp, "
                     "linear-vp or poly:N");
  command
      .add_option("--shape", options.shape,
                  "a TorchScript model's sample shape, e.g. 1,8,8 (x is [N, *shape])")
      ->delimiter(',')
      ->check(positive);
}

void add_condition_options(CLI::App& command, ConditionOptions& options) {
  auto* cond = command.add_option("--cond", options.cond, "conditions, [N, k] float .npy");
  auto* labels = command.add_option("--labels", options.labels,
                                    "integer labels, [N] .npy, made one-hot (-1: null condition); "
                                    "a TorchScript model receives them as int64");
  auto* classes = command.add_option("--num-classes", options.num_classes,
                                     "the number of classes K of --labels");
  classes->check(positive);
  cond->excludes(labels);
}

void add_guidance_options(CLI::App& command, GuidanceOptions& options) {
  auto* weight = command.add_option("--guidance", options.weight,
                                    "guidance weight w: (1 - w) u_null + w u_cond");
  auto* file = command.add_option("--guidance-file", options.weight_file,
                                  "one guidance weight per sample, [N] float .npy");
  weight->excludes(file);
  command
      .add_option("--null-label", options.null_label,
                  "the null label of a TorchScript label model, for guidance (and label -1)")
      ->check(CLI::NonNegativeNumber);
}

void add_solver_options(CLI::App& command, SolverCliOptions& options) {
  command.add_option("--method", options.method,
                     "euler, midpoint, heun2, heun3, rk4, rk38 (fixed step); dopri5 (default), "
                     "rkf78, tsit5 (adaptive); on a --manifold only euler, midpoint and rk4 "
                     "(default, --step-size 0.01)");
  command.add_option("--step-size", options.step_size, "largest step of a fixed-step method")
      ->check(positive);
  command
      .add_option("--rtol", options.rtol,
                  "relative tolerance of an adaptive method (default 1e-5; 1e-7 for loglik, "
                  "score and sample --loglik)")
      ->check(positive);
  command
      .add_option("--atol", options.atol,
                  "absolute tolerance of an adaptive method (default 1e-5; 1e-7 for loglik, "
                  "score and sample --loglik)")
      ->check(positive);
  command
      .add_option("--min-step", options.min_step,
                  "smallest step of an adaptive method: below it the solve fails, or, with "
                  "--force-min-step, steps at it")
      ->check(positive);
  command.add_option("--max-step", options.max_step, "largest step of an adaptive method")
      ->check(positive);
  command
      .add_option("--first-step", options.first_step,
                  "first step of an adaptive method, and after each --tstops time")
      ->check(positive);
  command.add_flag("--force-min-step", options.force_min_step,
                   "take a step of --min-step, without error control, where a smaller one is "
                   "needed (counted as forced in --stats)");
  command
      .add_option("--controller", options.controller,
                  "step-size controller of an adaptive method: pid (default) or integral")
      ->check(CLI::IsMember({"pid", "integral"}));
  command
      .add_option("--pid-coefficients", options.pid_coefficients,
                  "coefficients of --controller pid: pi34 (default), h211pi, h312pid, "
                  "kennedy-carpenter, integral")
      ->check(CLI::IsMember({"pi34", "h211pi", "h312pid", "kennedy-carpenter", "integral"}));
  command
      .add_option("--tstops", options.tstops,
                  "times t1,t2,... every method ends a step on, each side evaluated apart")
      ->delimiter(',');
  command.add_option("--times", options.times, "times t0,t1,... of the --trajectory states")
      ->delimiter(',');
  command.add_option("--trajectory", options.trajectory,
                     "write the states at --times as a [len(times), N, d] .npy");
  command.add_flag("--stats", options.stats, "print the solver's statistics as JSON to stdout");
}

void add_divergence_options(CLI::App& command, DivergenceOptions& options) {
  command.add_option("--divergence", options.divergence, "exact (default) or hutchinson")
      ->check(CLI::IsMember({"exact", "hutchinson"}));
  command.add_option("--probes", options.probes, "Hutchinson probes per sample")->check(positive);
  command.add_option(
      "--seed", options.seed,
      "seed of the Hutchinson probes (and of the --sde noise and the --num-samples draws)");
}

/// --manifold, --project and (for the commands that integrate) --stepping.
void add_manifold_options(CLI::App& command, ManifoldCliOptions& options, bool integrates = true) {
  command.add_option("--manifold", options.manifold,
                     "the manifold of the points: euclidean, sphere (unit vectors), torus (angles "
                     "in [-pi, pi)) or product:F1,F2,... of factors F[:n] (n coordinates; default "
                     "3 for sphere, 1 otherwise); default: the model file's");
  command.add_flag("--project", options.project,
                   "snap the input points onto the manifold instead of rejecting those off it "
                   "by more than sqrt(machine epsilon)");
  if (!integrates) return;
  command
      .add_option("--stepping", options.stepping,
                  "how a step on a --manifold returns to it: projection (default) or exponential")
      ->check(CLI::IsMember({"projection", "exponential"}));
}

/// --sde and --sde-method of `sample`, after the options they exclude (the ODE solver's, and
/// --loglik, --transform-to).
void add_sde_options(CLI::App& command, SampleOptions& options) {
  auto* sde = command.add_option(
      "--sde", options.sde,
      "sample by the SDE with the flow's marginals, of diffusion g: constant:G (g = G), sigma:G "
      "(g = G sigma_t) or vanishing:G (g = G sqrt(alpha_t sigma_t)); needs --step-size, noise "
      "from --seed");
  command
      .add_option("--sde-method", options.sde_method,
                  "scheme of --sde: euler-maruyama (default) or heun")
      ->check(CLI::IsMember({"euler-maruyama", "heun"}))
      ->needs(sde);
  for (const char* name : {"--method", "--rtol", "--atol", "--min-step", "--max-step",
                           "--first-step", "--force-min-step", "--controller", "--pid-coefficients",
                           "--tstops", "--loglik", "--transform-to", "--divergence", "--probes"}) {
    sde->excludes(command.get_option(name));
  }
}

CLI::App* add_sample_command(CLI::App& app, SampleOptions& options) {
  CLI::App* command = app.add_subcommand("sample", "push noise to data (t: 0 -> 1)");
  add_model_options(*command, options.model);
  auto* noise = command->add_option("--noise", options.noise, "the noise, [N, d] .npy");
  command
      ->add_option("--num-samples", options.num_samples,
                   "draw N points from the base distribution (of the --manifold) with --seed "
                   "instead of --noise")
      ->check(positive)
      ->excludes(noise);
  command->add_option("--out", options.out, "the samples, [N, d] .npy")->required();
  command->add_option("--loglik", options.loglik, "also write each sample's log-density");
  command->add_option("--loglik-trajectory", options.loglik_trajectory,
                      "with --loglik, log p_t(x_t) at the --times, [len(times), N] float64 .npy");
  command->add_option("--transform-to", options.transform_to,
                      "sample under another scheduler: cosine, vp, linear-vp or poly:N");
  add_condition_options(*command, options.conditions);
  add_guidance_options(*command, options.guidance);
  add_solver_options(*command, options.solver);
  add_divergence_options(*command, options.divergence);
  add_manifold_options(*command, options.manifold);
  add_common_options(*command, options.common);
  add_sde_options(*command, options);
  return command;
}

CLI::App* add_encode_command(CLI::App& app, EncodeOptions& options) {
  CLI::App* command = app.add_subcommand("encode", "pull data back to noise (t: 1 -> 0)");
  add_model_options(*command, options.model);
  command->add_option("--data", options.data, "the data, [N, d] .npy")->required();
  command->add_option("--out", options.out, "the noise, [N, d] .npy")->required();
  add_condition_options(*command, options.conditions);
  add_guidance_options(*command, options.guidance);
  add_solver_options(*command, options.solver);
  add_manifold_options(*command, options.manifold);
  add_common_options(*command, options.common);
  return command;
}

CLI::App* add_loglik_command(CLI::App& app, LoglikOptions& options) {
  CLI::App* command = app.add_subcommand("loglik", "log-density of data under the model");
  add_model_options(*command, options.model);
  command->add_option("--data", options.data, "the points, [N, d] .npy")->required();
  command->add_option("--out", options.out, "the log-densities, [N] float64 .npy")->required();
  command->add_option("--loglik-trajectory", options.loglik_trajectory,
                      "log p_t(x_t) at the --times, [len(times), N] float64 .npy");
  add_condition_options(*command, options.conditions);
  add_guidance_options(*command, options.guidance);
  add_solver_options(*command, options.solver);
  add_divergence_options(*command, options.divergence);
  add_manifold_options(*command, options.manifold);
  add_common_options(*command, options.common);
  return command;
}

CLI::App* add_score_command(CLI::App& app, ScoreOptions& options) {
  CLI::App* command = app.add_subcommand("score", "the score grad log p_t at time t");
  add_model_options(*command, options.model);
  command->add_option("--data", options.data, "the points, [N, d] .npy")->required();
  command->add_option("--t", options.t, "the time in [0, 1]")->required();
  command->add_option("--out", options.out, "the scores, [N, d] .npy")->required();
  command
      ->add_option("--mode", options.mode,
                   "approx (from the velocity, on --scheduler's path) or exact (the density of "
                   "the model's flow)")
      ->check(CLI::IsMember({"approx", "exact"}));
  add_condition_options(*command, options.conditions);
  add_guidance_options(*command, options.guidance);
  add_solver_options(*command, options.solver);
  add_common_options(*command, options.common);
  return command;
}

CLI::App* add_train_command(CLI::App& app, TrainOptions& options) {
  CLI::App* command = app.add_subcommand("train", "train an MLP velocity field on data");
  command->add_option("--data", options.data, "the training data, [N, d] .npy")->required();
  command->add_option("--out", options.out, "the trained model (safetensors)")->required();
  add_manifold_options(*command, options.manifold, false);
  add_condition_options(*command, options.conditions);
  command->add_option("--hidden", options.hidden, "hidden layer widths (default 128,128,128,128)")
      ->delimiter(',');
  command->add_option("--activation", options.activation, "the activation (default silu)");
  command->add_option("--steps", options.steps, "total training steps (default 1000)")
      ->check(positive);
  command->add_option("--batch", options.batch, "batch size (default 256)")->check(positive);
  command->add_option("--lr", options.lr, "Adam's learning rate (default 1e-3)")->check(positive);
  command
      ->add_option("--coupling", options.coupling,
                   "independent (I-CFM, default), ot (exact minibatch OT) or sinkhorn "
                   "(Schrodinger bridge, needs --sigma > 0)")
      ->check(CLI::IsMember({"independent", "ot", "sinkhorn"}));
  command->add_option("--sigma", options.sigma, "path smoothing sigma (default 0)")
      ->check(non_negative);
  command
      ->add_option("--sinkhorn-iterations", options.sinkhorn_iterations,
                   "largest number of Sinkhorn iterations per batch (default 1000)")
      ->check(positive);
  command
      ->add_option("--sinkhorn-tolerance", options.sinkhorn_tolerance,
                   "Sinkhorn stops at this L1 marginal error of the plan (default 1e-9 in double, "
                   "1e-6 in float)")
      ->check(non_negative);
  command
      ->add_option("--label-dropout", options.label_dropout,
                   "probability of the null condition (default 0.1)")
      ->check(CLI::Range(0.0, 1.0));
  command->add_option("--seed", options.seed, "seed of the initial weights and the batches");
  command->add_option("--resume", options.resume, "continue the run saved by --checkpoint");
  command->add_option("--checkpoint", options.checkpoint, "save the training state at the end");
  add_common_options(*command, options.common,
                     "threads computing each step's gradient (default 1; the trained model is "
                     "the same for any number)");
  return command;
}

CLI::App* add_info_command(CLI::App& app, InfoOptions& options) {
  CLI::App* command = app.add_subcommand("info", "describe a model file");
  command->add_option("--model", options.model, "the model (safetensors)")->required();
  command->add_option("--activation", options.activation, "override the file's activation");
  add_common_options(*command, options.common);
  return command;
}

/// Prints @p message to stderr as one line: "flowmatch: error: <message>".
void print_error(std::string message) {
  std::replace(message.begin(), message.end(), '\n', ' ');
  std::cerr << "flowmatch: error: " << message << "\n";
}

/// Runs the subcommand in the scalar type chosen by --precision.
template <class Options>
void run_with_precision(const Options& options, void (*as_float)(const Options&),
                        void (*as_double)(const Options&)) {
  (options.common.precision == "float" ? as_float : as_double)(options);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"flowmatch: sample, encode, score and train flow-matching models"};
  app.require_subcommand(1);
  SampleOptions sample;
  EncodeOptions encode;
  LoglikOptions loglik;
  ScoreOptions score;
  TrainOptions train;
  InfoOptions info;
  const CLI::App* sample_command = add_sample_command(app, sample);
  const CLI::App* encode_command = add_encode_command(app, encode);
  const CLI::App* loglik_command = add_loglik_command(app, loglik);
  const CLI::App* score_command = add_score_command(app, score);
  const CLI::App* train_command = add_train_command(app, train);
  const CLI::App* info_command = add_info_command(app, info);
  const auto run_discrete_command = add_discrete_commands(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& help) {
    return app.exit(help);
  } catch (const CLI::CallForAllHelp& help) {
    return app.exit(help);
  } catch (const CLI::ParseError& error) {
    print_error(error.what());
    return error.get_exit_code();
  }

  try {
    if (*sample_command) run_with_precision(sample, run_sample<float>, run_sample<double>);
    if (*encode_command) run_with_precision(encode, run_encode<float>, run_encode<double>);
    if (*loglik_command) run_with_precision(loglik, run_loglik<float>, run_loglik<double>);
    if (*score_command) run_with_precision(score, run_score<float>, run_score<double>);
    if (*train_command) run_with_precision(train, run_train<float>, run_train<double>);
    if (*info_command) run_info(info);
    run_discrete_command();
  } catch (const std::exception& error) {
    print_error(error.what());
    return EXIT_FAILURE;
  }
  return EXIT_SUCCESS;
}
