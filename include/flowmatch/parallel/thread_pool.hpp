/// @file thread_pool.hpp
/// @brief A fixed set of persistent worker threads that run the iterations of a loop.
///
/// `pool.parallel_for(tasks, task)` calls `task(i)` once for every i in [0, tasks) and returns
/// when all calls are done. The calling thread takes part: a pool of T threads starts T − 1
/// workers, and a pool of 1 thread runs every task inline on the caller. The tasks are dealt
/// round robin: task i runs on thread i mod T (thread 0 is the caller), the same thread at
/// every call, so per-thread state such as an Mlp's thread_local workspace sees the same
/// batches from one call to the next. A task must compute the same result whichever thread
/// runs it (ParallelField's chunks do, which makes their results independent of T).
///
/// A call does not allocate: the task is passed to the workers as a function pointer and a
/// pointer to the caller's task object, not as a std::function. Calls from several threads
/// are serialised; a task must not call parallel_for on the pool that runs it (deadlock).
///
/// Placement: when the threads fit on the processors the creating thread may run on, each
/// worker is pinned to one of them other than the creator's, one worker per processor; the
/// caller is never pinned, and a call that finds it on a worker's processor first moves it off
/// (detail/processor_placement.hpp). Left to the scheduler, a new or newly woken worker is
/// often placed on the processor of the thread that started or woke it, and the two then share
/// it for tens of milliseconds before the load balancing separates them.
///
/// Waking a sleeping thread takes tens of microseconds, and milliseconds on a virtual machine
/// whose idle processor must itself be woken: longer than a whole evaluation of a small network
/// on a thousand points. After a call, the workers (and the caller, waiting for them) therefore
/// poll for about spin_duration before they sleep: the calls of a solver, which follow each
/// other within microseconds, find them awake.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "flowmatch/core/types.hpp"
#include "flowmatch/detail/processor_placement.hpp"
#include "flowmatch/detail/validate.hpp"

namespace flowmatch {

/// Persistent worker threads for data-parallel loops (see the file comment).
class ThreadPool {
 public:
  /// Starts @p threads − 1 workers (the caller of parallel_for is the remaining thread), each
  /// pinned to its own processor if there are enough (see the file comment).
  /// @throws std::invalid_argument unless threads >= 1.
  explicit ThreadPool(int threads) : thread_count_(threads) {
    detail::require_count("ThreadPool: threads", threads, 1);
    workers_.reserve(static_cast<std::size_t>(threads - 1));
    const std::vector<int> processors = detail::other_allowed_processors();
    const bool pin = processors.size() >= static_cast<std::size_t>(threads - 1);
    for (int worker = 1; worker < threads; ++worker) {
      workers_.emplace_back([this, worker] { work(worker); });
      if (!pin) continue;
      const int processor = processors[static_cast<std::size_t>(worker - 1)];
      if (detail::pin_thread(workers_.back(), processor)) worker_processors_.add(processor);
    }
  }

  /// Stops and joins the workers.
  ~ThreadPool() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stopping_.store(true, std::memory_order_release);
    }
    work_ready_.notify_all();
    for (std::thread& worker : workers_) worker.join();
  }

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  /// The number of threads that run tasks, the caller included.
  [[nodiscard]] int thread_count() const { return thread_count_; }

  /// Calls `task(i)` for every i in [0, @p tasks) on the pool's threads and blocks until all
  /// calls have returned. If tasks throw, the tasks not yet started are skipped and the first
  /// exception is rethrown here. Does not allocate (unless a task throws).
  template <class Task>
  void parallel_for(Index tasks, const Task& task) {
    run(
        tasks, [](const void* context, Index i) { (*static_cast<const Task*>(context))(i); },
        &task);
  }

 private:
  using TaskFunction = void (*)(const void* context, Index task);

  void run(Index tasks, TaskFunction function, const void* context) {
    if (tasks <= 0) return;
    if (workers_.empty() || tasks == 1) {
      for (Index i = 0; i < tasks; ++i) function(context, i);
      return;
    }
    const std::lock_guard<std::mutex> call_lock(call_mutex_);
    if (!worker_processors_.empty()) detail::move_off(worker_processors_);
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      function_ = function;
      context_ = context;
      task_count_ = tasks;
      failed_.store(false, std::memory_order_relaxed);
      busy_workers_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
      first_error_ = nullptr;
      generation_.fetch_add(1, std::memory_order_release);
    }
    work_ready_.notify_all();
    run_tasks(0);
    poll_until([this] { return busy_workers_.load(std::memory_order_acquire) == 0; });
    std::unique_lock<std::mutex> lock(mutex_);
    work_done_.wait(lock, [this] { return busy_workers_.load(std::memory_order_acquire) == 0; });
    if (first_error_) {
      std::exception_ptr error = first_error_;
      first_error_ = nullptr;
      std::rethrow_exception(error);
    }
  }

  // Runs the tasks of the current call dealt to thread @p thread, until one of any thread fails.
  void run_tasks(int thread) {
    for (Index i = thread; i < task_count_; i += thread_count_) {
      if (failed_.load(std::memory_order_relaxed)) return;
      try {
        function_(context_, i);
      } catch (...) {
        const std::lock_guard<std::mutex> lock(mutex_);
        if (!first_error_) first_error_ = std::current_exception();
        failed_.store(true, std::memory_order_relaxed);
      }
    }
  }

  void work(int thread) {
    std::uint64_t seen_generation = 0;
    for (;;) {
      const auto called = [&] {
        return stopping_.load(std::memory_order_acquire) ||
               generation_.load(std::memory_order_acquire) != seen_generation;
      };
      if (seen_generation != 0) poll_until(called);  // a new worker has nothing to wait for yet
      {
        std::unique_lock<std::mutex> lock(mutex_);
        work_ready_.wait(lock, called);
        if (stopping_.load(std::memory_order_relaxed)) return;
        seen_generation = generation_.load(std::memory_order_relaxed);
      }
      run_tasks(thread);
      {
        const std::lock_guard<std::mutex> lock(mutex_);
        busy_workers_.fetch_sub(1, std::memory_order_release);
      }
      work_done_.notify_one();
    }
  }

  // How long a thread polls for the next call, or for the workers to finish, before it sleeps.
  static constexpr std::chrono::microseconds spin_duration{2000};

  // Returns once @p done() holds or spin_duration has passed.
  template <class Condition>
  static void poll_until(const Condition& done) {
    const auto deadline = std::chrono::steady_clock::now() + spin_duration;
    while (!done()) {
      for (int pause = 0; pause < 64; ++pause) pause_instruction();
      if (std::chrono::steady_clock::now() > deadline) return;
    }
  }

  // A hint to the processor that this thread is polling (x86 PAUSE), else nothing.
  static void pause_instruction() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }

  int thread_count_;
  std::vector<std::thread> workers_;
  detail::ProcessorSet worker_processors_;  // the processors the workers are pinned to
  std::mutex call_mutex_;                   // one parallel_for at a time
  std::mutex mutex_;  // guards the call state below; the atomics are also polled
  std::condition_variable work_ready_;
  std::condition_variable work_done_;
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> generation_{0};  // incremented by every call that wakes the workers
  TaskFunction function_ = nullptr;
  const void* context_ = nullptr;
  Index task_count_ = 0;
  std::atomic<bool> failed_{false};  // a task of the current call threw: skip the rest
  std::atomic<int> busy_workers_{0};
  std::exception_ptr first_error_;
};

}  // namespace flowmatch
