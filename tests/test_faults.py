"""Issue 24: every case of the fault catalogue (tests/fault_cases.py) is handled.

Each case stages bad files, bad names, bad options or a fault (a read-only folder, a full
file system, a killed writer, a second run into the same directory) under ``tmp_path``, runs
``nanoshape`` and judges the outcome; a case fails when the command ends in a traceback or
finishes with a wrong, lost or stale result. Cases the platform cannot stage (mounting a
small file system needs Linux and root) are skipped with the reason.
"""

import pytest

from fault_cases import CASES, run_case


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else []) for c in CASES])
def test_fault_is_handled(case, tmp_path):
    verdict, detail = run_case(case, tmp_path)
    if verdict == "not run":
        pytest.skip(detail)
    assert verdict == "handled", f"{case.title}: {verdict}: {detail}"
