// CUDA glue for the allocation policy op: the same checks as the CPU glue, then the launcher of
// allocation_cuda.h on the current stream. (The line search and the repair of a CUDA problem are
// composed in python/bidfcl/allocation.py: the device's exact MCKP solver, and the host repair.)
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "../allocation_common.h"
#include "bidfcl/core/allocation_cuda.h"
#include "torch_workspace.h"  // TorchWorkspace: scratch memory for the launcher

namespace bidfcl::allocation {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> allocation_policy_cuda(
    const at::Tensor& values_in, const at::Tensor& costs_in, const std::optional<at::Tensor>& eligible_in,
    const std::optional<at::Tensor>& groups_in, int64_t num_groups, const at::Tensor& lam_in) {
  check_inputs(values_in, costs_in, eligible_in, groups_in, num_groups, lam_in, nullptr);
  const c10::cuda::CUDAGuard guard(values_in.device());
  const at::Tensor values = values_in.contiguous(), costs = costs_in.contiguous(), lam = lam_in.contiguous();
  const at::Tensor eligible = contiguous_or_undefined(eligible_in), groups = contiguous_or_undefined(groups_in);
  const auto opts = values.options();
  at::Tensor choice = at::empty({values.size(0)}, opts.dtype(at::kLong));
  at::Tensor spend = at::empty({lam.size(0)}, opts.dtype(at::kDouble));
  at::Tensor value = at::empty({}, opts.dtype(at::kDouble)), lagrangian = at::empty({}, opts.dtype(at::kDouble));
  at::Tensor perm, offsets;
  if (groups.defined()) {
    // users group by group, ascending inside a group (a stable sort); offsets from the counts
    perm = std::get<1>(at::sort(groups.clamp(0, num_groups - 1), /*stable=*/true, 0, false)).contiguous();
    offsets = at::zeros({num_groups + 1}, groups.options());
    offsets.narrow(0, 1, num_groups).copy_(at::cumsum(at::bincount(groups.clamp(0, num_groups - 1), {}, num_groups), 0));
  }
  TorchWorkspace ws(values.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "bidfcl::allocation_policy", [&] {
    core::AllocationPolicyParams<scalar_t> p;
    p.in = make_input<scalar_t>(values, costs, eligible, groups, num_groups, 1, true);
    p.lam = lam.data_ptr<double>();
    p.choice = choice.data_ptr<int64_t>();
    p.spend = spend.data_ptr<double>();
    p.value = value.data_ptr<double>();
    p.lagrangian = lagrangian.data_ptr<double>();
    raise_if_error(core::allocation_policy_cuda<scalar_t>(p, perm.defined() ? perm.data_ptr<int64_t>() : nullptr,
                                                          offsets.defined() ? offsets.data_ptr<int64_t>() : nullptr,
                                                          ws, stream),
                   values.size(1));
  });
  return {choice, spend, value, lagrangian};
}

}  // namespace

TORCH_LIBRARY_IMPL(bidfcl, CUDA, m) { m.impl("allocation_policy", &allocation_policy_cuda); }

}  // namespace bidfcl::allocation
