// The subcommands that make and describe models: train and info.
#include <cstdint>
#include <iostream>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>

#include "flowmatch/io/mlp_safetensors.hpp"
#include "flowmatch/io/npy.hpp"
#include "flowmatch/io/safetensors.hpp"
#include "flowmatch/manifold/geodesic_path.hpp"
#include "flowmatch/manifold/training.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/nn/mlp_workspace.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/train/adam.hpp"
#include "flowmatch/train/checkpoint.hpp"
#include "flowmatch/train/lr_schedule.hpp"
#include "flowmatch/train/objective.hpp"
#include "flowmatch/train/parameters.hpp"
#include "flowmatch/train/trainer.hpp"
#include "inputs.hpp"
#include "options.hpp"
#include "progress_report.hpp"
#include "runtime_manifold.hpp"

namespace flowmatch_cli {

namespace {

/// Columns per chunk of a training batch: the chunks, and so the trained model, do not depend
/// on --threads.
constexpr flowmatch::Index kGradientChunkColumns = 256;

/// The objective of --coupling with the path smoothing --sigma.
template <class Scalar>
flowmatch::FlowMatchingObjective<Scalar> objective_for(const TrainOptions& options) {
  using Objective = flowmatch::FlowMatchingObjective<Scalar>;
  const auto sigma = static_cast<Scalar>(options.sigma);
  if (options.coupling == "ot") return Objective::optimal_transport(sigma);
  if (options.coupling == "sinkhorn") {
    if (!(sigma > 0)) {
      throw std::invalid_argument(
          "--coupling sinkhorn needs --sigma > 0 (its regularisation is "
          "2 sigma^2)");
    }
    return Objective::schrodinger_bridge(sigma);
  }
  return Objective::independent(sigma);
}

/// Writes @p model to @p path; with @p manifold, its name goes into the metadata, where
/// sample, encode and loglik find it.
template <class Scalar>
void save_model(const std::string& path, const flowmatch::Mlp<Scalar>& model,
                const std::optional<std::string>& manifold) {
  flowmatch::io::SafeTensors file = flowmatch::io::mlp_to_safetensors(
      model,
      sizeof(Scalar) >= sizeof(double) ? flowmatch::io::DType::F64 : flowmatch::io::DType::F32);
  if (manifold) file.metadata[kManifoldMetadataKey] = *manifold;
  flowmatch::io::write_safetensors(path, file);
}

/// train --manifold: Adam on the Riemannian flow-matching loss of @p model projected onto the
/// tangent spaces (manifold/training.hpp), on batches of the geodesic CondOT path from the
/// manifold's base distribution to @p data (in the library's coordinates), drawn with
/// replacement. Single-threaded, unconditional, without couplings or checkpoints.
template <class Scalar>
flowmatch::Mlp<Scalar> train_on_manifold(const TrainOptions& options,
                                         const RuntimeManifold<Scalar>& manifold,
                                         const flowmatch::Matrix<Scalar>& data,
                                         flowmatch::Mlp<Scalar> model) {
  if (!options.conditions.cond.empty() || !options.conditions.labels.empty() ||
      options.coupling != "independent" || options.sigma != 0 || !options.resume.empty() ||
      !options.checkpoint.empty() || options.common.threads != 1) {
    throw std::invalid_argument(
        "train --manifold takes no --cond, --labels, --coupling, --sigma, --resume, "
        "--checkpoint or --threads");
  }
  const flowmatch::GeodesicPath path(manifold, flowmatch::CondOT<Scalar>());
  flowmatch::Adam<Scalar> adam(flowmatch::parameter_count(model));
  flowmatch::MlpWorkspace<Scalar> workspace;
  flowmatch::MlpGradient<Scalar> gradient = model.zero_gradient();
  std::mt19937_64 generator(options.seed);
  std::uniform_int_distribution<flowmatch::Index> pick(0, data.cols() - 1);
  flowmatch::Matrix<Scalar> x1(data.rows(), options.batch);
  ProgressReport report(0, options.steps);
  for (std::int64_t step = 1; step <= options.steps; ++step) {
    for (flowmatch::Index col = 0; col < x1.cols(); ++col) x1.col(col) = data.col(pick(generator));
    const auto batch = flowmatch::riemannian_flow_matching_batch(path, x1, generator);
    const Scalar loss =
        flowmatch::mlp_riemannian_flow_matching_loss(manifold, model, workspace, batch, gradient);
    adam.step(model.parameters(), gradient.flat(), static_cast<Scalar>(options.lr));
    if (step % 10 == 0 || step == options.steps) report({step, static_cast<double>(loss), 0.0});
  }
  return model;
}

}  // namespace

template <class Scalar>
void run_train(const TrainOptions& options) {
  using Trainer = flowmatch::FlowMatchingTrainer<Scalar>;
  const flowmatch::Matrix<Scalar> data = flowmatch::io::load_npy_batch<Scalar>(options.data);
  if (data.cols() == 0) throw std::invalid_argument("--data " + options.data + " holds no points");
  const auto conditions = read_conditions<Scalar>(options.conditions, data.cols());

  flowmatch::MlpConfig config;
  config.dim = data.rows();
  config.cond_dim = conditions ? conditions->rows() : 0;
  config.hidden.assign(options.hidden.begin(), options.hidden.end());
  config.activation = flowmatch::activation_from_name(options.activation);
  std::mt19937_64 initialisation(options.seed);
  flowmatch::Mlp<Scalar> model(config, initialisation);

  if (options.manifold.manifold) {
    const RuntimeManifold<Scalar> manifold(*options.manifold.manifold, data.rows());
    if (!manifold.is_euclidean()) {
      flowmatch::Matrix<Scalar> points = data;
      manifold.points_to_library(points, "--data " + options.data, options.manifold.project);
      save_model(options.out, train_on_manifold(options, manifold, points, std::move(model)),
                 manifold.name());
      return;
    }
  }

  flowmatch::FlowMatchingObjective<Scalar> objective = objective_for<Scalar>(options);
  if (conditions) objective.label_dropout = static_cast<Scalar>(options.label_dropout);
  objective.sinkhorn_max_iterations = options.sinkhorn_iterations;
  if (options.sinkhorn_tolerance) {
    objective.sinkhorn_tolerance = static_cast<Scalar>(*options.sinkhorn_tolerance);
  }
  // The couplings report on the progress line, which exists once the trainer has restored.
  ProgressReport* report_to = nullptr;
  objective.coupling_progress = [&report_to](const flowmatch::SinkhornProgress<Scalar>& progress) {
    if (report_to != nullptr) report_to->coupling(progress);
  };
  objective.coupling_not_converged =
      [&report_to, tolerance = static_cast<double>(objective.sinkhorn_tolerance)](
          const flowmatch::SinkhornResult<Scalar>& result) {
        if (report_to != nullptr) report_to->coupling_not_converged(result, tolerance);
      };
  flowmatch::TrainerOptions<Scalar> trainer_options;
  trainer_options.batch_size = options.batch;
  trainer_options.learning_rate =
      flowmatch::ConstantSchedule<Scalar>(static_cast<Scalar>(options.lr));
  trainer_options.report_every = 10;
  trainer_options.chunk_columns = kGradientChunkColumns;
  trainer_options.threads = options.common.threads;

  const auto make_trainer = [&] {
    if (conditions) {
      return Trainer(std::move(model), objective, Trainer::resample(data, *conditions),
                     trainer_options, options.seed);
    }
    return Trainer(std::move(model), objective, Trainer::resample(data), trainer_options,
                   options.seed);
  };
  Trainer trainer = make_trainer();
  if (!options.resume.empty()) trainer.restore(flowmatch::load_checkpoint<Scalar>(options.resume));
  if (trainer.step_count() >= options.steps) {
    throw std::invalid_argument(
        "--resume " + options.resume + " is at step " + std::to_string(trainer.step_count()) +
        ", --steps (the total) must be larger, got " + std::to_string(options.steps));
  }

  ProgressReport report(trainer.step_count(), options.steps);
  report_to = &report;
  trainer.train(options.steps - trainer.step_count(), std::ref(report));
  save_model(options.out, trainer.model(), options.manifold.manifold);
  if (!options.checkpoint.empty())
    flowmatch::save_checkpoint(options.checkpoint, trainer.checkpoint());
}

void run_info(const InfoOptions& options) {
  const flowmatch::io::SafeTensors file = flowmatch::io::read_safetensors(options.model);
  const bool checkpoint = file.tensors.contains("optimizer.first_moment");
  flowmatch::io::MlpLoadOptions load;
  if (options.activation) load.activation = flowmatch::activation_from_name(*options.activation);
  const flowmatch::Mlp<double> model = checkpoint
                                           ? flowmatch::load_checkpoint<double>(options.model).model
                                           : flowmatch::io::load_mlp<double>(options.model, load);
  const flowmatch::MlpConfig& config = model.config();
  std::string hidden;
  for (const flowmatch::Index width : config.hidden) {
    if (!hidden.empty()) hidden += ',';
    hidden += std::to_string(width);
  }
  const flowmatch::Index frequencies = config.time_embedding.frequencies;
  std::cout << "file: " << options.model << (checkpoint ? " (training checkpoint)" : "") << "\n"
            << "dim: " << config.dim << "\n"
            << "cond_dim: " << config.cond_dim << "\n"
            << "hidden: " << (hidden.empty() ? "none" : hidden) << "\n"
            << "activation: " << flowmatch::activation_name(config.activation) << "\n"
            << "time_embedding: "
            << (frequencies == 0
                    ? "raw"
                    : std::string("sinusoidal, ") + std::to_string(frequencies) + " frequencies")
            << "\n"
            << "parameters: " << flowmatch::parameter_count(model) << "\n";
  if (checkpoint) std::cout << "step: " << file.metadata.at("step") << "\n";
  const auto manifold = file.metadata.find(kManifoldMetadataKey);
  if (manifold != file.metadata.end()) std::cout << "manifold: " << manifold->second << "\n";
}

template void run_train<float>(const TrainOptions&);
template void run_train<double>(const TrainOptions&);

}  // namespace flowmatch_cli
