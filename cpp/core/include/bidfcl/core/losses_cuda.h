// CUDA launchers for the ops of losses.h. Same Params structs (all pointers in device memory,
// grad_output included); num_threads is ignored. Each launcher runs on the given stream.
//
// Bad input is detected on the device (first offending row, by atomicMin) and reported with one
// device-to-host copy at the end: the launcher then returns a Status whose code is not kOk and whose
// row is that first row; the torch glue re-runs the CPU routine on that row's data to build the same
// message as the CPU op. Sums are deterministic: fixed grids and tree reductions in a fixed order.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <functional>

#include "bidfcl/core/losses.h"

namespace bidfcl::core {

// Device scratch memory that stays valid until the op returns (the glue backs it by tensors).
using DeviceAlloc = std::function<void*(size_t bytes)>;

// check = false: no host read or synchronisation at all (lam is not inspected on the host, the
// error record is not read back); bad rows still contribute nothing, so bad input gives an
// unspecified loss or gradient, never a fault. validate_decision_cuda reports it lazily.
template <typename T> Status softmax_loss_cuda(const SoftmaxLossParams<T>& p, const DeviceAlloc& alloc, cudaStream_t s,
                                               bool check = true);
template <typename T> Status softmax_loss_backward_cuda(const SoftmaxLossBackwardParams<T>& p, const DeviceAlloc& alloc,
                                                        cudaStream_t s, bool check = true);
template <typename T> Status flip_loss_cuda(const FlipLossParams<T>& p, const DeviceAlloc& alloc, cudaStream_t s,
                                            bool check = true);
template <typename T> Status flip_loss_backward_cuda(const FlipLossBackwardParams<T>& p, const DeviceAlloc& alloc,
                                                     cudaStream_t s, bool check = true);
// Lazy validation of the decision inputs, no host read: writes the status record of
// status_record.h (family kFamilyDecision) into `status` (device, kStatusLen int64). The first
// finding in the eager order: treatment labels (the Python wrapper's check), lam, then the first
// bad row, examined like the CPU core (r_hat/c_hat per option, revenue, cost, propensity).
template <typename T> void validate_decision_cuda(const DecisionBatch<T>& in, int64_t* status, const DeviceAlloc& alloc,
                                                  cudaStream_t s);
template <typename T> Status policy_value_cuda(const PolicyValueParams<T>& p, const DeviceAlloc& alloc, cudaStream_t s);
template <typename T> Status aucc_cuda(const AuccParams<T>& p, const DeviceAlloc& alloc, cudaStream_t s);

}  // namespace bidfcl::core
