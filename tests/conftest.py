"""Test settings: one quiet OpenMP thread, a private dataset cache, no unpickling by the package, paths to the
shared real data."""

import os
import pickle
import sys
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


class UnpicklingRefused(AssertionError):
    """Raised when code of the ``morphable`` package unpickles (directly or through numpy / torch)."""


def _package_on_stack() -> bool:
    """True when a frame of the ``morphable`` package is on the call stack (tests and torch itself may
    unpickle: ``torch.multiprocessing.spawn`` returns its workers' errors pickled)."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_globals.get("__name__", "").split(".")[0] == "morphable":
            return True
        frame = frame.f_back
    return False


@pytest.fixture(autouse=True)
def _no_unpickling_by_the_package(monkeypatch):
    """``pickle.load`` / ``pickle.loads`` / ``pickle.Unpickler`` raise when the package calls them."""
    load, loads, unpickler = pickle.load, pickle.loads, pickle.Unpickler

    def guarded(original):
        def call(*args, **kwargs):
            if _package_on_stack():
                raise UnpicklingRefused("the morphable package tried to unpickle")
            return original(*args, **kwargs)

        return call

    class GuardedUnpickler(unpickler):
        def __init__(self, *args, **kwargs):
            if _package_on_stack():
                raise UnpicklingRefused("the morphable package tried to unpickle")
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(pickle, "load", guarded(load))
    monkeypatch.setattr(pickle, "loads", guarded(loads))
    monkeypatch.setattr(pickle, "Unpickler", GuardedUnpickler)


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


def bumpy_spheres(n: int, subdivisions: int = 3, seed: int = 0, scale: float = 0.1):
    """``n`` icospheres with smooth random bumps ``(n, V, 3)`` (metres) and the faces: registered meshes with
    real shape variation, for tiny training runs."""
    import numpy as np
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
    bumps = np.random.default_rng(seed).standard_normal((n, 3)) * 0.05
    v = sphere.vertices[None] * (1 + np.einsum("nk,vk->nv", bumps, sphere.vertices)[..., None])
    return (v * scale).astype(np.float32), np.asarray(sphere.faces)


def write_tiny_faces(root: Path, n: int = 24, subdivisions: int = 3) -> Path:
    """A COMA-layout dataset of ``n`` bumpy spheres: subjects of 12 meshes, 3 expressions of 4 frames."""
    from morphable.data.registered import write_coma_layout

    vertices, faces = bumpy_spheres(n, subdivisions)
    write_coma_layout(root, vertices, faces, [f"s{i // 12}" for i in range(n)], [f"e{(i // 4) % 3}" for i in range(n)],
                      [i % 4 for i in range(n)], "m", progress=False)
    return root


SPHERE_RADII = {"large": 0.8, "small": 0.5}  # metres; sorted names -> code 0 large, code 1 small


@pytest.fixture(scope="session")
def tiny_faces(tmp_path_factory) -> Path:
    """24 registered bumpy spheres (642 vertices) in the COMA layout."""
    return write_tiny_faces(tmp_path_factory.mktemp("tiny") / "faces")


@pytest.fixture(scope="session")
def sdf_dir(tmp_path_factory) -> Path:
    """An SDF dataset (``morphable data sdf``) of two spheres of radii 0.8 and 0.5 m."""
    import trimesh

    from morphable.cli import main
    from morphable.io import write_ply

    root = tmp_path_factory.mktemp("implicit")
    meshes = root / "meshes"
    meshes.mkdir()
    for name, r in SPHERE_RADII.items():
        sphere = trimesh.creation.icosphere(subdivisions=3, radius=r)
        write_ply(meshes / f"{name}.ply", sphere.vertices, sphere.faces)
    assert main(["data", "sdf", str(meshes), "--out", str(root / "sdf"), "--unit", "m", "--n-surface", "2000",
                 "--n-near", "2000", "--n-ball", "1000"]) == 0
    return root / "sdf"


@pytest.fixture(scope="session")
def npm_run(sdf_dir, tmp_path_factory) -> Path:
    """``morphable train npm-small`` on the two spheres (its preset's 20 epochs)."""
    from morphable.cli import main

    out = tmp_path_factory.mktemp("runs") / "npm"
    assert main(["train", "npm-small", "--data", str(sdf_dir), "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_photos(tmp_path_factory) -> Path:
    """``morphable data photos``: 30 ICT-FaceKit photos of 10 identities at 64 x 64 (train 24, val 3, test 3)."""
    from morphable.data.photos import PhotoSettings, load_photo_model, write_photo_dataset

    model = load_photo_model(require(ICT_NPZ), require(ICT_FOLDER))[0]
    root = tmp_path_factory.mktemp("photos") / "tiny"
    return write_photo_dataset(model, root, PhotoSettings(count=30, identities=10, resolution=64, seed=1),
                               progress=False)


@pytest.fixture(scope="session")
def tiny_detail_photos(tmp_path_factory) -> Path:
    """``morphable data photos --detail 1.0 0.2``: 40 ICT-FaceKit photos of 5 identities (8 each) at 64 x 64
    (train 3 identities, val 1, test 1), with the model files named in dataset.json (HRN needs them)."""
    from morphable.data.face_detail import DetailSettings
    from morphable.data.photos import PhotoSettings, load_photo_model, write_photo_dataset

    npz, folder = require(ICT_NPZ), require(ICT_FOLDER)
    model = load_photo_model(npz, folder)[0]
    root = tmp_path_factory.mktemp("photos") / "detail"
    settings = PhotoSettings(count=40, identities=5, resolution=64, seed=2, detail=DetailSettings(1.0, 0.2))
    return write_photo_dataset(model, root, settings, model_files={"model": str(npz), "uvs_from": str(folder)},
                               progress=False)
