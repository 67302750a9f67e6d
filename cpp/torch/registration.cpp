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
  // (losses family: schemas go here)

  // ---- implicit differentiation helpers (METHOD.md section 4) ----------------------------------
  // (implicit family: schemas go here, if any; the CG driver itself is a pybind11 helper in _C)
}
