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
  // check = False (exact solve and RCT solve only): no value checks and, on CUDA, no host read or
  // synchronisation at all, so the call can be captured in a CUDA graph; bad input then gives
  // unspecified outputs, and validate_mckp (below) is how to find it lazily.
  m.def("solve_mckp(Tensor values, Tensor costs, Tensor budgets, bool check=True) -> "
        "(Tensor lam, Tensor choice, Tensor spend, Tensor value, Tensor dual_bound, Tensor feasible)");
  m.def("solve_mckp_bisection(Tensor values, Tensor costs, Tensor budgets, int max_iter, float tol) -> "
        "(Tensor lam, Tensor choice, Tensor spend, Tensor value, Tensor dual_bound, Tensor feasible)");
  // The whole budget curve: point 0 is the cheapest policy, point k applies the k-th upgrade.
  m.def("budget_frontier(Tensor values, Tensor costs) -> (Tensor lam, Tensor spend, Tensor value)");
  // RCT-calibrated solve: treatment int64 [N]; cost_obs, propensity (of the row's own arm): [N];
  // budgets: float64 [K] per-capita budgets. spend: float64 [K] IPW estimate of per-capita spend.
  m.def("solve_mckp_rct(Tensor values, Tensor costs, Tensor treatment, Tensor cost_obs, "
        "Tensor propensity, Tensor budgets, bool check=True) -> (Tensor lam, Tensor choice, Tensor spend, "
        "Tensor feasible)");
  // The lazy check: the first input error that solve_mckp (treatment, cost_obs, propensity None)
  // or solve_mckp_rct (all three given) and their Python wrappers would raise, as an int64 [7]
  // status record on the inputs' device (layout: cpp/core/include/bidfcl/core/status_record.h),
  // computed without any host read. Shape, dtype and device errors raise at once.
  m.def("validate_mckp(Tensor values, Tensor costs, Tensor budgets, Tensor? treatment, Tensor? cost_obs, "
        "Tensor? propensity) -> Tensor status");
  // Building blocks of the sharded (distributed / out-of-core) solves in bidfcl.distributed:
  // the steps of the order as events in (individual, step) order, NOT sorted: bp (input dtype),
  // id = individual * M + step (int64), delta (float64: the spend the step adds, or with
  // treatment int64 [N] and weight float64 [N] the IPW spend estimate it adds, +-w), and base
  // (float64 0-d: the cheapest policy's spend or estimate).
  m.def("mckp_events(Tensor values, Tensor costs, Tensor? treatment, Tensor? weight) -> "
        "(Tensor bp, Tensor id, Tensor delta, Tensor base)");
  // Choices under K cuts: step (i, s) is taken iff bp > lam[k], or bp == lam[k] and
  // (i, s) < (individual[k], step[k]) lexicographically. lam: [K] input dtype; individual, step:
  // int64 [K]. Returns choice int64 [K, N], spend, value and sum_i max_j (r - lam c) (float64 [K]).
  m.def("apply_mckp_cut(Tensor values, Tensor costs, Tensor lam, Tensor individual, Tensor step) -> "
        "(Tensor choice, Tensor spend, Tensor value, Tensor lagrangian)");

  // ---- multi-constraint allocation (cpp/core/include/bidfcl/core/allocation.h) -----------------
  // values [N, M]; costs [K, N, M]; eligible bool [N, M] or None; groups int64 [N] in [0, G) or
  // None with num_groups = G (0 without groups). Constraints j in one float64 vector of length
  // J = K + M + K G: K global resources, M option capacities, then group budgets at K + M + k G + g.
  // lam: float64 [J] multipliers >= 0; budgets: float64 [J] (+inf: no such constraint).
  // The Lagrangian policy and its totals; value and lagrangian (sum_i max_m s_im) are 0-d float64.
  m.def("allocation_policy(Tensor values, Tensor costs, Tensor? eligible, Tensor? groups, int num_groups, "
        "Tensor lam) -> (Tensor choice, Tensor spend, Tensor value, Tensor lagrangian)");
  // Exact minimiser of the dual over lam[constraint] with the other multipliers fixed: 0-d float64
  // (+inf when the constraint cannot be met). check = False skips the per-entry validation (only
  // for inputs already validated by allocation_policy).
  m.def("allocation_line_search(Tensor values, Tensor costs, Tensor? eligible, Tensor? groups, int num_groups, "
        "Tensor lam, Tensor budgets, int constraint, bool check) -> Tensor");
  // The softmax-smoothed dual at temperature tau > 0 (J <= 128): sum_i tau log sum_m exp(s_im/tau),
  // sum_i max_m s_im, expected use [J], Hessian [J, J], number of users with curvature.
  m.def("allocation_smoothed(Tensor values, Tensor costs, Tensor? eligible, Tensor? groups, int num_groups, "
        "Tensor lam, float tau, bool check) -> (Tensor smoothed, Tensor lagrangian, Tensor expected, "
        "Tensor hessian, Tensor soft)");
  // Greedy primal repair (and fill) from `choice`; moves: int64 [2] (repair, fill).
  m.def("allocation_repair(Tensor values, Tensor costs, Tensor? eligible, Tensor? groups, int num_groups, "
        "Tensor lam, Tensor budgets, Tensor choice, bool fill, bool check) -> "
        "(Tensor choice, Tensor spend, Tensor value, Tensor feasible, Tensor moves)");

  // ---- decision losses (METHOD.md sections 2-3; cpp/core/include/bidfcl/core/losses.h) ---------
  // r_hat, c_hat: [N, M >= 2]; treatment int64 [N]; revenue, propensity (of the row's own arm) and
  // the optional cost: [N]; lam: [L >= 1] multipliers (constants). Scores a_l = r_hat - lam[l] c_hat;
  // reward = revenue, or revenue - lam[l] cost when cost is given (DFCL's dual losses). Losses are
  // 0-d in the input dtype, summed over the lam grid; backward ops take the upstream gradient
  // `grad` (one element) and return (grad_r_hat, grad_c_hat).
  // Softmax policy loss (PPL; DPL/MER with cost): -sum_l (1/N) sum_i softmax(a_l/tau)[i,t_i] reward/p.
  // check = False on every loss op: no value checks and, on CUDA, no host read or synchronisation
  // (validate_decision is the lazy check); bad input then gives an unspecified loss or gradient.
  m.def("ppl_loss(Tensor r_hat, Tensor c_hat, Tensor treatment, Tensor revenue, Tensor? cost, Tensor lam, "
        "Tensor propensity, float tau, bool check=True) -> Tensor");
  m.def("ppl_loss_backward(Tensor grad, Tensor r_hat, Tensor c_hat, Tensor treatment, Tensor revenue, "
        "Tensor? cost, Tensor lam, Tensor propensity, float tau, bool check=True) -> "
        "(Tensor grad_r_hat, Tensor grad_c_hat)");
  // Exact discrete decision loss of the argmax policy (PIFD; DIFD with cost); its backward is the
  // flip-based finite-difference estimate (METHOD.md section 3), optional clip h > 0.
  // (clip is unused by the forward; it is an input so that the registered autograd can see it.)
  m.def("pifd_loss(Tensor r_hat, Tensor c_hat, Tensor treatment, Tensor revenue, Tensor? cost, Tensor lam, "
        "Tensor propensity, float? clip, bool check=True) -> Tensor");
  m.def("pifd_loss_backward(Tensor grad, Tensor r_hat, Tensor c_hat, Tensor treatment, Tensor revenue, "
        "Tensor? cost, Tensor lam, Tensor propensity, float? clip, bool check=True) -> "
        "(Tensor grad_r_hat, Tensor grad_c_hat)");
  // Fused forward (CPU): the loss and its gradient for a unit upstream gradient, in one pass; the
  // loss is bit for bit the forward op's, the gradients the backward op's with grad = 1. Autograd
  // of ppl_loss / pifd_loss on CPU calls these and saves the gradients (python/bidfcl/_ops.py).
  m.def("ppl_loss_with_grad(Tensor r_hat, Tensor c_hat, Tensor treatment, Tensor revenue, Tensor? cost, "
        "Tensor lam, Tensor propensity, float tau, bool check=True) -> "
        "(Tensor loss, Tensor grad_r_hat, Tensor grad_c_hat)");
  m.def("pifd_loss_with_grad(Tensor r_hat, Tensor c_hat, Tensor treatment, Tensor revenue, Tensor? cost, "
        "Tensor lam, Tensor propensity, float? clip, bool check=True) -> "
        "(Tensor loss, Tensor grad_r_hat, Tensor grad_c_hat)");
  // The lazy check of the decision losses: the first input error the losses (and their Python
  // wrappers' treatment check) would raise, as an int64 [7] status record on the inputs' device,
  // without any host read (layout: cpp/core/include/bidfcl/core/status_record.h).
  m.def("validate_decision(Tensor r_hat, Tensor c_hat, Tensor treatment, Tensor revenue, Tensor? cost, "
        "Tensor lam, Tensor propensity) -> Tensor status");

  // ---- metrics: estimators of fixed policies (cpp/core/include/bidfcl/core/metrics.h) ----------
  // IPW (or Hajek) per-capita revenue and cost of K policies, with standard errors: float64 [K] each.
  m.def("policy_value(Tensor choice, Tensor treatment, Tensor revenue, Tensor cost, Tensor propensity, "
        "bool hajek) -> (Tensor value, Tensor cost_value, Tensor value_se, Tensor cost_se)");
  // AUCC of the ROI ranking for two options; curves are float64 [q + 1] (cost, revenue) points.
  m.def("aucc(Tensor r_hat, Tensor c_hat, Tensor treatment, Tensor revenue, Tensor cost, int q) -> "
        "(Tensor aucc, Tensor cost_curve, Tensor revenue_curve)");

  // ---- implicit differentiation helpers (METHOD.md section 4) ----------------------------------
  // (implicit family: schemas go here, if any; the CG driver itself is a pybind11 helper in _C)
}
