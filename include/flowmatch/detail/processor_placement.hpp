/// @file processor_placement.hpp
/// @brief The processors a thread may run on, pinning a thread to one, and moving a thread off
/// a set of processors (Linux; elsewhere the sets are empty and nothing moves).
///
/// ThreadPool uses these to keep its threads on distinct processors. A new or newly woken
/// thread is often placed on the processor of the thread that started or woke it; when both
/// then run at full load, they share that processor until the scheduler's load balancing
/// separates them, which can take tens of milliseconds: as long as a whole sampling run.
#pragma once

#include <thread>
#include <vector>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif

namespace flowmatch::detail {

/// A set of processor numbers (a cpu_set_t on Linux; always empty elsewhere).
class ProcessorSet {
 public:
  ProcessorSet() {
#if defined(__linux__)
    CPU_ZERO(&set_);
#endif
  }

  /// Adds processor @p processor; negative and out-of-range numbers are ignored.
  void add(int processor) {
#if defined(__linux__)
    if (processor >= 0 && processor < CPU_SETSIZE) CPU_SET(processor, &set_);
#else
    static_cast<void>(processor);
#endif
  }

  /// Whether processor @p processor is in the set.
  [[nodiscard]] bool contains(int processor) const {
#if defined(__linux__)
    return processor >= 0 && processor < CPU_SETSIZE && CPU_ISSET(processor, &set_);
#else
    static_cast<void>(processor);
    return false;
#endif
  }

  /// Whether the set is empty.
  [[nodiscard]] bool empty() const {
#if defined(__linux__)
    return CPU_COUNT(&set_) == 0;
#else
    return true;
#endif
  }

 private:
#if defined(__linux__)
  cpu_set_t set_;
#endif
};

#if defined(__linux__)
/// The mask of processor @p processor alone.
inline cpu_set_t single_processor_mask(int processor) {
  cpu_set_t mask;
  CPU_ZERO(&mask);
  CPU_SET(processor, &mask);
  return mask;
}
#endif

/// The processor the calling thread runs on now, or −1 where that is unknown.
inline int current_processor() {
#if defined(__linux__)
  return sched_getcpu();
#else
  return -1;
#endif
}

/// The processors of the calling thread's affinity mask other than the one it runs on, in
/// increasing order; empty where unknown.
inline std::vector<int> other_allowed_processors() {
  std::vector<int> processors;
#if defined(__linux__)
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return processors;
  const int current = current_processor();
  for (int processor = 0; processor < CPU_SETSIZE; ++processor) {
    if (CPU_ISSET(processor, &allowed) && processor != current) processors.push_back(processor);
  }
#endif
  return processors;
}

/// Restricts @p thread to processor @p processor. Returns false (and leaves the thread as it
/// was) if the system refuses or there is no such control.
inline bool pin_thread(std::thread& thread, int processor) {
#if defined(__linux__)
  const cpu_set_t only = single_processor_mask(processor);
  return pthread_setaffinity_np(thread.native_handle(), sizeof(only), &only) == 0;
#else
  static_cast<void>(thread);
  static_cast<void>(processor);
  return false;
#endif
}

/// If the calling thread runs on a processor of @p occupied, moves it to the lowest-numbered
/// processor of its affinity mask outside @p occupied, if there is one, and then restores the
/// mask: the thread is moved, not pinned. Failures of the system calls leave it where it is.
inline void move_off(const ProcessorSet& occupied) {
#if defined(__linux__)
  if (!occupied.contains(current_processor())) return;
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return;
  for (int processor = 0; processor < CPU_SETSIZE; ++processor) {
    if (!CPU_ISSET(processor, &allowed) || occupied.contains(processor)) continue;
    const cpu_set_t target = single_processor_mask(processor);
    // A mask without the current processor migrates the thread before the call returns.
    if (sched_setaffinity(0, sizeof(target), &target) == 0) {
      sched_setaffinity(0, sizeof(allowed), &allowed);
    }
    return;
  }
#else
  static_cast<void>(occupied);
#endif
}

}  // namespace flowmatch::detail
