// discrete train|sample|elbo: discrete flow matching on integer token files. A token file is an
// [N, L] integer .npy (N sequences of L tokens), read as the L×N TokenMatrix
// (discrete/tokens.hpp). The model file is the denoiser's Mlp body in safetensors, with the
// metadata keys of kDiscreteKeys, so that sample and elbo need no repeated options. A model
// trained with --labels is conditional (its body reads the one-hot label, the last class being
// the null label); `discrete sample --label c --guidance w` samples it with predictor-free
// guidance (discrete/guidance.hpp), and without --label it samples the unconditional model.
#include "discrete_commands.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "flowmatch/discrete/carry_over.hpp"
#include "flowmatch/discrete/conditional_denoiser.hpp"
#include "flowmatch/discrete/elbo.hpp"
#include "flowmatch/discrete/guidance.hpp"
#include "flowmatch/discrete/mixture_path.hpp"
#include "flowmatch/discrete/mlp_denoiser.hpp"
#include "flowmatch/discrete/sampler.hpp"
#include "flowmatch/discrete/source.hpp"
#include "flowmatch/discrete/tokens.hpp"
#include "flowmatch/discrete/training.hpp"
#include "flowmatch/io/mlp_safetensors.hpp"
#include "flowmatch/io/npy.hpp"
#include "flowmatch/io/safetensors.hpp"
#include "flowmatch/scheduler/condot.hpp"
#include "flowmatch/scheduler/convex_cosine.hpp"
#include "flowmatch/scheduler/polynomial.hpp"
#include "flowmatch/train/lr_schedule.hpp"
#include "progress_report.hpp"
#include "validators.hpp"

