/// @file trainer.hpp
/// @brief A training loop for an Mlp velocity field under a flow-matching objective.
///
/// Step s = 0, 1, … (everything random from the trainer's generator, in this order):
///   1. x₁ = data(B, generator), d×B and finite;
///   2. x₀ ~ N(0, I), d×B;
///   3. the regression batch of the objective (coupling, t, ε, x_t, u_t; objective.hpp);
///   4. L and ∂L/∂θ (flow_matching_loss.hpp), the gradient clipped to a global norm if set;
///      with chunk_columns set, over chunks of the batch on a thread pool (below);
///   5. one Adam step with learning rate η(s) of the schedule;
///   6. one update of the exponential moving average of θ.
/// The run is a deterministic function of the seed, and a checkpoint (checkpoint.hpp) taken
/// between steps holds all the state, so a resumed run continues bit for bit (given the same
/// data callable, objective and options). Saving and loading checkpoints as safetensors files
/// is in checkpoint.hpp (which needs nlohmann-json); this header does not need it.
///
/// Chunked and threaded gradients: with options.chunk_columns = C ≥ 1, the regression batch of
/// step 3 (built whole, so the random draws do not change) is split into chunks of C
/// consecutive columns (the last shorter), and each chunk's forward pass, loss gradient and
/// backward pass run as one task of a ThreadPool of options.threads threads, into buffers of
/// its own. With S_c = Σ over chunk c of ‖u_θ − u_t‖², N the batch size and d the dimension,
///
///     L = (Σ_c S_c)/(N·d),   ∂L/∂θ = Σ_c ∂/∂θ [S_c/(N·d)],
///
/// each chunk back-propagating ∂L/∂u_θ = 2·(u_θ − u_t)/(N·d) of its columns, and the chunk
/// sums are added in chunk order on the calling thread. The chunks depend only on N and C, so
/// the run is bit for bit the same for every number of threads; it differs from the unchunked
/// run (chunk_columns = 0, the default) only by rounding, and not at all if C ≥ N. The chunks
/// keep one workspace and one gradient each, sized once by the constructor.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/validate.hpp"
#include "flowmatch/likelihood/standard_normal.hpp"
#include "flowmatch/nn/mlp.hpp"
#include "flowmatch/nn/mlp_workspace.hpp"
#include "flowmatch/parallel/thread_pool.hpp"
#include "flowmatch/train/adam.hpp"
#include "flowmatch/train/ema.hpp"
#include "flowmatch/train/flow_matching_loss.hpp"
#include "flowmatch/train/lr_schedule.hpp"
#include "flowmatch/train/objective.hpp"
#include "flowmatch/train/parameters.hpp"
#include "flowmatch/train/training_checkpoint.hpp"

namespace flowmatch {

/// Progress of a training run, as passed to the callback.
struct TrainingProgress {
  std::int64_t step = 0;        ///< steps taken so far.
  double loss = 0;              ///< the loss of the last step.
  double steps_per_second = 0;  ///< measured over the steps since the previous report.
};

/// Settings of a training run.
template <class Scalar = double>
struct TrainerOptions {
  Index batch_size = 256;      ///< B ≥ 1.
  AdamOptions<Scalar> adam{};  ///< Adam's hyperparameters.
  /// η(s) for the 0-based step index s.
  std::function<Scalar(std::int64_t)> learning_rate = ConstantSchedule<Scalar>(Scalar(1e-3));
  std::optional<Scalar> max_gradient_norm;  ///< clip ‖∂L/∂θ‖ to this (> 0) if set.
  Scalar ema_decay = Scalar(0.999);         ///< decay of the moving average, in [0, 1].
  bool ema_warmup = false;                  ///< the EMA warm-up of ema.hpp.
  std::int64_t report_every = 100;          ///< callback period in steps (≥ 1).
  /// C: 0 computes the loss and gradient of the whole batch in one pass; C ≥ 1 splits the
  /// batch into chunks of C columns (see the file comment; 256 keeps a chunk in cache).
  Index chunk_columns = 0;
  /// The threads (≥ 1, the caller included) computing the chunks; more than 1 needs
  /// chunk_columns ≥ 1. The results do not depend on it.
  int threads = 1;
};

/// Trains an Mlp with Adam under a flow-matching objective (see the file comment).
/// @p couplings says which couplings the trainer is compiled for: CouplingSupport::independent
/// leaves the OT solvers out of the program (a shorter compile) and accepts only objectives with
/// the independent coupling.
template <class Scalar = double, std::uniform_random_bit_generator Generator = std::mt19937_64,
          CouplingSupport couplings = CouplingSupport::all>
class FlowMatchingTrainer {
 public:
  /// Draws a d×B batch of data samples: data(B, generator).
  using DataSampler = std::function<Matrix<Scalar>(Index, Generator&)>;
  /// A batch of data samples (d×B) with their conditions (k×B, one column per sample).
  struct ConditionedBatch {
    Matrix<Scalar> data;
    Matrix<Scalar> conditions;
  };
  /// Draws a batch of B conditioned samples for a conditional model: data(B, generator).
  using ConditionedDataSampler = std::function<ConditionedBatch(Index, Generator&)>;
  /// Receives progress every report_every steps.
  using Callback = std::function<void(const TrainingProgress&)>;

