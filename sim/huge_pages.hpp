#pragma once
// Room for the per-flow arrays of a large exchange, backed by transparent huge pages where the
// kernel offers them on request (Linux, THP mode "madvise"). The flow model walks millions of
// flows in link order, so most reads land on a page of their own: with 4 KiB pages nearly
// every one also misses the TLB; 2 MiB pages cut those walks. Only the memory layout changes,
// never a value.
#include <cstddef>
#include <cstdint>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace moesim {

// Reserves room for `n` elements; when that allocates a block of at least `kHugeFrom` bytes,
// asks for huge pages over its 2 MiB-aligned interior before anything touches it (pages
// already touched stay small, so later calls that fit in the block change nothing).
template <class T>
void reserve_huge(std::vector<T>& v, std::size_t n) {
  if (n <= v.capacity()) return;
  v.reserve(n);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr std::size_t kHuge = std::size_t{2} << 20, kHugeFrom = 2 * kHuge;
  const std::size_t bytes = v.capacity() * sizeof(T);
  if (bytes < kHugeFrom) return;
  const auto begin = reinterpret_cast<std::uintptr_t>(v.data());
  const std::uintptr_t from = (begin + kHuge - 1) & ~(kHuge - 1), to = (begin + bytes) & ~(kHuge - 1);
  // Advice only: a kernel without THP refuses it, and the memory works as before.
  if (to > from) (void)madvise(reinterpret_cast<void*>(from), to - from, MADV_HUGEPAGE);
#endif
}

// resize() through reserve_huge.
template <class T>
void resize_huge(std::vector<T>& v, std::size_t n) {
  reserve_huge(v, n);
  v.resize(n);
}

}  // namespace moesim
