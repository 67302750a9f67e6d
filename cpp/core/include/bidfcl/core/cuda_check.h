// CUDA runtime failures in the core launchers: one check, shared by every .cu file. A failure is
// not bad input (that is a Status) but a broken device or launch: it throws std::runtime_error.
#pragma once

#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace bidfcl::core {

inline void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("bidfcl: CUDA error in ") + what + ": " + cudaGetErrorString(e));
}

}  // namespace bidfcl::core

#define BIDFCL_CUDA_CHECK(expr) ::bidfcl::core::cuda_check((expr), #expr)
#define BIDFCL_LAUNCH_CHECK(name) ::bidfcl::core::cuda_check(cudaGetLastError(), name)
