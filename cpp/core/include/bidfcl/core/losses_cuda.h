// CUDA launchers for the decision losses of losses.h. Same Params structs (all pointers in device
// memory, grad_output included); num_threads is ignored. Each launcher runs on the given stream,
// with scratch memory from `ws`.
//
// Bad input (check = true): the kernels mark the first bad row (atomicMin) and the first bad lam
// entry; one single-thread kernel examines them with the CPU core's own checks (check_lam_entry,
// check_decision_row of losses.h) and writes the status record of status_record.h; the launcher
// reads that record back (one device-to-host copy, one sync) and returns its Status, which the glue
// raises exactly as it raises the CPU core's. Sums are deterministic: fixed grids and tree
// reductions in a fixed order.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "bidfcl/core/device_workspace.h"
#include "bidfcl/core/losses.h"

namespace bidfcl::core {

// check = false: no host read or synchronisation at all (the error record is not read back); bad
// rows still contribute nothing, so bad input gives an unspecified loss or gradient, never a
// fault. validate_decision_record_cuda reports it lazily.
template <typename T>
Status ppl_loss_forward_cuda(const PplLossParams<T>& p, DeviceWorkspace& ws, cudaStream_t s, bool check = true);
template <typename T>
Status ppl_loss_gradient_cuda(const PplGradientParams<T>& p, DeviceWorkspace& ws, cudaStream_t s, bool check = true);
template <typename T>
Status pifd_loss_forward_cuda(const PifdLossParams<T>& p, DeviceWorkspace& ws, cudaStream_t s, bool check = true);
template <typename T>
Status pifd_loss_gradient_cuda(const PifdGradientParams<T>& p, DeviceWorkspace& ws, cudaStream_t s, bool check = true);

// Lazy validation of the decision inputs, no host read: writes the status record of
// status_record.h (family kFamilyDecision) into `status` (device, kStatusLen int64). The first
// finding in the eager order: treatment labels (the Python wrapper's check), lam, then the first
// bad row, examined like the CPU core (check_decision_row).
template <typename T>
void validate_decision_record_cuda(const DecisionBatch<T>& in, int64_t* status, DeviceWorkspace& ws, cudaStream_t s);

}  // namespace bidfcl::core
