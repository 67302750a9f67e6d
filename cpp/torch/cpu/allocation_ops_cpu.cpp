// CPU glue for the allocation ops: check -> Params -> core (allocation.h; checks and params:
// allocation_ops.h).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../allocation_ops.h"

namespace bidfcl::allocation {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> allocation_policy_cpu(
    const at::Tensor& values, const at::Tensor& costs, const std::optional<at::Tensor>& eligible,
    const std::optional<at::Tensor>& groups, int64_t num_groups, const at::Tensor& lam) {
  const PolicyInputs in = policy_inputs(values, costs, eligible, groups, num_groups, lam);
  PolicyOutputs o = alloc_policy_outputs(in);
  AT_DISPATCH_FLOATING_TYPES(in.values.scalar_type(), "bidfcl::allocation_policy", [&] {
    raise_if_error(
        core::run_allocation_policy_cpu<scalar_t>(make_policy_params<scalar_t>(in, o, at::get_num_threads())),
        in.values.size(1));
  });
  return o.tuple();
}

at::Tensor allocation_line_search_cpu(const at::Tensor& values_in, const at::Tensor& costs_in,
                                      const std::optional<at::Tensor>& eligible_in,
                                      const std::optional<at::Tensor>& groups_in, int64_t num_groups,
                                      const at::Tensor& lam_in, const at::Tensor& budgets_in, int64_t constraint,
                                      bool check) {
  check_inputs(values_in, costs_in, eligible_in, groups_in, num_groups, lam_in, &budgets_in);
  TORCH_CHECK_VALUE(constraint >= 0 && constraint < lam_in.size(0), "bidfcl: constraint must be in [0, ",
                    lam_in.size(0), "), got ", constraint);
  const at::Tensor values = values_in.contiguous(), costs = costs_in.contiguous(), lam = lam_in.contiguous();
  const at::Tensor budgets = mckp::budget_limits(budgets_in.contiguous());  // the solver's slack, as the ops apply it
  const at::Tensor eligible = contiguous_or_undefined(eligible_in), groups = contiguous_or_undefined(groups_in);
  at::Tensor out = at::empty({}, values.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "bidfcl::allocation_line_search", [&] {
    core::AllocationLineSearchParams<scalar_t> p;
    p.in = make_input<scalar_t>(values, costs, eligible, groups, num_groups, at::get_num_threads(), check);
    p.lam = lam.data_ptr<double>();
    p.budgets = budgets.data_ptr<double>();
    p.constraint = constraint;
    p.lam_out = out.data_ptr<double>();
    raise_if_error(core::run_allocation_line_search_cpu<scalar_t>(p), values.size(1));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> allocation_repair_cpu(
    const at::Tensor& values_in, const at::Tensor& costs_in, const std::optional<at::Tensor>& eligible_in,
    const std::optional<at::Tensor>& groups_in, int64_t num_groups, const at::Tensor& lam_in,
    const at::Tensor& budgets_in, const at::Tensor& choice_in, bool fill, bool check) {
  check_inputs(values_in, costs_in, eligible_in, groups_in, num_groups, lam_in, &budgets_in);
  TORCH_CHECK_VALUE(choice_in.scalar_type() == at::kLong, "bidfcl: choice must be int64, got ",
                    choice_in.scalar_type());
  TORCH_CHECK_VALUE(choice_in.dim() == 1 && choice_in.size(0) == values_in.size(0), "bidfcl: choice must have shape [",
                    values_in.size(0), "] (one option per user), got ", checks::shape_str(choice_in));
  checks::check_same_device(values_in, choice_in, "values", "choice");
  const at::Tensor values = values_in.contiguous(), costs = costs_in.contiguous(), lam = lam_in.contiguous();
  const at::Tensor budgets = mckp::budget_limits(budgets_in.contiguous());  // the solver's slack, as the ops apply it
  const at::Tensor eligible = contiguous_or_undefined(eligible_in), groups = contiguous_or_undefined(groups_in);
  const auto opts = values.options();
  at::Tensor choice = choice_in.clone(at::MemoryFormat::Contiguous);
  at::Tensor spend = at::empty({lam.size(0)}, opts.dtype(at::kDouble));
  at::Tensor value = at::empty({}, opts.dtype(at::kDouble));
  at::Tensor feasible = at::empty({lam.size(0)}, opts.dtype(at::kBool));
  at::Tensor moves = at::zeros({2}, opts.dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "bidfcl::allocation_repair", [&] {
    core::AllocationRepairParams<scalar_t> p;
    p.in = make_input<scalar_t>(values, costs, eligible, groups, num_groups, at::get_num_threads(), check);
    p.lam = lam.data_ptr<double>();
    p.budgets = budgets.data_ptr<double>();
    p.fill = fill;
    p.choice = choice.data_ptr<int64_t>();
    p.spend = spend.data_ptr<double>();
    p.value = value.data_ptr<double>();
    p.feasible = feasible.data_ptr<bool>();
    p.moves = moves.data_ptr<int64_t>();
    raise_if_error(core::run_allocation_repair_cpu<scalar_t>(p), values.size(1));
  });
  return {choice, spend, value, feasible, moves};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> allocation_smoothed_cpu(
    const at::Tensor& values_in, const at::Tensor& costs_in, const std::optional<at::Tensor>& eligible_in,
    const std::optional<at::Tensor>& groups_in, int64_t num_groups, const at::Tensor& lam_in, double tau, bool check) {
  check_inputs(values_in, costs_in, eligible_in, groups_in, num_groups, lam_in, nullptr);
  TORCH_CHECK_VALUE(std::isfinite(tau) && tau > 0, "bidfcl: tau must be finite and > 0, got ", tau);
  const int64_t J = lam_in.size(0);
  TORCH_CHECK_VALUE(J <= core::kMaxSmoothedConstraints, "bidfcl: the smoothed dual supports at most ",
                    core::kMaxSmoothedConstraints, " constraints (K + M + K G), got ", J);
  const at::Tensor values = values_in.contiguous(), costs = costs_in.contiguous(), lam = lam_in.contiguous();
  const at::Tensor eligible = contiguous_or_undefined(eligible_in), groups = contiguous_or_undefined(groups_in);
  const auto opts = values.options().dtype(at::kDouble);
  at::Tensor smoothed = at::empty({}, opts), lagrangian = at::empty({}, opts);
  at::Tensor expected = at::empty({J}, opts), hessian = at::empty({J, J}, opts);
  at::Tensor soft = at::empty({}, opts.dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "bidfcl::allocation_smoothed", [&] {
    core::AllocationSmoothedParams<scalar_t> p;
    p.in = make_input<scalar_t>(values, costs, eligible, groups, num_groups, at::get_num_threads(), check);
    p.lam = lam.data_ptr<double>();
    p.tau = tau;
    p.smoothed = smoothed.data_ptr<double>();
    p.lagrangian = lagrangian.data_ptr<double>();
    p.expected = expected.data_ptr<double>();
    p.hessian = hessian.data_ptr<double>();
    p.soft = soft.data_ptr<int64_t>();
    raise_if_error(core::run_allocation_smoothed_cpu<scalar_t>(p), values.size(1));
  });
  return {smoothed, lagrangian, expected, hessian, soft};
}

}  // namespace

TORCH_LIBRARY_IMPL(bidfcl, CPU, m) {
  m.impl("allocation_policy", &allocation_policy_cpu);
  m.impl("allocation_line_search", &allocation_line_search_cpu);
  m.impl("allocation_repair", &allocation_repair_cpu);
  m.impl("allocation_smoothed", &allocation_smoothed_cpu);
}

}  // namespace bidfcl::allocation