namespace flowmatch_cli {

namespace {

using flowmatch::Index;
using flowmatch::TokenMatrix;

/// The metadata keys of a discrete model file: the data vocabulary K, the sequence length L,
/// the source (mask or uniform) and the scheduler of the mixture path.
constexpr const char* kVocabularyKey = "discrete_vocabulary";
constexpr const char* kLengthKey = "discrete_length";
constexpr const char* kSourceKey = "discrete_source";
constexpr const char* kSchedulerKey = "discrete_scheduler";

struct DiscreteTrainOptions {
  std::string data;
  std::string out;
  std::int64_t vocabulary = 0;
  std::string source = "mask";
  std::string scheduler = "condot";
  std::vector<std::int64_t> hidden{128, 128};
  std::string activation = "silu";
  std::int64_t time_frequencies = 0;
  std::int64_t steps = 1000;
  std::int64_t batch = 256;
  double lr = 1e-3;
  std::string loss = "generalized-kl";
  double ema = 0.999;
  std::uint64_t seed = 0;
  std::string labels;                       ///< [N] integer .npy; -1 marks an unlabelled sequence
  std::optional<std::int64_t> num_classes;  ///< C; default the largest label + 1
  std::optional<double> label_dropout;      ///< p_uncond (default 0.1 with --labels)
};

struct DiscreteSampleOptions {
  std::string model;
  std::string out;
  std::int64_t num_samples = 0;
  std::int64_t steps = 100;
  std::optional<double> step_size;
  std::optional<double> eta;          ///< the corrector's η(t) = eta·t
  std::optional<std::int64_t> label;  ///< the class to guide every sequence towards
  std::optional<double> guidance;     ///< the guidance weight w (default 1 with --label)
  std::uint64_t seed = 0;
  bool stats = false;
};

struct DiscreteElboOptions {
  std::string model;
  std::string data;
  std::string out;
  std::int64_t strata = 16;
  std::uint64_t seed = 0;
  bool stats = false;
};

/// The mixture path of a scheduler name: condot (κ_t = t), cosine (κ_t = sin²(πt/2)) or poly:N
/// (κ_t = tᴺ).
using RuntimePath = std::variant<flowmatch::MixturePath<flowmatch::CondOT<double>>,
                                 flowmatch::MixturePath<flowmatch::ConvexCosine<double>>,
                                 flowmatch::MixturePath<flowmatch::Polynomial<double>>>;

RuntimePath path_from_name(const std::string& name) {
  if (name == "condot") return flowmatch::MixturePath<flowmatch::CondOT<double>>();
  if (name == "cosine") return flowmatch::MixturePath<flowmatch::ConvexCosine<double>>();
  if (name.starts_with("poly:")) {
    const std::string exponent = name.substr(5);
    std::size_t used = 0;
    double value = 0;
    try {
      value = std::stod(exponent, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != exponent.size()) {
      throw std::invalid_argument("scheduler '" + name + "': expected poly:N with a number N");
    }
    return flowmatch::MixturePath<flowmatch::Polynomial<double>>(
        flowmatch::Polynomial<double>(value));
  }
  throw std::invalid_argument("unknown scheduler '" + name +
                              "', expected one of: condot, cosine, poly:N");
}

flowmatch::DiscreteSource<double> source_from_name(const std::string& name, Index vocabulary) {
  if (name == "mask") return flowmatch::DiscreteSource<double>::masked(vocabulary);
  if (name == "uniform") return flowmatch::DiscreteSource<double>::uniform(vocabulary);
  throw std::invalid_argument("unknown source '" + name + "', expected mask or uniform");
}

/// The [N, L] integer .npy at @p path as the L×N token batch (C order is that memory already),
/// checked to hold N, L >= 1 data tokens in [0, vocabulary) (and L = @p length if >= 0).
TokenMatrix load_tokens(const std::string& path, const std::string& option, Index vocabulary,
                        Index length = -1) {
  const flowmatch::io::NpyArray array = flowmatch::io::read_npy(path);
  const std::string name = option + " " + path;
  if (array.type != flowmatch::io::NpyType::i8 && array.type != flowmatch::io::NpyType::i4) {
    throw std::invalid_argument(name + " holds floating-point values, expected integer tokens " +
                                "(an int64 [N, L] array)");
  }
  if (array.shape.size() != 2) {
    throw std::invalid_argument(name + " has " + std::to_string(array.shape.size()) +
                                " dimensions, expected an [N, L] array (one row per sequence)");
  }
  const Index sequences = array.shape[0];
  const Index positions = array.shape[1];
  TokenMatrix tokens =
      array.fortran_order
          ? TokenMatrix(Eigen::Map<const TokenMatrix>(array.integers.data(), sequences, positions)
                            .transpose())
          : TokenMatrix(Eigen::Map<const TokenMatrix>(array.integers.data(), positions, sequences));
  flowmatch::detail::require_tokens(name, tokens, vocabulary, false, length);
  return tokens;
}

/// The labels of --labels for @p sequences sequences as a LabelVector over C = @p classes (the
/// largest label + 1 if not given) classes, -1 (an unlabelled sequence) becoming the null label
/// C; @p classes is set to C.
flowmatch::LabelVector load_sequence_labels(const std::string& path, Index sequences,
                                            std::optional<std::int64_t>& classes) {
  const std::vector<std::int64_t> values = flowmatch::io::load_npy_labels(path);
  const std::string name = "--labels " + path;
  if (static_cast<Index>(values.size()) != sequences) {
    throw std::invalid_argument(name + " has " + std::to_string(values.size()) +
                                " labels, expected " + std::to_string(sequences) +
                                " (one per sequence of --data)");
  }
  std::int64_t largest = -1;
  for (const std::int64_t value : values) largest = std::max(largest, value);
  if (!classes) classes = largest + 1;
  if (*classes < 1) {
    throw std::invalid_argument(name + " has no class label >= 0, expected labels in [0, C)");
  }
  flowmatch::LabelVector labels(sequences);
  for (Index n = 0; n < sequences; ++n) {
    const std::int64_t value = values[static_cast<std::size_t>(n)];
    if (value < -1 || value >= *classes) {
      throw std::invalid_argument(name + " has label " + std::to_string(value) + " at " +
                                  std::to_string(n) + ", expected -1 (none) or a class in [0, " +
                                  std::to_string(*classes) + ")");
    }
    labels(n) = value < 0 ? *classes : value;
  }
  return labels;
}

/// A model of `discrete train`: the denoiser, its path and its source.
struct DiscreteModel {
  flowmatch::MlpDenoiser<double> denoiser;
  RuntimePath path;
  flowmatch::DiscreteSource<double> source;
};

DiscreteModel load_discrete_model(const std::string& path) {
  const flowmatch::io::SafeTensors file = flowmatch::io::read_safetensors(path);
  const auto value = [&](const char* key) {
    const auto found = file.metadata.find(key);
    if (found == file.metadata.end()) {
      throw std::invalid_argument("--model " + path + " has no metadata key '" + key +
                                  "': not a model made by `flowmatch discrete train`");
    }
    return found->second;
  };
  const auto count = [&](const char* key) {
    const std::string text = value(key);
    std::size_t used = 0;
    long long number = 0;
    try {
      number = std::stoll(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != text.size() || number < 1) {
      throw std::invalid_argument("--model " + path + ": metadata '" + key + "' is '" + text +
                                  "', expected a count >= 1");
    }
    return static_cast<Index>(number);
  };
  const Index vocabulary = count(kVocabularyKey);
  const Index length = count(kLengthKey);
  flowmatch::DiscreteSource<double> source = source_from_name(value(kSourceKey), vocabulary);
  RuntimePath mixture_path = path_from_name(value(kSchedulerKey));
  flowmatch::MlpDenoiser<double> denoiser(vocabulary, source.masked(),
                                          flowmatch::io::load_mlp<double>(file));
  if (denoiser.length() != length) {
    throw std::invalid_argument("--model " + path + ": the network has " +
                                std::to_string(denoiser.length()) + " positions, metadata '" +
                                kLengthKey + "' says " + std::to_string(length));
  }
  return {std::move(denoiser), std::move(mixture_path), std::move(source)};
}

/// Calls @p run(denoiser, path) with the model's path and its denoiser, wrapped for a masked
/// source in CarryOverDenoiser (the exact posterior at unmasked tokens, without which the ELBO
/// diverges).
template <class Run>
auto with_denoiser(const DiscreteModel& model, Run&& run) {
  return std::visit(
      [&](const auto& path) {
        if (model.source.masked()) return run(flowmatch::CarryOverDenoiser(model.denoiser), path);
        return run(model.denoiser, path);
      },
      model.path);
}

void run_discrete_train(const DiscreteTrainOptions& options) {
  const TokenMatrix data = load_tokens(options.data, "--data", options.vocabulary);
  if (options.labels.empty() && (options.label_dropout || options.num_classes)) {
    throw std::invalid_argument("discrete train: --label-dropout and --num-classes need --labels");
  }
  std::optional<std::int64_t> classes = options.num_classes;
  const flowmatch::LabelVector labels =
      options.labels.empty() ? flowmatch::LabelVector()
                             : load_sequence_labels(options.labels, data.cols(), classes);
  flowmatch::DiscreteSource<double> source = source_from_name(options.source, options.vocabulary);
  const RuntimePath mixture_path = path_from_name(options.scheduler);

  flowmatch::MlpDenoiserConfig config;
  config.vocabulary = options.vocabulary;
  config.length = data.rows();
  config.masked = source.masked();
  config.hidden.assign(options.hidden.begin(), options.hidden.end());
  config.activation = flowmatch::activation_from_name(options.activation);
  config.time_embedding.frequencies = options.time_frequencies;
  config.labels = classes.value_or(0);
  std::mt19937_64 initialisation(options.seed);
  flowmatch::MlpDenoiser<double> denoiser(config, initialisation);

  flowmatch::DiscreteTrainerOptions<double> trainer_options;
  trainer_options.batch_size = options.batch;
  trainer_options.learning_rate = flowmatch::ConstantSchedule<double>(options.lr);
  trainer_options.loss = options.loss == "cross-entropy" ? flowmatch::DiscreteLoss::cross_entropy
                                                         : flowmatch::DiscreteLoss::generalized_kl;
  trainer_options.ema_decay = options.ema;
  trainer_options.label_dropout = options.label_dropout.value_or(0.1);
  // A batch: B sequences of the data (and their labels) drawn uniformly with replacement.
  const auto draw_labelled = [&data, &labels](Index batch, std::mt19937_64& generator) {
    std::uniform_int_distribution<Index> column(0, data.cols() - 1);
    flowmatch::LabelledTokens drawn{TokenMatrix(data.rows(), batch),
                                    flowmatch::LabelVector(labels.size() > 0 ? batch : 0)};
    for (Index n = 0; n < batch; ++n) {
      const Index chosen = column(generator);
      drawn.tokens.col(n) = data.col(chosen);
      if (labels.size() > 0) drawn.labels(n) = labels(chosen);
    }
    return drawn;
  };
  const auto draw_batch = [&draw_labelled](Index batch, std::mt19937_64& generator) {
    return draw_labelled(batch, generator).tokens;
  };

  const flowmatch::MlpDenoiser<double> trained = std::visit(
      [&](const auto& path) {
        using Trainer =
            flowmatch::DiscreteTrainer<typename std::decay_t<decltype(path)>::scheduler_type>;
        const auto train_all = [&](Trainer& trainer) {
          ProgressReport report(0, options.steps);
          for (std::int64_t step = 1; step <= options.steps; ++step) {
            const double loss = trainer.step();
            report(flowmatch::TrainingProgress{step, loss, 0});
          }
          return trainer.ema_denoiser();
        };
        if (labels.size() > 0) {
          Trainer trainer(std::move(denoiser), path, source,
                          typename Trainer::LabelledDataSampler(draw_labelled), trainer_options,
                          options.seed);
          return train_all(trainer);
        }
        Trainer trainer(std::move(denoiser), path, source,
                        typename Trainer::DataSampler(draw_batch), trainer_options, options.seed);
        return train_all(trainer);
      },
      mixture_path);

  flowmatch::io::SafeTensors file =
      flowmatch::io::mlp_to_safetensors(trained.network(), flowmatch::io::DType::F64);
  file.metadata[kVocabularyKey] = std::to_string(options.vocabulary);
  file.metadata[kLengthKey] = std::to_string(data.rows());
  file.metadata[kSourceKey] = options.source;
  file.metadata[kSchedulerKey] = options.scheduler;
  flowmatch::io::write_safetensors(options.out, file);
}

void run_discrete_sample(const DiscreteSampleOptions& options) {
  const DiscreteModel model = load_discrete_model(options.model);
  std::mt19937_64 generator(options.seed);
  const TokenMatrix x0 =
      model.source.sample(model.denoiser.length(), options.num_samples, generator);
  flowmatch::DiscreteSamplerOptions<double> sampler_options;
  sampler_options.step_size = options.step_size.value_or(1.0 / static_cast<double>(options.steps));
  if (options.eta) {
    // The corrector's schedule must vanish at t = 0, where κ̇/κ diverges.
    sampler_options.eta = [scale = *options.eta](double t) { return scale * t; };
  }
  if (options.guidance && !options.label) {
    throw std::invalid_argument(
        "discrete sample: --guidance needs --label (the class to guide to)");
  }
  if (options.label && !model.denoiser.conditional()) {
    throw std::invalid_argument("discrete sample: --label " + std::to_string(*options.label) +
                                " needs a model trained with --labels; --model " + options.model +
                                " is unconditional");
  }
  const auto result = with_denoiser(model, [&](const auto& denoiser, const auto& path) {
    if (!options.label) {
      return flowmatch::sample_discrete(denoiser, path, model.source, x0, sampler_options,
                                        generator);
    }
    const flowmatch::LabelVector labels =
        flowmatch::LabelVector::Constant(options.num_samples, *options.label);
    const flowmatch::Vector<double> weights =
        flowmatch::Vector<double>::Constant(options.num_samples, options.guidance.value_or(1.0));
    return flowmatch::sample_discrete_guided(denoiser, path, model.source, x0, labels, weights,
                                             sampler_options, generator);
  });
  flowmatch::io::save_npy_tokens(options.out, result.tokens);
  if (options.stats) {
    std::cout << nlohmann::json{{"steps", result.stats.steps},
                                {"evaluations", result.stats.evaluations},
                                {"jumps", result.stats.jumps}}
                     .dump()
              << "\n";
  }
}

void run_discrete_elbo(const DiscreteElboOptions& options) {
  const DiscreteModel model = load_discrete_model(options.model);
  const TokenMatrix data =
      load_tokens(options.data, "--data", model.denoiser.vocabulary(), model.denoiser.length());
  std::mt19937_64 generator(options.seed);
  const flowmatch::DiscreteElbo elbo = with_denoiser(model, [&](const auto& denoiser,
                                                                const auto& path) {
    return flowmatch::discrete_elbo(denoiser, path, model.source, data, options.strata, generator);
  });
  flowmatch::io::save_npy_vector(options.out, elbo.bound);
  if (options.stats) {
    // Bits per token: the mean bound over the L tokens of a sequence, divided by log 2.
    const double mean = elbo.bound.mean();
    std::cout << nlohmann::json{{"evaluations", options.strata},
                                {"mean_nats", mean},
                                {"bits_per_token",
                                 mean / (static_cast<double>(data.rows()) * std::log(2.0))}}
                     .dump()
              << "\n";
  }
}

}  // namespace

std::function<void()> add_discrete_commands(CLI::App& app) {
  CLI::App* discrete =
      app.add_subcommand("discrete", "discrete flow matching on token sequences ([N, L] int .npy)");
  discrete->require_subcommand(1);

  auto train = std::make_shared<DiscreteTrainOptions>();
  CLI::App* train_command = discrete->add_subcommand("train", "train an MLP denoiser on tokens");
  train_command->add_option("--data", train->data, "the training sequences, [N, L] int64 .npy")
      ->required();
  train_command->add_option("--vocab", train->vocabulary, "the number K of data tokens (0..K-1)")
      ->required()
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1} << 30));
  train_command->add_option("--out", train->out, "the trained model (safetensors)")->required();
  train_command
      ->add_option("--source", train->source,
                   "mask (every token starts as the mask token K, default) or uniform")
      ->check(CLI::IsMember({"mask", "uniform"}));
  train_command->add_option("--scheduler", train->scheduler,
                            "kappa_t of the mixture path: condot (t, default), cosine "
                            "(sin^2(pi t/2)) or poly:N (t^N)");
  train_command->add_option("--hidden", train->hidden, "hidden layer widths (default 128,128)")
      ->delimiter(',');
  train_command->add_option("--activation", train->activation, "the activation (default silu)");
  train_command
      ->add_option("--time-frequencies", train->time_frequencies,
                   "sinusoidal time features of F frequencies (default 0: the raw time)")
      ->check(CLI::Range(0, 64));
  train_command->add_option("--steps", train->steps, "training steps (default 1000)")
      ->check(positive);
  train_command->add_option("--batch", train->batch, "batch size (default 256)")->check(positive);
  train_command->add_option("--lr", train->lr, "Adam's learning rate (default 1e-3)")
      ->check(positive);
  train_command
      ->add_option("--loss", train->loss,
                   "generalized-kl (the ELBO's loss, default) or cross-entropy")
      ->check(CLI::IsMember({"generalized-kl", "cross-entropy"}));
  train_command
      ->add_option("--ema", train->ema,
                   "decay of the moving average of the weights that is saved (default 0.999; 0: "
                   "the last weights)")
      ->check(CLI::Range(0.0, 1.0));
  train_command->add_option("--seed", train->seed, "seed of the initial weights and the batches");
  train_command->add_option("--labels", train->labels,
                            "class labels of the sequences, [N] int .npy (-1: none), for a "
                            "conditional model");
  train_command
      ->add_option("--num-classes", train->num_classes,
                   "the number C of classes (default: the largest label + 1)")
      ->check(positive);
  train_command
      ->add_option("--label-dropout", train->label_dropout,
                   "the probability that a label is replaced by the null label (default 0.1)")
      ->check(CLI::Range(0.0, 1.0));

