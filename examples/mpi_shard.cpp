// mpi_shard: sampling, encoding, log-likelihoods and velocities of a saved model over an .npy
// file of many points, sharded over MPI ranks. Each rank reads only its own rows of the input file,
// integrates them, and rank 0 gathers the results and writes the output file.
//
// Usage (P ranks, T threads per rank; every option but the subcommand takes a value):
//   mpirun -np P mpi_shard sample --model M.safetensors --in noise.npy --out samples.npy
//   mpirun -np P mpi_shard encode --model M.safetensors --in data.npy --out noise.npy
//   mpirun -np P mpi_shard loglik --model M.safetensors --in data.npy --out log_density.npy
//   mpirun -np P mpi_shard velocity --model M.safetensors --in x.npy --time t --out u.npy
//   mpirun -np P mpi_shard noise --dim D --rows N --seed S --out noise.npy
// Solver options: --method NAME (default midpoint) with --steps K (fixed-step methods, default
// 20), or --tolerance TOL (rtol = atol for dopri5, tsit5 and rkf78, default 1e-5);
// --threads T (default 1) evaluates the model on T threads within each rank.
//
// sample and encode write the [N, d] end points, loglik the [N] log-densities log p_1(x) (exact
// divergence), velocity the [N, d] velocities u_t(x) at the time t in [0, 1] (one evaluation of
// the model, no solver options), noise N standard normal points in R^D drawn chunk by chunk
// from the seed.
//
// Reproducibility: a matrix product may round a column differently in batches of other sizes,
// so the rows are split between ranks at multiples of kChunkColumns and every rank evaluates
// the model in chunks of kChunkColumns columns (ParallelField). Every chunk thus holds the same
// points whatever the number of ranks and threads, and as a fixed-step method treats each
// point on its own, its output is the same bit for bit for any number of ranks and threads. An
// adaptive method chooses its steps from the error of all the points of a rank, so each rank
// takes its own steps: the results agree with a single-process run to within the tolerance,
// not bit for bit.
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "flowmatch/io/mlp_safetensors.hpp"
#include "flowmatch/io/npy.hpp"
#include "flowmatch/likelihood/log_likelihood.hpp"
#include "flowmatch/likelihood/standard_normal.hpp"
#include "flowmatch/parallel/parallel_field.hpp"
#include "flowmatch/solver/integrate.hpp"

namespace {

using flowmatch::Index;
using flowmatch::Matrix;

// Rows per chunk: the unit of the split between ranks and of every model evaluation.
constexpr Index kChunkColumns = 256;

constexpr std::string_view kUsage =
    "usage: mpi_shard <sample|encode|loglik> --model M.safetensors --in X.npy --out Y.npy\n"
    "                 [--method NAME] [--steps K] [--tolerance TOL] [--threads T]\n"
    "       mpi_shard velocity --model M.safetensors --in X.npy --time T --out Y.npy\n"
    "                 [--threads T]\n"
    "       mpi_shard noise --dim D --rows N --seed S --out Y.npy\n";

// A command line that cannot be run (printed with the usage text).
class UsageError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// The command line after the subcommand: "--name value" pairs.
class Arguments {
 public:
  Arguments(int argc, char** argv, const std::vector<std::string_view>& allowed) {
    for (int i = 2; i < argc; i += 2) {
      const std::string_view name = argv[i];
      if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
        throw UsageError("unknown option '" + std::string(name) + "'");
      }
      if (i + 1 == argc) throw UsageError(std::string(name) + " needs a value");
      if (!values_.emplace(name, argv[i + 1]).second) {
        throw UsageError(std::string(name) + " is given twice");
      }
    }
  }

  // The value of option @p name; @p fallback if absent, or a UsageError if there is none.
  [[nodiscard]] std::string text(std::string_view name, const char* fallback = nullptr) const {
    if (const auto found = values_.find(name); found != values_.end()) return found->second;
    if (fallback == nullptr) throw UsageError("missing " + std::string(name));
    return fallback;
  }

