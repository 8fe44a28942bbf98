"""The Python API: ``import morphable`` stays cheap, and the example of docs/api.md runs as written."""

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_import_is_lazy():
    code = ("import sys, morphable; assert 'torch' not in sys.modules and 'numpy' not in sys.modules; "
            "print(sorted(n for n in morphable.__all__ if n != '__version__'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "load_run" in out and "ChebConv" in out


def test_every_api_name_resolves():
    import morphable

    for name in morphable.__all__:
        assert getattr(morphable, name) is not None, name


def test_docs_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    exec(compile(blocks[0], str(DOC), "exec"), {"__name__": "api_example"})
