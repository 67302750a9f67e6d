"""The README's Python snippets for the library API run as written.

The python code blocks of the sections below are extracted from README.md and executed in order,
one namespace per section (later blocks of a section use the names of earlier ones). Blocks that
need files or the command line are listed in SKIPPED with the reason; everything else runs.
"""

import os
import re

import pytest
import torch

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")

#: sections whose python blocks must run as written
SECTIONS = (
    "Solving an allocation",
    "Data",
    "Decision losses and metrics",
    "Implicit differentiation (bi-level hypergradients)",
)

#: (section, a line the block contains) -> why it is not run
SKIPPED = {
    ("Data", "load_criteo_uplift("): "needs the CRITEO-UPLIFT file, which bidfcl never downloads",
}


def _sections() -> dict:
    """Level-2 section title -> the python blocks in it (level-3 subsections included)."""
    with open(README, encoding="utf-8") as fh:
        text = fh.read()
    out, title = {}, None
    for part in re.split(r"^(## .*)$", text, flags=re.MULTILINE):
        if part.startswith("## "):
            title = part[3:].strip()
        elif title is not None:
            out[title] = re.findall(r"^```python\n(.*?)^```", part, flags=re.MULTILINE | re.DOTALL)
    return out


def _skipped(section: str, block: str):
    return next((why for (sec, line), why in SKIPPED.items() if sec == section and line in block), None)


def test_readme_sections_exist_and_hold_code():
    found = _sections()
    for section in SECTIONS:
        assert section in found, f"README has no section {section!r}"
        assert found[section], f"README section {section!r} has no python block"
    for section, line in SKIPPED:  # every skip entry still matches a block
        assert any(line in b for b in found[section]), f"skip entry {line!r} matches no block of {section!r}"


def _run(section: str) -> dict:
    ns: dict = {"__name__": "readme"}
    torch.manual_seed(0)
    for block in _sections()[section]:
        if _skipped(section, block) is None:
            exec(compile(block, f"README.md [{section}]", "exec"), ns)
    return ns


def test_solver_snippets_run():
    ns = _run("Solving an allocation")
    assert bool(ns["sol"].feasible)
    assert bool(ns["many"].feasible.all()), "the K-budget example starts below the cheapest policy"
    assert float(ns["sol"].spend) <= 15_000.0 * (1 + 1e-9)
    assert bool(ns["rct"].feasible)


def test_data_snippets_run():
    ns = _run("Data")
    value, cost = ns["value"], ns["cost"]
    assert torch.isfinite(torch.as_tensor(value)).all() and torch.isfinite(torch.as_tensor(cost)).all()


def test_losses_and_metrics_snippets_run():
    ns = _run("Decision losses and metrics")
    assert ns["r_hat"].grad is not None and torch.isfinite(ns["r_hat"].grad).all()
    assert torch.isfinite(ns["pv"].value)
    assert 0.0 < float(ns["a"]) < 1.0
    assert bool(ns["e"].feasible.all())


def test_implicit_snippets_run_and_converge():
    ns = _run("Implicit differentiation (bi-level hypergradients)")
    assert ns["res"].state.status == "converged"
    assert ns["neu"].state.status == "max_iter" and ns["neu"].state.error < 1e-6, ns["neu"].state
    exact = ns["implicit"].hypergradient(
        ns["lower_loss"], ns["upper_loss"], ns["inner_params"], ns["outer_params"], tol=1e-12
    )
    torch.testing.assert_close(ns["neu"].grads[0], exact.grads[0], rtol=1e-5, atol=1e-8)
    assert ns["state"].converged


@pytest.mark.parametrize("alpha", [1.0])
def test_implicit_neumann_with_alpha_one_is_reported_as_diverged(alpha):
    ns = _run("Implicit differentiation (bi-level hypergradients)")
    res = ns["implicit"].neumann(ns["lower_loss"], ns["upper_loss"], ns["inner"], ns["outer"], max_iter=50, alpha=alpha)
    assert res.state.status == "diverged"