  /// A trainer of the unconditional @p model with its generator seeded by @p seed.
  /// @throws std::invalid_argument if the model is conditional, or an option or the objective
  ///         is invalid (or its coupling outside @p couplings).
  FlowMatchingTrainer(Mlp<Scalar> model, FlowMatchingObjective<Scalar> objective, DataSampler data,
                      TrainerOptions<Scalar> options, std::uint64_t seed)
      : FlowMatchingTrainer(std::move(model), std::move(objective), batch_drawer(std::move(data)),
                            std::move(options), seed, 0) {}

  /// A trainer of the conditional @p model (cond_dim k ≥ 1): each step draws data with their
  /// conditions, and the objective's label_dropout replaces conditions by its null condition
  /// (the zero column by default), as classifier-free guidance expects.
  /// @throws std::invalid_argument if the model is unconditional, or an option or the objective
  ///         is invalid (or its coupling outside @p couplings).
  FlowMatchingTrainer(Mlp<Scalar> model, FlowMatchingObjective<Scalar> objective,
                      ConditionedDataSampler data, TrainerOptions<Scalar> options,
                      std::uint64_t seed)
      : FlowMatchingTrainer(std::move(model), std::move(objective), batch_drawer(std::move(data)),
                            std::move(options), seed, 1) {}

  /// A ConditionedDataSampler drawing B columns of @p data (d×M) with the same columns of
  /// @p conditions (k×M) uniformly with replacement.
  /// @throws std::invalid_argument if data is empty, the column counts differ or a value is
  ///         not finite.
  static ConditionedDataSampler resample(Matrix<Scalar> data, Matrix<Scalar> conditions) {
    require_data_set("FlowMatchingTrainer::resample", data);
    detail::require_shape("FlowMatchingTrainer::resample: conditions", conditions, -1, data.cols());
    detail::require_finite("FlowMatchingTrainer::resample: conditions", conditions);
    return ConditionalResampler{{std::move(data), std::move(conditions)}};
  }

  /// A DataSampler drawing B columns of @p data (d×M, M ≥ 1, finite) uniformly with
  /// replacement.
  /// @throws std::invalid_argument if data is empty or not finite.
  static DataSampler resample(Matrix<Scalar> data) {
    require_data_set("FlowMatchingTrainer::resample", data);
    return UnconditionalResampler{{std::move(data), Matrix<Scalar>()}};
  }

 private:
  // Draws a batch of B data samples (and their conditions) into the trainer's buffers.
  using BatchDrawer = std::function<void(Index, Generator&, ConditionedBatch&)>;

  // Draws columns of a stored data set (d×M) and of its conditions (k×M, or 0×0 without)
  // uniformly with replacement, one uniform index per column: what resample() returns. The
  // trainer recognises it inside a sampler and draws into its own buffers, without allocating;
  // the call operators of the two derived types serve other users of a DataSampler or
  // ConditionedDataSampler.
  struct DatasetResampler {
    Matrix<Scalar> data;
    Matrix<Scalar> conditions;

