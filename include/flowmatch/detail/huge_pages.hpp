/// @file huge_pages.hpp
/// @brief Advice to back a large, not yet touched buffer with transparent huge pages
/// (internal).
///
/// A buffer of many megabytes that is written once and then streamed (a Sinkhorn kernel) pays
/// one page fault per 4 KiB page on its first write; on a virtual machine a fault can cost tens
/// of microseconds, more than the arithmetic on the page. With 2 MiB pages there are 512 times
/// fewer faults. On Linux, madvise(MADV_HUGEPAGE) asks for them where transparent huge pages
/// are enabled "always" or "madvise"; elsewhere the advice is a no-op. It never changes the
/// contents or the meaning of the buffer, and a refusal is ignored.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace flowmatch::detail {

/// Buffers smaller than this are left alone: they span few pages and are usually recycled by
/// the allocator without faults.
inline constexpr std::size_t kHugePageAdviceMinimumBytes = std::size_t{4} << 20;

/// Advises the kernel to back the whole pages inside [data, data + bytes) with huge pages;
/// call it before the first write to the buffer.
inline void advise_huge_pages([[maybe_unused]] void* data, [[maybe_unused]] std::size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (bytes < kHugePageAdviceMinimumBytes) return;
  constexpr std::uintptr_t page = 4096;
  const auto begin = reinterpret_cast<std::uintptr_t>(data);
  const std::uintptr_t first = (begin + page - 1) & ~(page - 1);
  const std::uintptr_t last = (begin + bytes) & ~(page - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
#endif
}

}  // namespace flowmatch::detail
