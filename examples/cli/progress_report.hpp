// The progress line of the training subcommands on stderr.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "flowmatch/coupling/sinkhorn.hpp"
#include "flowmatch/train/trainer.hpp"

namespace flowmatch_cli {

/// Training progress on stderr: a bar redrawn in place when stderr is a terminal, otherwise a
/// line every few seconds (and one at the end), so that logs stay readable.
class ProgressReport {
 public:
  using Clock = std::chrono::steady_clock;

  ProgressReport(std::int64_t first_step, std::int64_t last_step)
      : first_step_(first_step), last_step_(last_step), terminal_(isatty(fileno(stderr)) == 1) {}

  void operator()(const flowmatch::TrainingProgress& progress) {
    const auto now = Clock::now();
    const bool last = progress.step == last_step_;
    steps_done_ = progress.step;
    if (!last && now - last_print_ < interval()) return;
    last_print_ = now;
    // Rate and remaining time over the whole run so far, steadier than the last interval's.
    const double seconds = std::chrono::duration<double>(now - start_).count();
    const double rate =
        seconds > 0 ? static_cast<double>(progress.step - first_step_) / seconds : 0;
    const double remaining = rate > 0 ? static_cast<double>(last_step_ - progress.step) / rate : 0;
    char line[200];
    std::snprintf(line, sizeof line, "step %lld/%lld  loss %.5f  %.1f steps/s  ETA %.0f s",
                  static_cast<long long>(progress.step), static_cast<long long>(last_step_),
                  progress.loss, rate, remaining);
    if (unconverged_couplings_ > 0) {
      const std::size_t used = std::strlen(line);
      std::snprintf(line + used, sizeof line - used, "  (%lld unconverged couplings)",
                    static_cast<long long>(unconverged_couplings_));
    }
    print(line, progress.step, last);
  }

  /// The progress of a coupling that takes a while, on the progress line of the step it serves.
  template <class Scalar>
  void coupling(const flowmatch::SinkhornProgress<Scalar>& progress) {
    const auto now = Clock::now();
    if (now - last_print_ < interval()) return;
    last_print_ = now;
    char line[160];
    std::snprintf(line, sizeof line,
                  "step %lld/%lld  Sinkhorn coupling: iteration %lld, epsilon %.3g, marginal "
                  "error %.2e, %.1f s",
                  static_cast<long long>(steps_done_ + 1), static_cast<long long>(last_step_),
                  static_cast<long long>(progress.iteration), static_cast<double>(progress.epsilon),
                  static_cast<double>(progress.marginal_error), progress.elapsed_seconds);
    print(line, steps_done_, false);
  }

  /// A coupling that stopped at its iteration cap: a warning the first time, then a count on
  /// the progress line.
  template <class Scalar>
  void coupling_not_converged(const flowmatch::SinkhornResult<Scalar>& result, double tolerance) {
    if (unconverged_couplings_++ > 0) return;
    if (terminal_) std::fputc('\n', stderr);
    std::fprintf(stderr,
                 "flowmatch: warning: step %lld: the Sinkhorn coupling stopped after %lld "
                 "iterations with marginal error %.3e (tolerance %.3g); the pairs come from that "
                 "plan. Raise --sinkhorn-iterations or --sigma, or use --coupling ot\n",
                 static_cast<long long>(steps_done_ + 1), static_cast<long long>(result.iterations),
                 static_cast<double>(result.marginal_error), tolerance);
    std::fflush(stderr);
  }

 private:
  // How often the line is redrawn on a terminal, printed anew in a log.
  [[nodiscard]] std::chrono::milliseconds interval() const {
    return terminal_ ? std::chrono::milliseconds(100) : std::chrono::milliseconds(5000);
  }

  void print(const char* line, std::int64_t step, bool last) const {
    if (terminal_) {
      constexpr int width = 30;
      const auto filled = static_cast<int>(width * step / last_step_);
      std::fprintf(stderr, "\r[%.*s%*s] %s\033[K", filled, "##############################",
                   width - filled, "", line);
      if (last) std::fputc('\n', stderr);
    } else {
      std::fprintf(stderr, "%s\n", line);
    }
    std::fflush(stderr);
  }

  std::int64_t first_step_;
  std::int64_t last_step_;
  bool terminal_;
  std::int64_t steps_done_ = 0;
  std::int64_t unconverged_couplings_ = 0;
  Clock::time_point start_ = Clock::now();
  Clock::time_point last_print_ = Clock::now();
};

}  // namespace flowmatch_cli