    void draw_into(Index batch_size, Generator& generator, ConditionedBatch& batch) const {
      std::uniform_int_distribution<Index> column(0, data.cols() - 1);
      batch.data.resize(data.rows(), batch_size);
      batch.conditions.resize(conditions.rows(), conditions.rows() > 0 ? batch_size : 0);
      for (Index k = 0; k < batch_size; ++k) {
        const Index chosen = column(generator);
        batch.data.col(k) = data.col(chosen);
        if (conditions.rows() > 0) batch.conditions.col(k) = conditions.col(chosen);
      }
    }
  };
  struct UnconditionalResampler : DatasetResampler {
    Matrix<Scalar> operator()(Index batch_size, Generator& generator) const {
      ConditionedBatch batch;
      this->draw_into(batch_size, generator, batch);
      return std::move(batch.data);
    }
  };
  struct ConditionalResampler : DatasetResampler {
    ConditionedBatch operator()(Index batch_size, Generator& generator) const {
      ConditionedBatch batch;
      this->draw_into(batch_size, generator, batch);
      return batch;
    }
  };

  static void require_data_set(const char* function, const Matrix<Scalar>& data) {
    if (data.size() == 0)
      detail::reject_argument(detail::argument_name(function, "data"), "is empty",
                              "at least one sample");
    detail::require_finite(detail::argument_name(function, "data"), data);
  }

  // The drawer of a sampler: in place for a resample() sampler, else through its result.
  template <class Sampler>
  static BatchDrawer batch_drawer(Sampler data) {
    if (!data) detail::reject_argument("FlowMatchingTrainer: data", "is empty", "a sampler");
    using Resampler = std::conditional_t<std::is_same_v<Sampler, DataSampler>,
                                         UnconditionalResampler, ConditionalResampler>;
    if (const Resampler* resampler = data.template target<Resampler>()) {
      return [resampler = *resampler](Index batch_size, Generator& generator,
                                      ConditionedBatch& batch) {
        resampler.draw_into(batch_size, generator, batch);
      };
    }
    return
        [data = std::move(data)](Index batch_size, Generator& generator, ConditionedBatch& batch) {
          if constexpr (std::is_same_v<Sampler, DataSampler>) {
            batch.data = data(batch_size, generator);
            batch.conditions.resize(0, 0);
          } else {
            batch = data(batch_size, generator);
          }
        };
  }

  FlowMatchingTrainer(Mlp<Scalar> model, FlowMatchingObjective<Scalar> objective,
                      BatchDrawer draw_batch, TrainerOptions<Scalar> options, std::uint64_t seed,
                      Index minimum_cond_dim)
      : model_(std::move(model)),
        objective_(std::move(objective)),
        draw_batch_(std::move(draw_batch)),
        options_(std::move(options)),
        generator_(seed),
        adam_(model_.parameters().size(), options_.adam),
        ema_(model_.parameters(), options_.ema_decay, options_.ema_warmup),
        gradient_(model_.zero_gradient()),
        prediction_(model_.dim(), std::max<Index>(options_.batch_size, 0)),
        output_gradient_(prediction_.rows(), prediction_.cols()) {
    if ((minimum_cond_dim == 0) != (model_.cond_dim() == 0)) {
      detail::reject_argument("FlowMatchingTrainer: model",
                              "has cond_dim " + detail::to_text(model_.cond_dim()),
                              minimum_cond_dim == 0 ? "an unconditional model (cond_dim 0)"
                                                    : "a conditional model for conditioned data");
    }
    detail::require_count<Index>("FlowMatchingTrainer: options.batch_size", options_.batch_size, 1);
    if (!options_.learning_rate) {
      detail::reject_argument("FlowMatchingTrainer: options.learning_rate", "is empty",
                              "a learning-rate schedule");
    }
    if (options_.max_gradient_norm) {
      detail::require_positive("FlowMatchingTrainer: options.max_gradient_norm",
                               *options_.max_gradient_norm);
    }
    detail::require_count<std::int64_t>("FlowMatchingTrainer: options.report_every",
                                        options_.report_every, 1);
    detail::require_count<Index>("FlowMatchingTrainer: options.chunk_columns",
                                 options_.chunk_columns, 0);
    detail::require_count("FlowMatchingTrainer: options.threads", options_.threads, 1);
    if (options_.threads > 1 && options_.chunk_columns == 0) {
      detail::reject_argument(
          "FlowMatchingTrainer: options.threads",
          "is " + detail::to_text(options_.threads) + " with options.chunk_columns 0",
          "chunk_columns >= 1 to split the batch between the threads");
    }
    objective_.validate(couplings);
    const Index chunks = (options_.batch_size + chunk_width() - 1) / chunk_width();
    chunk_workspaces_.resize(static_cast<std::size_t>(chunks));
    chunk_gradients_.assign(static_cast<std::size_t>(chunks), model_.zero_gradient());
    chunk_squared_errors_.resize(static_cast<std::size_t>(chunks));
    if (options_.max_gradient_norm) clipped_gradient_.resize(model_.parameters().size());
    pool_ = std::make_shared<ThreadPool>(options_.threads);
  }

