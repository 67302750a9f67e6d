// Non-op helpers bound into `_C`, one function per family, each defined in its own file here.
#pragma once

#include <torch/extension.h>

namespace bidfcl {
// implicit.cpp: the conjugate-gradient driver with Hessian-vector products (issue: implicit).
void bind_implicit(pybind11::module_& m);
}  // namespace bidfcl
