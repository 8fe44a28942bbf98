"""Test settings: one quiet OpenMP thread, a private dataset cache, paths to the shared real data."""

import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ICT_NPZ = SHARED_DATA / "ict-facekit" / "ict_face_model_light_f32.npz"
ICT_FOLDER = SHARED_DATA / "ict-facekit" / "FaceXModel"
MEDIAPIPE_OBJ = SHARED_DATA / "mediapipe-canonical-face" / "canonical_face_model.obj"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MORPHABLE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def require(path: Path) -> Path:
    """Skip when the shared real data is absent (it lives beside the repository, not in it)."""
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path


@pytest.fixture
def float64_default():
    """Default dtype float64 (modules built in the test keep float64 matrices exactly) and seed 0."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(old)