  [[nodiscard]] long long integer(std::string_view name, const char* fallback, long long minimum,
                                  long long maximum) const {
    const std::string value_text = text(name, fallback);
    std::size_t used = 0;
    long long value = 0;
    try {
      value = std::stoll(value_text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != value_text.size() || value < minimum || value > maximum) {
      throw UsageError(std::string(name) + " is '" + value_text + "', expected an integer in [" +
                       std::to_string(minimum) + ", " + std::to_string(maximum) + "]");
    }
    return value;
  }

  [[nodiscard]] double positive(std::string_view name, const char* fallback) const {
    return number(
        name, fallback, [](double value) { return value > 0.0; }, "a positive number");
  }

  [[nodiscard]] double time(std::string_view name) const {
    return number(
        name, nullptr, [](double value) { return value >= 0.0 && value <= 1.0; },
        "a time in [0, 1]");
  }

 private:
  // The value of option @p name as a finite number for which @p accept holds.
  template <class Accept>
  [[nodiscard]] double number(std::string_view name, const char* fallback, Accept accept,
                              std::string_view expected) const {
    const std::string value_text = text(name, fallback);
    std::size_t used = 0;
    double value = 0.0;
    try {
      value = std::stod(value_text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != value_text.size() || !std::isfinite(value) || !accept(value)) {
      throw UsageError(std::string(name) + " is '" + value_text + "', expected " +
                       std::string(expected));
    }
    return value;
  }

  std::map<std::string, std::string, std::less<>> values_;
};

// What to do, read from the command line before any work (identically on every rank).
struct Job {
  std::string command;
  std::string output;
  // sample, encode, loglik, velocity:
  std::string model;
  std::string input;
  int threads = 1;
  // sample, encode, loglik:
  flowmatch::SolverOptions<double> options;
  // velocity:
  double time = 0.0;
  // noise:
  Index dim = 0;
  Index rows = 0;
  std::uint64_t seed = 0;
};

// Throws UsageError, or std::invalid_argument for an unknown method name.
Job parse_job(int argc, char** argv) {
  if (argc < 2) throw UsageError("missing the subcommand");
  Job job;
  job.command = argv[1];
  constexpr long long kMaxRows = std::numeric_limits<int>::max();  // MPI counts are int
  if (job.command == "noise") {
    const Arguments arguments(argc, argv, {"--dim", "--rows", "--seed", "--out"});
    job.dim = arguments.integer("--dim", nullptr, 1, std::numeric_limits<int>::max());
    job.rows = arguments.integer("--rows", nullptr, 0, kMaxRows);
    job.seed = static_cast<std::uint64_t>(
        arguments.integer("--seed", nullptr, 0, std::numeric_limits<long long>::max()));
    job.output = arguments.text("--out");
    return job;
  }
  const bool velocity = job.command == "velocity";
  if (!velocity && job.command != "sample" && job.command != "encode" && job.command != "loglik") {
    throw UsageError("unknown subcommand '" + job.command + "'");
  }
  std::vector<std::string_view> allowed{"--model", "--in", "--out", "--threads"};
  if (velocity) {
    allowed.push_back("--time");
  } else {
    allowed.insert(allowed.end(), {"--method", "--steps", "--tolerance"});
  }
  const Arguments arguments(argc, argv, allowed);
  job.model = arguments.text("--model");
  job.input = arguments.text("--in");
  job.output = arguments.text("--out");
  job.threads = static_cast<int>(arguments.integer("--threads", "1", 1, 1024));
  if (velocity) {
    job.time = arguments.time("--time");
    return job;
  }
  job.options.method = flowmatch::method_from_name(arguments.text("--method", "midpoint"));
  const long long steps = arguments.integer("--steps", "20", 1, 1000000);
  if (!flowmatch::is_adaptive(job.options.method))
    job.options.step_size = 1.0 / static_cast<double>(steps);
  job.options.rtol = job.options.atol = arguments.positive("--tolerance", "1e-5");
  return job;
}

// The rows [first, first + count) of one rank: with K = ⌈N/C⌉ chunks of C rows, rank r of P
// takes chunks ⌊K·r/P⌋ to ⌊K·(r+1)/P⌋ − 1, so shards differ by at most one chunk (a rank gets
// none when there are more ranks than chunks).
struct RowRange {
  Index first = 0;
  Index count = 0;
};

RowRange rows_of_rank(Index rows, int rank, int ranks) {
  const Index chunks = (rows + kChunkColumns - 1) / kChunkColumns;
  const Index begin = std::min(rows, chunks * rank / ranks * kChunkColumns);
  const Index end = std::min(rows, chunks * (rank + 1) / ranks * kChunkColumns);
  return {begin, end - begin};
}

// Standard normal noise for rows @p mine of the job: chunk c of the whole file is drawn from its
// own generator seeded with (seed, c), so the file does not depend on the number of ranks.
Matrix<double> draw_noise(const Job& job, RowRange mine) {
  Matrix<double> noise(job.dim, mine.count);
  for (Index begin = 0; begin < mine.count; begin += kChunkColumns) {
    const auto chunk = static_cast<std::uint64_t>((mine.first + begin) / kChunkColumns);
    std::seed_seq seeds{job.seed, chunk};
    std::mt19937_64 generator(seeds);
    const Index columns = std::min(kChunkColumns, mine.count - begin);
    noise.middleCols(begin, columns) =
        flowmatch::StandardNormal::sample<double>(job.dim, columns, generator);
  }
  return noise;
}

// This rank's share of the job: one column per row of its range (d rows for points, one row
// for log-densities). @p total_rows receives N, the number of rows of the whole job.
Matrix<double> compute_shard(const Job& job, int rank, int ranks, Index& total_rows) {
  if (job.command == "noise") {
    total_rows = job.rows;
    return draw_noise(job, rows_of_rank(total_rows, rank, ranks));
  }
  const flowmatch::io::NpyHeader header = flowmatch::io::read_npy_header(job.input);
  total_rows = header.shape.empty() ? 0 : header.shape[0];
  if (total_rows > std::numeric_limits<int>::max()) {
    throw std::invalid_argument(job.input + " has more than 2^31 - 1 rows");
  }
  const RowRange mine = rows_of_rank(total_rows, rank, ranks);
  // Checks the file's dtype and shape (also for an empty range) and reads only this range.
  const Matrix<double> points =
      flowmatch::io::load_npy_batch_rows<double>(job.input, mine.first, mine.count);
  const auto model = flowmatch::io::load_mlp<double>(job.model);
  if (points.rows() != model.dim()) {
    throw std::invalid_argument(job.input + " holds points in R^" + std::to_string(points.rows()) +
                                ", the model's are in R^" + std::to_string(model.dim()));
  }
  const bool densities = job.command == "loglik";
  if (mine.count == 0) return Matrix<double>(densities ? 1 : points.rows(), 0);

  flowmatch::ThreadPool pool(job.threads);
  const auto field = flowmatch::parallel_field(std::cref(model), pool, kChunkColumns);
  if (job.command == "sample") return flowmatch::sample(field, points, job.options).state;
  if (job.command == "encode") return flowmatch::encode(field, points, job.options).state;
  if (job.command == "velocity") {
    Matrix<double> velocity(points.rows(), points.cols());
    field(job.time, points, velocity);
    return velocity;
  }
  return flowmatch::log_likelihood(field, points, job.options).log_prob.transpose();
}

// Gathers the shards (rows×count_r on rank r) into the rows×N matrix on rank 0, in rank order;
// one MPI element is one column, so the counts are numbers of rows of the file.
Matrix<double> gather_at_root(const Matrix<double>& shard, Index total_rows, int rank, int ranks) {
  MPI_Datatype column = MPI_DATATYPE_NULL;
  MPI_Type_contiguous(static_cast<int>(shard.rows()), MPI_DOUBLE, &column);
  MPI_Type_commit(&column);
  std::vector<int> counts(static_cast<std::size_t>(ranks));
  std::vector<int> displacements(static_cast<std::size_t>(ranks));
  for (int r = 0; r < ranks; ++r) {
    const RowRange range = rows_of_rank(total_rows, r, ranks);
    counts[static_cast<std::size_t>(r)] = static_cast<int>(range.count);
    displacements[static_cast<std::size_t>(r)] = static_cast<int>(range.first);
  }
  Matrix<double> all(shard.rows(), rank == 0 ? total_rows : 0);
  MPI_Gatherv(shard.data(), static_cast<int>(shard.cols()), column, all.data(), counts.data(),
              displacements.data(), column, 0, MPI_COMM_WORLD);
  MPI_Type_free(&column);
  return all;
}

// Prints @p error of rank @p rank as one line, written at once so that the lines of several
// ranks do not interleave.
void report_error(int rank, const std::exception& error) {
  std::cerr << ("mpi_shard: rank " + std::to_string(rank) + ": " + error.what() + "\n")
            << std::flush;
}

// The whole job on one rank; returns the exit status.
int run(int argc, char** argv, int rank, int ranks) {
  Job job;
  try {
    job = parse_job(argc, argv);
  } catch (const std::invalid_argument& error) {
    // Every rank parses the same command line, so all stop here; rank 0 reports.
    if (rank == 0) std::cerr << "mpi_shard: " << error.what() << "\n" << kUsage;
    return 2;
  }

  // A failure on any rank stops all of them before the collective gather.
  Matrix<double> shard;
  Index total_rows = 0;
  int failed = 0;
  try {
    shard = compute_shard(job, rank, ranks, total_rows);
  } catch (const std::exception& error) {
    report_error(rank, error);
    failed = 1;
  }
  int any_failed = 0;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (any_failed != 0) return 1;

  const Matrix<double> result = gather_at_root(shard, total_rows, rank, ranks);
  if (rank != 0) return 0;
  try {
    if (job.command == "loglik") {
      flowmatch::io::save_npy_vector<double>(job.output, result.row(0).transpose());
    } else {
      flowmatch::io::save_npy(job.output, result);
    }
  } catch (const std::exception& error) {
    report_error(rank, error);
    return 1;
  }
  std::cout << "mpi_shard " << job.command << ": " << total_rows << " rows on " << ranks
            << (ranks == 1 ? " rank" : " ranks") << " -> " << job.output << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  int ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  const int status = run(argc, argv, rank, ranks);
  MPI_Finalize();
  return status;
}
