// The conjugate-gradient driver of implicit differentiation (METHOD.md section 4), bound into `_C`.
//
// Solves (H + damping I) v = b, where H = d2 L / dtheta2 is the Hessian of a scalar loss with respect
// to a list of parameter tensors, using Hessian-vector products by double backward through torch's
// C++ autograd:  H p = d/dtheta < dL/dtheta, p >  (the first-order gradients are built once with
// create_graph=true; every product reuses their graph with retain_graph=true).
//
// The CG vectors x, r, p, Hp live in single flat buffers; the per-parameter tensors handed to autograd
// are views into them, so every vector update is one fused kernel over all parameters and no Python
// runs per iteration. The step sizes stay on the device: an iteration never syncs. Convergence and
// curvature are folded into a device-side "active" flag that zeroes the step once CG has stopped,
// so checking it only every `check_every` iterations changes the number of wasted products, never
// the iterates. python/bidfcl/linear_solve.py carries the same algorithm, op for op, for any matvec.
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <torch/csrc/autograd/autograd.h>

#include "bidfcl/core/constants.h"
#include "bindings.h"

namespace bidfcl {
namespace {

using at::Tensor;

// Why CG stopped: core::CgStatus of constants.h (kCgMaxIter, kCgConverged, kCgNonPositiveCurvature),
// exported by `_C` and mirrored by python/bidfcl/_constants.py (CG_*).
using core::kCgConverged;
using core::kCgMaxIter;
using core::kCgNonPositiveCurvature;

struct CgOptions {
  int64_t max_iter = 50;            // iterations (each one Hessian-vector product)
  double tol = 1e-6;                // relative tolerance on the residual: stop when ||r|| <= tol ||b||
  double damping = 0.0;             // added to H's diagonal
  int64_t check_every = 1;          // iterations between host reads of the stop flag (each one syncs)
  bool stop_on_nonpositive_curvature = true;
};

struct CgOutcome {
  std::vector<Tensor> solution;  // one tensor per parameter, shaped like it
  int64_t iterations = 0;        // CG steps actually applied
  int64_t matvecs = 0;           // Hessian-vector products evaluated (>= iterations; see check_every)
  double residual = 0.0;         // ||r|| / ||b|| from the CG recurrence (0 when b == 0)
  int64_t status = kCgMaxIter;
};

// Flat-buffer layout of a parameter list: offsets and shapes of each block.
struct Layout {
  std::vector<int64_t> offsets;
  std::vector<std::vector<int64_t>> shapes;
  int64_t total = 0;
};

Layout layout_of(const std::vector<Tensor>& params) {
  Layout out;
  for (const auto& t : params) {
    out.offsets.push_back(out.total);
    out.shapes.push_back(t.sizes().vec());
    out.total += t.numel();
  }
  return out;
}

std::vector<Tensor> views_of(const Tensor& flat, const Layout& layout) {
  std::vector<Tensor> views;
  views.reserve(layout.shapes.size());
  for (size_t i = 0; i < layout.shapes.size(); ++i) {
    int64_t n = 1;
    for (auto s : layout.shapes[i]) n *= s;
    views.push_back(flat.narrow(0, layout.offsets[i], n).view(layout.shapes[i]));
  }
  return views;
}

void check_inputs(const std::vector<Tensor>& params, const std::vector<Tensor>& b,
                  const std::optional<std::vector<Tensor>>& x0, const CgOptions& opt) {
  TORCH_CHECK(!params.empty(), "bidfcl.implicit: expected at least one parameter tensor, got an empty list");
  TORCH_CHECK(b.size() == params.size(), "bidfcl.implicit: expected b to have one tensor per parameter (",
              params.size(), "), got ", b.size());
  TORCH_CHECK(opt.max_iter >= 0, "bidfcl.implicit: expected max_iter >= 0, got ", opt.max_iter);
  TORCH_CHECK(opt.tol >= 0.0, "bidfcl.implicit: expected tol >= 0, got ", opt.tol);
  TORCH_CHECK(opt.damping >= 0.0 && std::isfinite(opt.damping), "bidfcl.implicit: expected a finite damping >= 0, got ",
              opt.damping);
  TORCH_CHECK(opt.check_every >= 1, "bidfcl.implicit: expected check_every >= 1, got ", opt.check_every);
  if (x0) {
    TORCH_CHECK(x0->size() == params.size(), "bidfcl.implicit: expected x0 to have one tensor per parameter (",
                params.size(), "), got ", x0->size());
  }
  const auto dtype = params[0].scalar_type();
  const auto device = params[0].device();
  TORCH_CHECK(at::isFloatingType(dtype), "bidfcl.implicit: expected floating-point parameters, got ", dtype);
  for (size_t i = 0; i < params.size(); ++i) {
    TORCH_CHECK(params[i].defined(), "bidfcl.implicit: parameter ", i, " is undefined");
    TORCH_CHECK(params[i].scalar_type() == dtype && params[i].device() == device,
                "bidfcl.implicit: expected every parameter to be ", dtype, " on ", device, ", got parameter ", i,
                " as ", params[i].scalar_type(), " on ", params[i].device());
    TORCH_CHECK(b[i].defined() && b[i].sizes() == params[i].sizes(), "bidfcl.implicit: expected b[", i, "] of shape ",
                params[i].sizes(), ", got ", b[i].defined() ? b[i].sizes() : at::IntArrayRef{});
    TORCH_CHECK(b[i].scalar_type() == dtype && b[i].device() == device, "bidfcl.implicit: expected b[", i, "] as ",
                dtype, " on ", device, ", got ", b[i].scalar_type(), " on ", b[i].device());
    if (x0) {
      const auto& x = (*x0)[i];
      TORCH_CHECK(x.defined() && x.sizes() == params[i].sizes() && x.scalar_type() == dtype && x.device() == device,
                  "bidfcl.implicit: expected x0[", i, "] shaped, typed and placed like parameter ", i);
    }
  }
}

// The Hessian-vector product p -> H p by double backward. `grads` are dL/dtheta built with
// create_graph=true; blocks whose gradient has no graph (loss at most linear in that parameter, or
// not depending on it) contribute nothing and are left out of the backward call.
class HessianProduct {
 public:
  HessianProduct(const std::vector<std::optional<Tensor>>& grads, const std::vector<Tensor>& params,
                 const Layout& layout)
      : params_(params) {
    TORCH_CHECK(grads.size() == params.size(), "bidfcl.implicit: expected one gradient per parameter (", params.size(),
                "), got ", grads.size());
    for (size_t i = 0; i < grads.size(); ++i) {
      const auto& g = grads[i];
      if (!g || !g->defined()) continue;
      TORCH_CHECK(g->sizes() == params[i].sizes(), "bidfcl.implicit: expected gradient ", i, " of shape ",
                  params[i].sizes(), ", got ", g->sizes());
      if (g->requires_grad()) {
        outputs_.push_back(*g);
        output_index_.push_back(i);
      }
    }
    for (size_t i = 0; i < params.size(); ++i) {
      int64_t n = 1;
      for (auto s : layout.shapes[i]) n *= s;
      zero_blocks_.push_back(params[i].new_zeros({n}));
    }
  }

