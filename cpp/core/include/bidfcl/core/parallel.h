// Deterministic multithreading for the core (no torch, no OpenMP runtime to clash with torch's).
//
// Work is cut into a FIXED number of chunks that depends only on the problem size, never on the
// thread count. Each chunk writes its partial results into its own slot, and the caller combines
// the slots in chunk order. So floating-point reductions give bit-identical results with 1, 2 or
// 64 threads: the threads only decide who computes a chunk, not how sums are grouped.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace bidfcl::core {

// A chunking of [0, n) into num_chunks contiguous ranges of near-equal size.
struct Chunking {
  int64_t n = 0;
  int64_t num_chunks = 0;
  int64_t chunk_size = 1;

  // min_chunk: smallest useful chunk; max_chunks bounds per-chunk scratch memory.
  static Chunking make(int64_t n, int64_t min_chunk = 1 << 14, int64_t max_chunks = 64) {
    Chunking c;
    c.n = n;
    if (n <= 0) return c;
    c.num_chunks = std::clamp<int64_t>((n + min_chunk - 1) / min_chunk, 1, max_chunks);
    c.chunk_size = (n + c.num_chunks - 1) / c.num_chunks;
    c.num_chunks = (n + c.chunk_size - 1) / c.chunk_size;
    return c;
  }
  int64_t begin(int64_t chunk) const { return chunk * chunk_size; }
  int64_t end(int64_t chunk) const { return std::min(n, (chunk + 1) * chunk_size); }
};

// Runs fn(chunk_index) for every chunk on up to num_threads threads (the caller's thread is one of
// them). Exceptions thrown by fn are rethrown on the caller's thread (the first one wins).
template <typename Fn>
void parallel_chunks(int64_t num_chunks, int num_threads, Fn&& fn) {
  if (num_chunks <= 0) return;
  const int workers = static_cast<int>(std::clamp<int64_t>(num_threads, 1, num_chunks));
  if (workers == 1) {
    for (int64_t c = 0; c < num_chunks; ++c) fn(c);
    return;
  }
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&]() {
    try {
      for (int64_t c = next.fetch_add(1); c < num_chunks; c = next.fetch_add(1)) fn(c);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next.store(num_chunks);
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(workers - 1);
  for (int t = 1; t < workers; ++t) threads.emplace_back(work);
  work();
  for (auto& th : threads) th.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace bidfcl::core
