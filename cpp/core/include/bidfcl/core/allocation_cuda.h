// CUDA launcher for the per-user step of allocation.h (the Lagrangian policy and its totals).
// Torch-free: device pointers, a stream and a caller-provided workspace (see mckp_cuda.h).
//
// Same inputs, outputs and semantics as run_allocation_policy_cpu, with these differences:
//   - every pointer in the params is a DEVICE pointer (lam included);
//   - group spends need the users ordered by group: group_perm [n] lists the users group by group
//     (users ascending inside a group) and group_offsets [g + 1] where each group starts;
//   - float64 totals use fixed reduction trees (block size and grid depend only on n), so they are
//     deterministic and agree with the CPU to rounding; counts use integer atomics (exact);
//     choices are bit-identical to the CPU (scores use explicitly rounded products, no FMA).
// Bad input: the first offending user is found on the device and its row is checked on the host,
// so the Status names the same entry as the CPU.
#pragma once

#include <cuda_runtime_api.h>

#include "bidfcl/core/allocation.h"
#include "bidfcl/core/mckp_cuda.h"
#include "bidfcl/core/status.h"

namespace bidfcl::core {

template <typename T>
Status run_allocation_policy_cuda(const AllocationPolicyParams<T>& p, const int64_t* group_perm,
                                  const int64_t* group_offsets, DeviceWorkspace& ws, cudaStream_t stream);

// Host check of one user's row (values, costs, eligibility, group), as the CPU routines do it;
// `in` points at host copies holding that single user (n = 1); the returned row is `row`.
template <typename T>
Status allocation_check_row_host(const AllocationInput<T>& in, int64_t row);

}  // namespace bidfcl::core
