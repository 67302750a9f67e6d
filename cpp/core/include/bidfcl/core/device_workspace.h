// Device scratch memory for the CUDA launchers of every family (mckp_cuda.h, losses_cuda.h,
// metrics_cuda.h): the one abstraction, so the torch glue backs all of them the same way
// (cpp/torch/cuda/torch_workspace.h: caching-allocator tensors).
#pragma once

#include <cstddef>
#include <cstdint>

namespace bidfcl::core {

// allocate() returns at least `bytes` bytes aligned to 256, usable by work enqueued on the
// launcher's stream, and valid until the workspace object is destroyed (which the caller does after
// the launcher returns; stream-ordered allocators make that safe).
class DeviceWorkspace {
 public:
  virtual ~DeviceWorkspace() = default;
  virtual void* allocate(size_t bytes) = 0;
};

// `count` elements of V (at least one, so a pointer is always valid).
template <typename V>
V* workspace_array(DeviceWorkspace& ws, int64_t count) {
  return static_cast<V*>(ws.allocate(static_cast<size_t>(count > 0 ? count : 1) * sizeof(V)));
}

}  // namespace bidfcl::core
