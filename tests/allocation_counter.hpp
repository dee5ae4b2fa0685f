// Counting heap allocations in a test program: include this header first, before anything that
// includes Eigen, in exactly one translation unit of the program.
//
// Eigen allocates with malloc and, with EIGEN_RUNTIME_NO_MALLOC, reports an allocation made
// while Eigen::internal::set_is_malloc_allowed(false) holds through eigen_assert, which release
// builds compile out; here eigen_assert counts its failures instead (eigen_allocations), in
// every build type. Every other allocation goes through operator new, which this header
// replaces to count the calls (operator_new_calls) while `counting` is set (not under
// AddressSanitizer, which replaces it itself: there only Eigen's are counted).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace flowmatch_test::allocation_counter {

// Counted from worker threads (ParallelField, the trainer's pool) too.
inline std::atomic<bool> counting = false;
inline std::atomic<std::size_t> operator_new_calls = 0;
inline std::atomic<std::size_t> eigen_allocations = 0;

inline void record_failed_eigen_assertion() {
  ++eigen_allocations;
}

}  // namespace flowmatch_test::allocation_counter

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FLOWMATCH_TEST_UNDER_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define FLOWMATCH_TEST_UNDER_ASAN 1
#endif

#ifndef FLOWMATCH_TEST_UNDER_ASAN
void* operator new(std::size_t size) {
  if (flowmatch_test::allocation_counter::counting) {
    ++flowmatch_test::allocation_counter::operator_new_calls;
  }
  if (void* memory = std::malloc(size > 0 ? size : 1)) return memory;
  throw std::bad_alloc();
}
// GCC inlines these into delete expressions and then sees free() of memory from new.
[[gnu::noinline]] void operator delete(void* memory) noexcept {
  std::free(memory);
}
[[gnu::noinline]] void operator delete(void* memory, std::size_t) noexcept {
  std::free(memory);
}
#endif

#define EIGEN_RUNTIME_NO_MALLOC
#define eigen_assert(condition) \
  ((condition) ? void(0) : flowmatch_test::allocation_counter::record_failed_eigen_assertion())
#include "flowmatch/detail/eigen_core.hpp"

namespace flowmatch_test {

/// The heap allocations made by @p action: Eigen's (always counted) plus the calls of
/// operator new (not under AddressSanitizer).
template <class Action>
std::size_t allocations_during(Action&& action) {
  namespace counter = allocation_counter;
  counter::operator_new_calls = 0;
  counter::eigen_allocations = 0;
  counter::counting = true;
  Eigen::internal::set_is_malloc_allowed(false);
  struct Restore {
    ~Restore() {
      Eigen::internal::set_is_malloc_allowed(true);
      counter::counting = false;
    }
  } restore;
  action();
  return counter::operator_new_calls + counter::eigen_allocations;
}

}  // namespace flowmatch_test
