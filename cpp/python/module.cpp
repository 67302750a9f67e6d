// The pybind11 `_C` module. Importing it also loads every TORCH_LIBRARY registration compiled into
// this shared object (registration.cpp and the per-device glue), so `import bidfcl._C` is all the
// Python side needs to make torch.ops.bidfcl.* available.
#include <torch/extension.h>

#include <algorithm>

#include "bidfcl/core/constants.h"
#include "bidfcl/core/status.h"
#include "bidfcl/core/status_record.h"
#include "bindings.h"

#ifndef BIDFCL_VERSION
#define BIDFCL_VERSION "unknown"
#endif
#ifndef BIDFCL_TORCH_VERSION
#define BIDFCL_TORCH_VERSION "unknown"
#endif

namespace {

// The constants of constants.h and the status record layout and codes of status.h /
// status_record.h, as module attributes: python/bidfcl/_constants.py holds the same values
// (needed without the extension) and tests/test_constants.py checks every one against these.
void bind_constants(pybind11::module_& m) {
  using namespace bidfcl::core;
  m.attr("MAX_OPTIONS") = kMaxOptions;
  m.attr("MAX_LOSS_OPTIONS") = kMaxLossOptions;
  m.attr("BUDGET_SLACK") = kBudgetSlack;
  m.attr("PIFD_ZERO_GAP_FLOOR") = kPifdZeroGapFloor;
  m.attr("AUCC_MIN_COST_GAP") = kAuccMinCostGap;
  m.attr("CG_MAX_ITER") = static_cast<int64_t>(kCgMaxIter);
  m.attr("CG_CONVERGED") = static_cast<int64_t>(kCgConverged);
  m.attr("CG_NONPOSITIVE_CURVATURE") = static_cast<int64_t>(kCgNonPositiveCurvature);
  m.attr("STATUS_LEN") = kStatusLen;
  m.attr("STATUS_CODE") = kStatusCode;
  m.attr("STATUS_ROW") = kStatusRow;
  m.attr("STATUS_COL") = kStatusCol;
  m.attr("STATUS_VALUE") = kStatusValue;
  m.attr("STATUS_FAMILY") = kStatusFamily;
  m.attr("STATUS_INPUT") = kStatusInput;
  m.attr("STATUS_ARM") = kStatusArm;
  const std::pair<const char*, Code> codes[] = {{"CODE_OK", Code::kOk},
                                                {"CODE_NON_FINITE_VALUE", Code::kNonFiniteValue},
                                                {"CODE_NON_FINITE_COST", Code::kNonFiniteCost},
                                                {"CODE_NEGATIVE_COST", Code::kNegativeCost},
                                                {"CODE_BAD_TREATMENT", Code::kBadTreatment},
                                                {"CODE_BAD_PROPENSITY", Code::kBadPropensity},
                                                {"CODE_NON_FINITE_INPUT", Code::kNonFiniteInput},
                                                {"CODE_NO_ELIGIBLE_OPTION", Code::kNoEligibleOption},
                                                {"CODE_BAD_GROUP", Code::kBadGroup},
                                                {"CODE_EMPTY_ARM", Code::kEmptyArm}};
  for (const auto& [name, code] : codes) m.attr(name) = static_cast<int>(code);
  m.attr("CODE_NON_FINITE_BUDGET") = kCodeNonFiniteBudget;
  m.attr("CODE_NEGATIVE_BUDGET") = kCodeNegativeBudget;
  m.attr("FAMILY_SOLVE") = kFamilySolve;
  m.attr("FAMILY_RCT") = kFamilyRct;
  m.attr("FAMILY_DECISION") = kFamilyDecision;
  m.attr("FAMILY_METRICS") = kFamilyMetrics;
  const std::pair<const char*, Input> inputs[] = {{"INPUT_NONE", Input::kNone},
                                                  {"INPUT_REVENUE", Input::kRevenue},
                                                  {"INPUT_COST", Input::kCost},
                                                  {"INPUT_LAM", Input::kLam},
                                                  {"INPUT_PROPENSITY", Input::kPropensity}};
  for (const auto& [name, input] : inputs) m.attr(name) = static_cast<int64_t>(input);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "bidfcl compiled core";
  m.def(
      "build_info",
      []() {
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
      },
      "How this extension was built: version, torch it was compiled against, CUDA kernels in or out.");
  bidfcl::bind_implicit(m);
  bind_constants(m);
}
