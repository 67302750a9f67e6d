// Every bidfcl operator schema, in one place. Implementations are registered per dispatch key in
// cpp/torch/cpu/*.cpp and cpp/torch/cuda/*; fake (meta) kernels and autograd live in
// python/bidfcl/_ops.py. Conventions shared by all ops:
//   - float inputs are float32 or float64 (one dtype per call); integer labels are int64;
//   - money totals (spend, value, bounds) come back as float64 whatever the input dtype, because
//     they are sums over up to 1e8 individuals;
//   - lam comes back in the input dtype: it is one of the exact breakpoints computed from it.
#include <torch/library.h>

TORCH_LIBRARY(bidfcl, m) {
  // ---- allocation solvers (multiple-choice knapsack, METHOD.md section 1) ----------------------
  // values, costs: [N, M]; budgets: float64 [K] total budgets. choice: int64 [K, N].
  m.def("solve_mckp(Tensor values, Tensor costs, Tensor budgets) -> "
        "(Tensor lam, Tensor choice, Tensor spend, Tensor value, Tensor dual_bound, Tensor feasible)");
  m.def("solve_mckp_bisection(Tensor values, Tensor costs, Tensor budgets, int max_iter, float tol) -> "
        "(Tensor lam, Tensor choice, Tensor spend, Tensor value, Tensor dual_bound, Tensor feasible)");
  // The whole budget curve: point 0 is the cheapest policy, point k applies the k-th upgrade.
  m.def("budget_frontier(Tensor values, Tensor costs) -> (Tensor lam, Tensor spend, Tensor value)");
  // RCT-calibrated solve: treatment int64 [N]; cost_obs, propensity (of the row's own arm): [N];
  // budgets: float64 [K] per-capita budgets. spend: float64 [K] IPW estimate of per-capita spend.
  m.def("solve_mckp_rct(Tensor values, Tensor costs, Tensor treatment, Tensor cost_obs, "
        "Tensor propensity, Tensor budgets) -> (Tensor lam, Tensor choice, Tensor spend, Tensor feasible)");

  // ---- decision losses, estimators and metrics (METHOD.md sections 2-3) ------------------------
  // r_hat, c_hat: [N, M >= 2]; treatment int64 [N]; revenue, propensity (of the row's own arm) and
  // the optional cost: [N]; lam: [L >= 1] multipliers (constants). Scores a_l = r_hat - lam[l] c_hat;
  // reward = revenue, or revenue - lam[l] cost when cost is given (DFCL's dual losses). Losses are
  // 0-d in the input dtype, summed over the lam grid; backward ops take the upstream gradient
  // `grad` (one element) and return (grad_r_hat, grad_c_hat).
  // Softmax policy loss (PPL; DPL/MER with cost): -sum_l (1/N) sum_i softmax(a_l/tau)[i,t_i] reward/p.
  m.def("ppl_loss(Tensor r_hat, Tensor c_hat, Tensor treatment, Tensor revenue, Tensor? cost, Tensor lam, "
        "Tensor propensity, float tau) -> Tensor");
  m.def("ppl_loss_backward(Tensor grad, Tensor r_hat, Tensor c_hat, Tensor treatment, Tensor revenue, "
        "Tensor? cost, Tensor lam, Tensor propensity, float tau) -> (Tensor grad_r_hat, Tensor grad_c_hat)");
  // Exact discrete decision loss of the argmax policy (PIFD; DIFD with cost); its backward is the
  // flip-based finite-difference estimate (METHOD.md section 3), optional clip h > 0.
  // (clip is unused by the forward; it is an input so that the registered autograd can see it.)
  m.def("pifd_loss(Tensor r_hat, Tensor c_hat, Tensor treatment, Tensor revenue, Tensor? cost, Tensor lam, "
        "Tensor propensity, float? clip) -> Tensor");
  m.def("pifd_loss_backward(Tensor grad, Tensor r_hat, Tensor c_hat, Tensor treatment, Tensor revenue, "
        "Tensor? cost, Tensor lam, Tensor propensity, float? clip) -> (Tensor grad_r_hat, Tensor grad_c_hat)");
  // Fused forward (CPU): the loss and its gradient for a unit upstream gradient, in one pass; the
  // loss is bit for bit the forward op's, the gradients the backward op's with grad = 1. Autograd
  // of ppl_loss / pifd_loss on CPU calls these and saves the gradients (python/bidfcl/_ops.py).
  m.def("ppl_loss_with_grad(Tensor r_hat, Tensor c_hat, Tensor treatment, Tensor revenue, Tensor? cost, "
        "Tensor lam, Tensor propensity, float tau) -> (Tensor loss, Tensor grad_r_hat, Tensor grad_c_hat)");
  m.def("pifd_loss_with_grad(Tensor r_hat, Tensor c_hat, Tensor treatment, Tensor revenue, Tensor? cost, "
        "Tensor lam, Tensor propensity, float? clip) -> (Tensor loss, Tensor grad_r_hat, Tensor grad_c_hat)");
  // IPW (or Hajek) per-capita revenue and cost of K policies, with standard errors: float64 [K] each.
  m.def("policy_value(Tensor choice, Tensor treatment, Tensor revenue, Tensor cost, Tensor propensity, "
        "bool hajek) -> (Tensor value, Tensor cost_value, Tensor value_se, Tensor cost_se)");
  // AUCC of the ROI ranking for two options; curves are float64 [q + 1] (cost, revenue) points.
  m.def("aucc(Tensor r_hat, Tensor c_hat, Tensor treatment, Tensor revenue, Tensor cost, int q) -> "
        "(Tensor aucc, Tensor cost_curve, Tensor revenue_curve)");

  // ---- implicit differentiation helpers (METHOD.md section 4) ----------------------------------
  // (implicit family: schemas go here, if any; the CG driver itself is a pybind11 helper in _C)
}