  // out = H p (out and p are flat buffers; p_views are the per-parameter views of p).
  void operator()(const std::vector<Tensor>& p_views, Tensor& out) const {
    if (outputs_.empty()) {  // H == 0: every gradient is constant in theta
      out.zero_();
      return;
    }
    std::vector<Tensor> grad_outputs;
    grad_outputs.reserve(outputs_.size());
    for (auto i : output_index_) grad_outputs.push_back(p_views[i]);
    auto hp = torch::autograd::grad(outputs_, params_, grad_outputs, /*retain_graph=*/true,
                                    /*create_graph=*/false, /*allow_unused=*/true);
    std::vector<Tensor> pieces;
    pieces.reserve(hp.size());
    for (size_t i = 0; i < hp.size(); ++i) {
      pieces.push_back(hp[i].defined() ? hp[i].reshape({-1}) : zero_blocks_[i]);
    }
    at::cat_out(out, pieces, 0);
  }

 private:
  std::vector<Tensor> params_;
  std::vector<Tensor> outputs_;
  std::vector<size_t> output_index_;
  std::vector<Tensor> zero_blocks_;
};

Tensor flatten_list(const std::vector<Tensor>& xs) {
  std::vector<Tensor> pieces;
  pieces.reserve(xs.size());
  for (const auto& x : xs) pieces.push_back(x.detach().reshape({-1}));
  return at::cat(pieces, 0);
}

CgOutcome conjugate_gradient(const HessianProduct& hvp, const std::vector<Tensor>& params,
                             const std::vector<Tensor>& b_list, const std::optional<std::vector<Tensor>>& x0,
                             const Layout& layout, const CgOptions& opt) {
  at::NoGradGuard no_grad;
  CgOutcome outcome;
  const Tensor b = flatten_list(b_list);
  Tensor x = x0 ? flatten_list(*x0) : at::zeros_like(b);
  Tensor hp = at::empty_like(b);

  // r = b - (H + damping I) x0 ; p = r
  Tensor r;
  if (x0) {
    const auto x_views = views_of(x, layout);
    hvp(x_views, hp);
    if (opt.damping != 0.0) hp.add_(x, opt.damping);
    r = b - hp;
    outcome.matvecs += 1;
  } else {
    r = b.clone();
  }
  Tensor p = r.clone();
  const auto p_block_views = views_of(p, layout);

  Tensor rs = at::dot(r, r);
  const Tensor threshold = at::dot(b, b) * (opt.tol * opt.tol);
  Tensor active = rs > threshold;
  Tensor status = at::zeros({}, b.options().dtype(at::kLong));  // kCgMaxIter until something else happens
  Tensor iterations = at::zeros({}, b.options().dtype(at::kLong));
  const Tensor zero = at::zeros({}, b.options());
  const Tensor curvature_code = at::full({}, static_cast<int64_t>(kCgNonPositiveCurvature), status.options());

  for (int64_t k = 0; k < opt.max_iter; ++k) {
    if (k % opt.check_every == 0 && !active.item<bool>()) break;
    hvp(p_block_views, hp);
    if (opt.damping != 0.0) hp.add_(p, opt.damping);
    outcome.matvecs += 1;
    const Tensor curvature = at::dot(p, hp);
    if (opt.stop_on_nonpositive_curvature) {
      const Tensor bad = at::logical_and(active, at::logical_not(curvature > 0));  // NaN counts as bad
      status = at::where(bad, curvature_code, status);
      active = at::logical_and(active, at::logical_not(bad));
    }
    const Tensor alpha = at::where(active, rs / curvature, zero);
    x.addcmul_(p, alpha);
    r.addcmul_(hp, alpha, -1);
    iterations.add_(active);
    const Tensor rs_next = at::dot(r, r);
    const Tensor beta = at::where(active, rs_next / rs, zero);
    active = at::logical_and(active, rs_next > threshold);
    p.mul_(beta).add_(r);
    rs = rs_next;
  }

  // Converged means: the residual is at or below the threshold (whenever it happened).
  const bool converged = (rs <= threshold).item<bool>();
  int64_t code = status.item<int64_t>();
  if (code == kCgMaxIter && converged) code = kCgConverged;
  outcome.status = code;
  outcome.iterations = iterations.item<int64_t>();
  const double bb = at::dot(b, b).item<double>();
  outcome.residual = bb > 0.0 ? std::sqrt(rs.item<double>() / bb) : 0.0;
  outcome.solution.reserve(params.size());
  for (const auto& v : views_of(x, layout)) outcome.solution.push_back(v);
  return outcome;
}

CgOptions make_options(int64_t max_iter, double tol, double damping, int64_t check_every,
                       bool stop_on_nonpositive_curvature) {
  CgOptions opt;
  opt.max_iter = max_iter;
  opt.tol = tol;
  opt.damping = damping;
  opt.check_every = check_every;
  opt.stop_on_nonpositive_curvature = stop_on_nonpositive_curvature;
  return opt;
}

pybind11::tuple to_python(CgOutcome&& outcome) {
  return pybind11::make_tuple(std::move(outcome.solution), outcome.iterations, outcome.matvecs, outcome.residual,
                              outcome.status);
}

pybind11::tuple hessian_cg_from_grads(const std::vector<std::optional<Tensor>>& grads,
                                      const std::vector<Tensor>& params, const std::vector<Tensor>& b,
                                      const std::optional<std::vector<Tensor>>& x0, int64_t max_iter, double tol,
                                      double damping, int64_t check_every, bool stop_on_nonpositive_curvature) {
  const auto opt = make_options(max_iter, tol, damping, check_every, stop_on_nonpositive_curvature);
  check_inputs(params, b, x0, opt);
  CgOutcome outcome;
  {
    // Only at::Tensor handles are touched below; autograd re-acquires the GIL for Python nodes.
    pybind11::gil_scoped_release no_gil;
    const Layout layout = layout_of(params);
    const HessianProduct hvp(grads, params, layout);
    outcome = conjugate_gradient(hvp, params, b, x0, layout, opt);
  }
  return to_python(std::move(outcome));
}

pybind11::tuple hessian_cg(const Tensor& loss, const std::vector<Tensor>& params, const std::vector<Tensor>& b,
                           const std::optional<std::vector<Tensor>>& x0, int64_t max_iter, double tol, double damping,
                           int64_t check_every, bool stop_on_nonpositive_curvature) {
  const auto opt = make_options(max_iter, tol, damping, check_every, stop_on_nonpositive_curvature);
  check_inputs(params, b, x0, opt);
  TORCH_CHECK(loss.defined() && loss.numel() == 1 && loss.dim() == 0,
              "bidfcl.implicit: expected a scalar (0-dim) loss, got shape ",
              loss.defined() ? loss.sizes() : at::IntArrayRef{});
  TORCH_CHECK(loss.requires_grad(), "bidfcl.implicit: expected a loss that requires grad (built from the parameters)");
  for (size_t i = 0; i < params.size(); ++i) {
    TORCH_CHECK(params[i].requires_grad(), "bidfcl.implicit: expected parameter ", i, " to require grad");
  }
  CgOutcome outcome;
  {
    pybind11::gil_scoped_release no_gil;
    std::vector<std::optional<Tensor>> grads;
    {
      at::AutoGradMode enable_grad(true);
      auto g = torch::autograd::grad({loss}, params, {}, /*retain_graph=*/true, /*create_graph=*/true,
                                     /*allow_unused=*/true);
      for (auto& t : g) grads.emplace_back(t.defined() ? std::optional<Tensor>(t) : std::nullopt);
    }
    const Layout layout = layout_of(params);
    const HessianProduct hvp(grads, params, layout);
    outcome = conjugate_gradient(hvp, params, b, x0, layout, opt);
  }
  return to_python(std::move(outcome));
}

}  // namespace

void bind_implicit(pybind11::module_& m) {
  using namespace pybind11::literals;
  m.def("hessian_cg", &hessian_cg, "loss"_a, "params"_a, "b"_a, "x0"_a = pybind11::none(), "max_iter"_a = 50,
        "tol"_a = 1e-6, "damping"_a = 0.0, "check_every"_a = 1, "stop_on_nonpositive_curvature"_a = true,
        "Conjugate gradient on (H + damping I) v = b with H the Hessian of the scalar `loss` w.r.t. `params`.\n"
        "Returns (solution list, iterations, hessian_vector_products, relative_residual, status_code).");
  m.def("hessian_cg_from_grads", &hessian_cg_from_grads, "grads"_a, "params"_a, "b"_a, "x0"_a = pybind11::none(),
        "max_iter"_a = 50, "tol"_a = 1e-6, "damping"_a = 0.0, "check_every"_a = 1,
        "stop_on_nonpositive_curvature"_a = true,
        "As hessian_cg, from first-order gradients already built with create_graph=True (None where unused).");
}

}  // namespace bidfcl
