// Placeholder translation unit for the CG driver bindings; the implicit-differentiation work
// fills bind_implicit in. Kept so module.cpp has a single, stable hook per family.
#include "bindings.h"

namespace bidfcl {
void bind_implicit(pybind11::module_& /*m*/) {}
}  // namespace bidfcl
