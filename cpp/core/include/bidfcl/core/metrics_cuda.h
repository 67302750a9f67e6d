// CUDA launchers for the metrics of metrics.h. Same Params structs (all pointers in device memory);
// num_threads is ignored; work runs on the given stream with scratch memory from `ws`. Bad input is
// found by the kernels (first bad row by atomicMin), examined on the device with the CPU core's row
// checks (check_policy_row, check_aucc_row) into a status record (status_record.h), read back once
// and returned as the same Status the CPU core returns.
#pragma once

#include <cuda_runtime_api.h>

#include "bidfcl/core/device_workspace.h"
#include "bidfcl/core/metrics.h"

namespace bidfcl::core {

template <typename T>
Status policy_value_estimate_cuda(const PolicyValueParams<T>& p, DeviceWorkspace& ws, cudaStream_t s);
template <typename T>
Status aucc_curve_cuda(const AuccParams<T>& p, DeviceWorkspace& ws, cudaStream_t s);

}  // namespace bidfcl::core
