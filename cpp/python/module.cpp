// The pybind11 `_C` module. Importing it also loads every TORCH_LIBRARY registration compiled into
// this shared object (registration.cpp and the per-device glue), so `import bidfcl._C` is all the
// Python side needs to make torch.ops.bidfcl.* available.
#include <torch/extension.h>

#include <algorithm>

#include "bidfcl/core/losses.h"
#include "bidfcl/core/mckp.h"
#include "bindings.h"

#ifndef BIDFCL_VERSION
#define BIDFCL_VERSION "unknown"
#endif
#ifndef BIDFCL_TORCH_VERSION
#define BIDFCL_TORCH_VERSION "unknown"
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "bidfcl compiled core";
  m.def("build_info", []() {
    pybind11::dict info;
    info["version"] = BIDFCL_VERSION;
    info["torch_version"] = BIDFCL_TORCH_VERSION;
#ifdef BIDFCL_WITH_CUDA
    info["cuda"] = true;
#else
    info["cuda"] = false;
#endif
    info["cxx_standard"] = static_cast<long>(__cplusplus);
    // The largest option count M every op accepts (solver hulls and loss scratch both hold M
    // entries); Python reads its input checks from here (bidfcl.MAX_OPTIONS).
    info["max_options"] = static_cast<long>(std::min(bidfcl::core::kMaxOptions, bidfcl::core::kMaxLossOptions));
    return info;
  }, "How this extension was built: version, torch it was compiled against, CUDA kernels in or out.");
  bidfcl::bind_implicit(m);
}
