// The torch side of core::DeviceWorkspace (bidfcl/core/device_workspace.h), shared by the CUDA glue
// of every family: scratch memory as byte tensors on the op's device. They live until the op
// returns; the caching allocator is stream-ordered, so freeing them while kernels on the current
// stream still use them is safe.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "bidfcl/core/device_workspace.h"

namespace bidfcl {

class TorchWorkspace final : public core::DeviceWorkspace {
 public:
  explicit TorchWorkspace(const at::Device& device) : opts_(at::TensorOptions().dtype(at::kByte).device(device)) {}
  void* allocate(size_t bytes) override {
    blocks_.push_back(at::empty({static_cast<int64_t>(bytes)}, opts_));
    return blocks_.back().data_ptr();
  }

 private:
  at::TensorOptions opts_;
  std::vector<at::Tensor> blocks_;
};

}  // namespace bidfcl
