"""The constants shared by the compiled core and Python come from one place.

C++ defines them once (cpp/core/include/bidfcl/core/constants.h, status.h, status_record.h) and
``bidfcl._C`` exports each as an attribute; ``bidfcl._constants`` holds the Python values (used
without the extension). Every exported constant must equal its Python copy, and every Python
constant listed as exported must exist in ``_C``.
"""

from __future__ import annotations

import pytest

import bidfcl
from bidfcl import _constants, _ops

needs_extension = pytest.mark.skipif(not bidfcl.EXTENSION_LOADED, reason="compares with the compiled _C module")


@needs_extension
@pytest.mark.parametrize("name", _constants.EXPORTED)
def test_c_constant_equals_python_constant(name):
    assert hasattr(_ops._C, name), f"_C does not export {name}"
    c_value, py_value = getattr(_ops._C, name), getattr(_constants, name)
    assert type(c_value) is type(py_value) and c_value == py_value, (name, c_value, py_value)


@needs_extension
def test_every_c_constant_has_a_python_copy():
    exported = {n for n in dir(_ops._C) if n.isupper()}
    assert exported == set(_constants.EXPORTED), exported ^ set(_constants.EXPORTED)


def test_status_record_slots_are_distinct_and_fill_the_record():
    slots = [getattr(_constants, n) for n in _constants.EXPORTED if n.startswith("STATUS_") and n != "STATUS_LEN"]
    assert sorted(slots) == list(range(_constants.STATUS_LEN))


def test_package_option_limit_is_the_smaller_core_limit():
    assert bidfcl.MAX_OPTIONS == min(_constants.MAX_OPTIONS, _constants.MAX_LOSS_OPTIONS)


def test_status_record_shape_of_the_lazy_check():
    import torch

    r = torch.zeros(3, 2, dtype=torch.float64)
    status = _ops.ops.validate_decision(
        r,
        r,
        torch.zeros(3, dtype=torch.long),
        torch.zeros(3, dtype=torch.float64),
        None,
        torch.zeros(1, dtype=torch.float64),
        torch.ones(3, dtype=torch.float64),
    )
    assert status.shape == (_constants.STATUS_LEN,) and int(status[_constants.STATUS_CODE]) == _constants.CODE_OK
