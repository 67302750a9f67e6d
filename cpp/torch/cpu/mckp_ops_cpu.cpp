// CPU glue for the MCKP solver ops: check -> Params -> core (the checks and params: mckp_ops.h).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../lazy_status.h"
#include "../mckp_ops.h"

namespace bidfcl::mckp {
namespace {

// check = false: bad input is not raised (validate_mckp reports it lazily); the outputs are then
// zeros (feasible false). Valid input gives the same outputs as check = true: the same core call.
template <typename Outputs>
void raise_or_zero(const core::Status& st, bool check, Outputs& o, const char* other_name = "input") {
  if (check) checks::raise_if_error(st, "values", "costs", other_name);
  if (st.ok()) return;
  for (at::Tensor* t : {&o.lam, &o.choice, &o.spend, &o.feasible}) t->zero_();
  if constexpr (requires { o.dual_bound; }) {
    o.value.zero_();
    o.dual_bound.zero_();
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> solve_mckp_cpu(
    const at::Tensor& values, const at::Tensor& costs, const at::Tensor& budgets, bool check) {
  const SolveInputs in = solve_inputs(values, costs, budgets, check);
  SolveOutputs o = alloc_solve_outputs(in.values, in.limits.size(0));
  AT_DISPATCH_FLOATING_TYPES(in.values.scalar_type(), "bidfcl::solve_mckp", [&] {
    raise_or_zero(core::run_solve_mckp_cpu<scalar_t>(make_solve_params<scalar_t>(in, o, at::get_num_threads())), check,
                  o);
  });
  return o.tuple();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> solve_mckp_bisection_cpu(
    const at::Tensor& values, const at::Tensor& costs, const at::Tensor& budgets, int64_t max_iter, double tol) {
  const SolveInputs in = solve_inputs(values, costs, budgets);
  check_bisection_args(max_iter, tol);
  SolveOutputs o = alloc_solve_outputs(in.values, in.limits.size(0));
  AT_DISPATCH_FLOATING_TYPES(in.values.scalar_type(), "bidfcl::solve_mckp_bisection", [&] {
    core::MckpBisectionParams<scalar_t> p;
    p.out = make_solve_params<scalar_t>(in, o, at::get_num_threads());
    p.max_iter = max_iter;
    p.tol = tol;
    checks::raise_if_error(core::run_solve_mckp_bisection_cpu<scalar_t>(p));
  });
  return o.tuple();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> budget_frontier_cpu(const at::Tensor& values_in,
                                                                   const at::Tensor& costs_in) {
  check_solver_problem(values_in, costs_in);
  const at::Tensor values = values_in.contiguous(), costs = costs_in.contiguous();
  at::Tensor lam, spend, value;
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "bidfcl::budget_frontier", [&] {
    core::FrontierResult<scalar_t> r;
    checks::raise_if_error(
        core::run_budget_frontier_cpu<scalar_t>(make_input<scalar_t>(values, costs, at::get_num_threads()), r));
    const int64_t len = static_cast<int64_t>(r.lam.size());
    lam = at::empty({len}, values.options());
    spend = at::empty({len}, values.options().dtype(at::kDouble));
    value = at::empty({len}, values.options().dtype(at::kDouble));
    std::copy(r.lam.begin(), r.lam.end(), lam.data_ptr<scalar_t>());
    std::copy(r.spend.begin(), r.spend.end(), spend.data_ptr<double>());
    std::copy(r.value.begin(), r.value.end(), value.data_ptr<double>());
  });
  return {lam, spend, value};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> solve_mckp_rct_cpu(
    const at::Tensor& values, const at::Tensor& costs, const at::Tensor& treatment, const at::Tensor& cost_obs,
    const at::Tensor& propensity, const at::Tensor& budgets, bool check) {
  const RctInputs in = rct_inputs(values, costs, treatment, cost_obs, propensity, budgets, check);
  RctOutputs o = alloc_rct_outputs(in.values, in.limits.size(0));
  AT_DISPATCH_FLOATING_TYPES(in.values.scalar_type(), "bidfcl::solve_mckp_rct", [&] {
    auto p = make_rct_params<scalar_t>(in, o, at::get_num_threads());
    raise_or_zero(core::run_solve_mckp_rct_cpu<scalar_t>(p), check, o, "cost_obs");
  });
  return o.tuple();
}

// The lazy check of solve_mckp (treatment etc. None) or solve_mckp_rct: metadata errors raise at
// once (no data is read for them); the first value error becomes the status record.
at::Tensor validate_mckp_cpu(const at::Tensor& values, const at::Tensor& costs, const at::Tensor& budgets,
                             const std::optional<at::Tensor>& treatment, const std::optional<at::Tensor>& cost_obs,
                             const std::optional<at::Tensor>& propensity) {
  const ValidateInputs in = validate_inputs(values, costs, budgets, treatment, cost_obs, propensity);
  const int64_t n = in.values.size(0), m = in.values.size(1);
  lazy::Record rec;
  AT_DISPATCH_FLOATING_TYPES(in.values.scalar_type(), "bidfcl::validate_mckp", [&] {
    if (in.rct) rec = lazy::check_labels(in.treatment.data_ptr<int64_t>(), n, m);
    if (rec.ok()) rec = lazy::check_budget_values(in.budgets.data_ptr<double>(), in.budgets.size(0));
    if (rec.ok()) rec = lazy::check_cells(in.values.data_ptr<scalar_t>(), in.costs.data_ptr<scalar_t>(), n, m);
    if (rec.ok() && in.rct)
      rec = lazy::check_rct_rows(in.propensity.data_ptr<scalar_t>(), in.cost_obs.data_ptr<scalar_t>(), n);
  });
  return lazy::to_tensor(rec, in.rct ? core::kFamilyRct : core::kFamilySolve);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> mckp_events_cpu(
    const at::Tensor& values_in, const at::Tensor& costs_in, const std::optional<at::Tensor>& treatment_in,
    const std::optional<at::Tensor>& weight_in) {
  check_solver_problem(values_in, costs_in);
  const int64_t n = values_in.size(0);
  TORCH_CHECK(treatment_in.has_value() == weight_in.has_value(),
              "bidfcl: mckp_events needs both treatment and weight, or neither");
  at::Tensor treatment, weight;
  if (treatment_in.has_value()) {
    treatment = *treatment_in;
    weight = *weight_in;
    checks::check_defined(treatment, "treatment");
    TORCH_CHECK(treatment.scalar_type() == at::kLong, "bidfcl: treatment must be int64, got ", treatment.scalar_type());
    checks::check_length(treatment, n, "treatment", "individual (row of values)");
    checks::check_defined(weight, "weight");
    TORCH_CHECK(weight.scalar_type() == at::kDouble, "bidfcl: weight must be float64, got ", weight.scalar_type());
    checks::check_length(weight, n, "weight", "individual (row of values)");
    checks::check_same_device(values_in, treatment, "values", "treatment");
    checks::check_same_device(values_in, weight, "values", "weight");
    treatment = treatment.contiguous();
    weight = weight.contiguous();
  }
  const at::Tensor values = values_in.contiguous(), costs = costs_in.contiguous();
  at::Tensor bp, id, delta, base;
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "bidfcl::mckp_events", [&] {
    core::MckpEventsParams<scalar_t> p;
    p.in = make_input<scalar_t>(values, costs, at::get_num_threads());
    if (treatment.defined()) {
      p.treatment = treatment.data_ptr<int64_t>();
      p.weight = weight.data_ptr<double>();
    }
    core::EventList<scalar_t> ev;
    checks::raise_if_error(core::run_mckp_events_cpu<scalar_t>(p, ev));
    const int64_t e = static_cast<int64_t>(ev.bp.size());
    bp = at::empty({e}, values.options());
    id = at::empty({e}, values.options().dtype(at::kLong));
    delta = at::empty({e}, values.options().dtype(at::kDouble));
    std::copy(ev.bp.begin(), ev.bp.end(), bp.data_ptr<scalar_t>());
    std::copy(ev.id.begin(), ev.id.end(), id.data_ptr<int64_t>());
    std::copy(ev.delta.begin(), ev.delta.end(), delta.data_ptr<double>());
    base = at::full({}, ev.base, values.options().dtype(at::kDouble));
  });
  return {bp, id, delta, base};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> apply_mckp_cut_cpu(const at::Tensor& values_in,
                                                                              const at::Tensor& costs_in,
                                                                              const at::Tensor& lam_in,
                                                                              const at::Tensor& individual_in,
                                                                              const at::Tensor& step_in) {
  check_solver_problem(values_in, costs_in);
  checks::check_float(lam_in, "lam");
  checks::check_same_dtype(values_in, lam_in, "values", "lam");
  TORCH_CHECK(lam_in.dim() == 1 && lam_in.size(0) >= 1, "bidfcl: lam must be 1-D [K >= 1] (one per cut), got shape ",
              checks::shape_str(lam_in));
  const int64_t k = lam_in.size(0);
  for (auto [t, name] : {std::pair{&individual_in, "individual"}, std::pair{&step_in, "step"}}) {
    checks::check_defined(*t, name);
    TORCH_CHECK(t->scalar_type() == at::kLong, "bidfcl: ", name, " must be int64, got ", t->scalar_type());
    checks::check_length(*t, k, name, "cut (entry of lam)");
  }
  const at::Tensor values = values_in.contiguous(), costs = costs_in.contiguous();
  const at::Tensor lam = lam_in.to(at::kCPU).contiguous(), individual = individual_in.to(at::kCPU).contiguous();
  const at::Tensor step = step_in.to(at::kCPU).contiguous();
  const auto opts = values.options();
  at::Tensor choice = at::empty({k, values.size(0)}, opts.dtype(at::kLong));
  at::Tensor spend = at::empty({k}, opts.dtype(at::kDouble)), value = at::empty({k}, opts.dtype(at::kDouble));
  at::Tensor lagrangian = at::empty({k}, opts.dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "bidfcl::apply_mckp_cut", [&] {
    std::vector<core::Cut<scalar_t>> cuts(k);
    for (int64_t q = 0; q < k; ++q) {
      cuts[q].lam = lam.data_ptr<scalar_t>()[q];
      cuts[q].individual = individual.data_ptr<int64_t>()[q];
      cuts[q].step = step.data_ptr<int64_t>()[q];
    }
    core::MckpApplyParams<scalar_t> p;
    p.in = make_input<scalar_t>(values, costs, at::get_num_threads());
    p.cuts = cuts.data();
    p.k = k;
    p.choice = choice.data_ptr<int64_t>();
    p.spend = spend.data_ptr<double>();
    p.value = value.data_ptr<double>();
    p.lagrangian = lagrangian.data_ptr<double>();
    checks::raise_if_error(core::run_apply_mckp_cut_cpu<scalar_t>(p));
  });
  return {choice, spend, value, lagrangian};
}

}  // namespace

TORCH_LIBRARY_IMPL(bidfcl, CPU, m) {
  m.impl("solve_mckp", &solve_mckp_cpu);
  m.impl("solve_mckp_bisection", &solve_mckp_bisection_cpu);
  m.impl("budget_frontier", &budget_frontier_cpu);
  m.impl("solve_mckp_rct", &solve_mckp_rct_cpu);
  m.impl("validate_mckp", &validate_mckp_cpu);
  m.impl("mckp_events", &mckp_events_cpu);
  m.impl("apply_mckp_cut", &apply_mckp_cut_cpu);
}

}  // namespace bidfcl::mckp
