// CUDA glue for the allocation policy op: the checks, outputs and params of allocation_ops.h (as
// the CPU glue), then the launcher of allocation_cuda.h on the current stream (scratch memory:
// torch_workspace.h). (The line search and the repair of a CUDA problem are composed in
// python/bidfcl/allocation.py: the device's exact MCKP solver, and the host repair.)
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "../allocation_ops.h"
#include "bidfcl/core/allocation_cuda.h"
#include "torch_workspace.h"

namespace bidfcl::allocation {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> allocation_policy_cuda(
    const at::Tensor& values, const at::Tensor& costs, const std::optional<at::Tensor>& eligible,
    const std::optional<at::Tensor>& groups_in, int64_t num_groups, const at::Tensor& lam) {
  const PolicyInputs in = policy_inputs(values, costs, eligible, groups_in, num_groups, lam);
  const c10::cuda::CUDAGuard guard(in.values.device());
  PolicyOutputs o = alloc_policy_outputs(in);
  const at::Tensor& groups = in.groups;
  at::Tensor perm, offsets;
  if (groups.defined()) {
    // users group by group, ascending inside a group (a stable sort); offsets from the counts
    perm = std::get<1>(at::sort(groups.clamp(0, num_groups - 1), /*stable=*/true, 0, false)).contiguous();
    offsets = at::zeros({num_groups + 1}, groups.options());
    offsets.narrow(0, 1, num_groups)
        .copy_(at::cumsum(at::bincount(groups.clamp(0, num_groups - 1), {}, num_groups), 0));
  }
  TorchWorkspace ws(in.values.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(in.values.scalar_type(), "bidfcl::allocation_policy", [&] {
    raise_if_error(core::run_allocation_policy_cuda<scalar_t>(
                       make_policy_params<scalar_t>(in, o, 1), perm.defined() ? perm.data_ptr<int64_t>() : nullptr,
                       offsets.defined() ? offsets.data_ptr<int64_t>() : nullptr, ws, stream),
                   in.values.size(1));
  });
  return o.tuple();
}

}  // namespace

TORCH_LIBRARY_IMPL(bidfcl, CUDA, m) { m.impl("allocation_policy", &allocation_policy_cuda); }

}  // namespace bidfcl::allocation
