"""Seeded tiny runs of every family give the numbers recorded in ``golden/golden.json``.

The file was made with ``python tests/golden/generate.py tests/golden/golden.json`` at the commit it names
(before the wave-2 restructuring). Regenerate it only in a commit that changes seeded results on purpose,
and say why in that commit.
"""

import json
from pathlib import Path

import pytest

from golden.generate import golden_runs

GOLDEN = Path(__file__).parent / "golden" / "golden.json"


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    return golden_runs(tmp_path_factory.mktemp("golden"))


@pytest.mark.parametrize("preset", sorted(json.loads(GOLDEN.read_text())["runs"]))
def test_seeded_run_matches_golden_file(preset, measured):
    expected = json.loads(GOLDEN.read_text())["runs"][preset]
    assert set(measured[preset]) >= set(expected)
    for key, value in expected.items():
        assert measured[preset][key] == pytest.approx(value, rel=1e-5), key
