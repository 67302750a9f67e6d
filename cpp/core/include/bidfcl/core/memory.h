// Memory advice for the large outputs the CPU solvers fill.
//
// A fresh [K, N] int64 choice tensor (128 MB at K = 16, N = 1e6) is touched for the first time by
// the solve, and Linux then takes one page fault per 4 KiB page: measured on the 2-core machine,
// allocating and filling 128 MB cost 60 ms that way against 17 ms with transparent huge pages, more
// than the 16-budget solve's own work. So the solvers ask for huge pages on such a buffer before
// they write it (madvise MADV_HUGEPAGE), as torch does for its own allocations under
// THP_MEM_ALLOC_ENABLE=1. Advice only: it changes no result, it does nothing where transparent huge
// pages are "never" (the system's switch to turn it off) or already "always", nor off Linux.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace bidfcl::core {

constexpr size_t kHugePageBytes = size_t(2) << 20;

// Advises the whole 2 MiB pages inside [p, p + bytes) and nothing around them, so no memory outside
// the buffer is affected; buffers under two such pages are left alone. Errors are ignored.
inline void advise_huge_pages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (p == nullptr || bytes < 2 * kHugePageBytes) return;
  const uintptr_t start = reinterpret_cast<uintptr_t>(p);
  const uintptr_t begin = (start + kHugePageBytes - 1) & ~(kHugePageBytes - 1);
  const uintptr_t end = (start + bytes) & ~(kHugePageBytes - 1);
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace bidfcl::core