  // The columns of a chunk: chunk_columns, or the whole batch if 0.
  [[nodiscard]] Index chunk_width() const {
    return options_.chunk_columns > 0 ? options_.chunk_columns : options_.batch_size;
  }

  // L of @p batch, and ∂L/∂θ into gradient_, chunk by chunk on the pool (see the file comment):
  // each chunk's S_c and gradient by mlp_flow_matching_partial_loss, summed in chunk order.
  Scalar batch_loss_and_gradient(const FlowMatchingBatch<Scalar>& batch) {
    const Index columns = batch.x_t.cols();
    const Index width = chunk_width();
    pool_->parallel_for(static_cast<Index>(chunk_gradients_.size()), [&](Index chunk) {
      const Index first = chunk * width;
      const Index count = std::min(width, columns - first);
      const auto slot = static_cast<std::size_t>(chunk);
      chunk_squared_errors_[slot] = mlp_flow_matching_partial_loss(
          model_, chunk_workspaces_[slot], batch, first, count,
          prediction_.middleCols(first, count), output_gradient_.middleCols(first, count),
          chunk_gradients_[slot]);
    });
    Scalar squared_error = 0;
    for (std::size_t chunk = 0; chunk < chunk_gradients_.size(); ++chunk) {
      squared_error += chunk_squared_errors_[chunk];
      if (chunk == 0) {
        gradient_.flat() = chunk_gradients_[chunk].flat();
      } else {
        gradient_.flat() += chunk_gradients_[chunk].flat();
      }
    }
    return squared_error / Scalar(prediction_.size());
  }

 public:
  /// Takes one training step and returns its loss.
  /// @throws std::invalid_argument if the data batch is not d×B and finite.
  Scalar step() {
    const Index dim = model_.dim();
    const Index batch_size = options_.batch_size;
    draw_batch_(batch_size, generator_, drawn_);
    const Matrix<Scalar>& x1 = drawn_.data;
    detail::require_shape("FlowMatchingTrainer::step: data batch", x1, dim, batch_size);
    detail::require_finite("FlowMatchingTrainer::step: data batch", x1);
    if (model_.cond_dim() > 0) {
      detail::require_shape("FlowMatchingTrainer::step: conditions", drawn_.conditions,
                            model_.cond_dim(), batch_size);
    }
    source_.resize(dim, batch_size);
    StandardNormal::sample_into<Scalar>(source_, generator_);
    if (model_.cond_dim() > 0) {
      objective_.template make_batch_into<couplings>(source_, x1, drawn_.conditions, generator_,
                                                     batch_);
    } else {
      objective_.template make_batch_into<couplings>(source_, x1, generator_, batch_);
    }
    const Scalar loss = batch_loss_and_gradient(batch_);
    // θ is one vector inside the model: Adam and the moving average work on it in place.
    const Vector<Scalar>* update_gradient = &gradient_.flat();
    if (options_.max_gradient_norm) {
      clipped_gradient_ = gradient_.flat();  // gradient() stays the gradient before clipping
      clip_by_global_norm(clipped_gradient_, *options_.max_gradient_norm);
      update_gradient = &clipped_gradient_;
    }
    adam_.step(model_.parameters(), *update_gradient, options_.learning_rate(step_));
    ema_.update(model_.parameters());
    ++step_;
    return loss;
  }

