// Device helpers shared by losses_kernels.cu and metrics_kernels.cu: the fixed launch geometry,
// fixed-order block reductions, and the first-bad-row error record (private to cpp/core/cuda).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "bidfcl/core/cuda_check.h"
#include "bidfcl/core/device_workspace.h"
#include "bidfcl/core/status_record.h"

namespace bidfcl::core::kernels {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 1024;
constexpr unsigned long long kNoRow = ~0ull;  // "no error" in an atomicMin record

// A fixed grid for n rows: depends only on n, so every reduction tree is fixed.
inline int grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 1 ? 1 : (blocks > kMaxBlocks ? kMaxBlocks : blocks));
}

// Sum of one double per thread over the block, in a fixed tree order; every thread gets the result.
__device__ inline double block_sum(double x) {
  __shared__ double buf[kThreads];
  buf[threadIdx.x] = x;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) buf[threadIdx.x] += buf[threadIdx.x + s];
    __syncthreads();
  }
  const double r = buf[0];
  __syncthreads();
  return r;
}

// `count` atomicMin slots set to kNoRow, on the stream.
inline unsigned long long* new_first_rows(DeviceWorkspace& ws, int count, cudaStream_t stream) {
  auto* first = workspace_array<unsigned long long>(ws, count);
  BIDFCL_CUDA_CHECK(cudaMemsetAsync(first, 0xff, count * sizeof(unsigned long long), stream));
  return first;
}

// Copies a status record (written on the device) to the host, waits for the stream and returns the
// record's core Status: the launchers' one synchronisation when they check eagerly.
inline Status read_status_record(const int64_t* record, cudaStream_t stream) {
  int64_t host[kStatusLen];
  BIDFCL_CUDA_CHECK(cudaMemcpyAsync(host, record, sizeof(host), cudaMemcpyDeviceToHost, stream));
  BIDFCL_CUDA_CHECK(cudaStreamSynchronize(stream));
  return from_record(host);
}

}  // namespace bidfcl::core::kernels
