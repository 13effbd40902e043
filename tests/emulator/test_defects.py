"""The defect replay (`tests/emulator/defects.py`) still applies to the code as it is."""

import pytest

from tests.emulator.defects import DEFECTS, ROOT, patched


@pytest.mark.parametrize("defect", DEFECTS, ids=lambda d: d.kind)
def test_every_defect_applies_to_exactly_one_place(defect) -> None:
    text = (ROOT / defect.file).read_text()
    assert patched(defect, text) != text


def test_one_defect_per_class_of_the_issue() -> None:
    kinds = [d.kind for d in DEFECTS]
    assert len(kinds) == len(set(kinds)) == 6


def test_a_change_that_no_longer_matches_is_refused() -> None:
    defect = DEFECTS[0]
    with pytest.raises(ValueError, match="occurs 0 times, not once"):
        patched(defect, "")