  auto sample = std::make_shared<DiscreteSampleOptions>();
  CLI::App* sample_command =
      discrete->add_subcommand("sample", "sample sequences (discrete Euler, t: 0 -> 1)");
  sample_command->add_option("--model", sample->model, "the model (safetensors)")->required();
  sample_command->add_option("--num-samples", sample->num_samples, "the number N of sequences")
      ->required()
      ->check(positive);
  sample_command->add_option("--out", sample->out, "the samples, [N, L] int64 .npy")->required();
  auto* steps = sample_command->add_option("--steps", sample->steps,
                                           "Euler steps of equal size (default 100)");
  steps->check(positive);
  sample_command->add_option("--step-size", sample->step_size, "the step size instead of --steps")
      ->check(positive)
      ->excludes(steps);
  sample_command
      ->add_option("--eta", sample->eta,
                   "the divergence-free corrector of strength eta(t) = ETA t (default none)")
      ->check(non_negative);
  sample_command
      ->add_option("--label", sample->label,
                   "sample the class C of a conditional model (default: unconditional)")
      ->check(non_negative);
  sample_command
      ->add_option("--guidance", sample->guidance,
                   "the guidance weight w with --label (1: conditional, default; > 1 sharper)")
      ->check(non_negative);
  sample_command->add_option("--seed", sample->seed, "seed of the source and the jumps");
  sample_command->add_flag("--stats", sample->stats,
                           "print the steps, evaluations and jumps as JSON to stdout");

  auto elbo = std::make_shared<DiscreteElboOptions>();
  CLI::App* elbo_command = discrete->add_subcommand(
      "elbo", "an upper bound on -log p(x) of each sequence, in nats (the ELBO)");
  elbo_command->add_option("--model", elbo->model, "the model (safetensors)")->required();
  elbo_command->add_option("--data", elbo->data, "the sequences, [N, L] int64 .npy")->required();
  elbo_command->add_option("--out", elbo->out, "the bounds, [N] float64 .npy")->required();
  elbo_command
      ->add_option("--strata", elbo->strata,
                   "strata of [0, 1), one time and one network evaluation each (default 16)")
      ->check(CLI::Range(std::int64_t{2}, std::int64_t{1} << 30));
  elbo_command->add_option("--seed", elbo->seed, "seed of the times and the path samples");
  elbo_command->add_flag("--stats", elbo->stats,
                         "print the mean bound (nats) and bits per token as JSON to stdout");

  return [=] {
    if (*train_command) run_discrete_train(*train);
    if (*sample_command) run_discrete_sample(*sample);
    if (*elbo_command) run_discrete_elbo(*elbo);
  };
}

}  // namespace flowmatch_cli