  /// Takes @p steps steps, calling @p callback (if set) after every report_every-th step and
  /// after the last. Returns the loss of the last step.
  /// @throws std::invalid_argument if steps < 1; as step().
  Scalar train(std::int64_t steps, const Callback& callback = {}) {
    detail::require_count<std::int64_t>("FlowMatchingTrainer::train: steps", steps, 1);
    using Clock = std::chrono::steady_clock;
    auto since = Clock::now();
    std::int64_t steps_since = 0;
    Scalar loss = 0;
    for (std::int64_t taken = 1; taken <= steps; ++taken) {
      loss = step();
      ++steps_since;
      if (callback && (step_ % options_.report_every == 0 || taken == steps)) {
        const auto now = Clock::now();
        const double seconds = std::chrono::duration<double>(now - since).count();
        callback({step_, static_cast<double>(loss),
                  seconds > 0 ? static_cast<double>(steps_since) / seconds : 0.0});
        since = now;
        steps_since = 0;
      }
    }
    return loss;
  }

  /// The network being trained.
  [[nodiscard]] const Mlp<Scalar>& model() const { return model_; }
  /// The network with the moving-average weights.
  [[nodiscard]] Mlp<Scalar> ema_model() const {
    Mlp<Scalar> averaged = model_;
    averaged.parameters() = ema_.average();
    return averaged;
  }
  /// The number of steps taken.
  [[nodiscard]] std::int64_t step_count() const { return step_; }
  /// ∂L/∂θ of the last step, before clipping, at the weights before its update (zero before
  /// the first step).
  [[nodiscard]] const MlpGradient<Scalar>& gradient() const { return gradient_; }
  /// The objective.
  [[nodiscard]] const FlowMatchingObjective<Scalar>& objective() const { return objective_; }

  /// The full state, for save_checkpoint.
  [[nodiscard]] TrainingCheckpoint<Scalar> checkpoint() const {
    return detail::take_training_checkpoint(model_, adam_, ema_, step_, generator_);
  }

  /// Restores a state taken by checkpoint() (possibly through a file) of a run with the same
  /// network shape; the data callable, objective and options stay those of this trainer.
  /// @throws std::invalid_argument if the network shape differs, a state has the wrong size or
  ///         the generator state does not parse.
  void restore(const TrainingCheckpoint<Scalar>& checkpoint) {
    detail::restore_training_checkpoint("FlowMatchingTrainer", checkpoint, model_, adam_, ema_,
                                        step_, generator_);
  }

 private:
  Mlp<Scalar> model_;
  FlowMatchingObjective<Scalar> objective_;
  BatchDrawer draw_batch_;
  TrainerOptions<Scalar> options_;
  Generator generator_;
  Adam<Scalar> adam_;
  ExponentialMovingAverage<Scalar> ema_;
  MlpGradient<Scalar> gradient_;    // ∂L/∂θ of the last step
  Matrix<Scalar> prediction_;       // u_θ of the batch, d×N
  Matrix<Scalar> output_gradient_;  // ∂L/∂u_θ of the batch, d×N
  std::vector<MlpWorkspace<Scalar>> chunk_workspaces_;
  std::vector<MlpGradient<Scalar>> chunk_gradients_;  // the gradient of each chunk's S_c/(N·d)
  std::vector<Scalar> chunk_squared_errors_;          // S_c
  // The buffers of a step, reused from step to step.
  ConditionedBatch drawn_;           // x₁ and its conditions
  Matrix<Scalar> source_;            // x₀
  FlowMatchingBatch<Scalar> batch_;  // the regression batch
  Vector<Scalar> clipped_gradient_;  // ∂L/∂θ clipped to max_gradient_norm, if set
  // Shared by copies of the trainer (a pool cannot be copied; its calls are serialised).
  std::shared_ptr<ThreadPool> pool_;
  std::int64_t step_ = 0;
};

}  // namespace flowmatch
