"""Property-based fuzzing of the readers (hypothesis, small budget): any bytes, or a valid file with bytes
overwritten, inserted or cut, give a :class:`MorphableError` or a valid result, never another exception.
The full figures (thousands of cases through the verbs) come from ``benchmarks/bm_robustness.py``."""

import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from morphable.errors import MorphableError
from morphable.io import load_weights, read_json, read_mesh, read_npz, write_obj, write_ply

BUDGET = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None,
                  derandomize=True)
"""A fixed draw, so that CI is reproducible; ``benchmarks/bm_robustness.py`` explores further."""

V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def _seed(suffix: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"seed{suffix}"
        if suffix == ".obj":
            write_obj(path, V, F)
        elif suffix == ".ply":
            write_ply(path, V, F)
        elif suffix == ".safetensors":
            from morphable.io import save_weights

            save_weights(path, {"w": np.ones((3, 2), np.float32), "i": np.arange(4)}, {"format": "test"})
        return path.read_bytes()


ASCII_PLY = ("ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\nproperty float z\n"
             "element face 4\nproperty list uchar int vertex_indices\nend_header\n"
             + "".join(f"{x} {y} {z}\n" for x, y, z in V) + "".join(f"3 {a} {b} {c}\n" for a, b, c in F)).encode()
SEEDS = {".obj": _seed(".obj"), ".ply": _seed(".ply"), ".safetensors": _seed(".safetensors")}


@st.composite
def mutated(draw, seed: bytes) -> bytes:
    """``seed`` with a few bytes overwritten, a chunk inserted and / or the file cut, or arbitrary bytes."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=300))
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.sampled_from([b"nan", b"-1", b"99", b"0", b" 1e999", b"\n", b"/", b"\xff", b"4294967295",
                                            b"element vertex 1000000000000\n"]))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def _write(data: bytes, suffix: str) -> tuple[tempfile.TemporaryDirectory, Path]:
    tmp = tempfile.TemporaryDirectory()
    path = Path(tmp.name) / f"case{suffix}"
    path.write_bytes(data)
    return tmp, path


def _read_or_refuse(reader, data: bytes, suffix: str):
    """``reader`` applied to ``data`` stored as a file: its result, or None after a one-line error naming it.
    Any other exception fails the test."""
    tmp, path = _write(data, suffix)
    with tmp:
        try:
            return reader(path)
        except MorphableError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            return None


def _check_mesh(data: bytes, suffix: str) -> None:
    mesh = _read_or_refuse(read_mesh, data, suffix)
    if mesh is None:
        return
    assert mesh.vertices.dtype == np.float64 and mesh.vertices.ndim == 2 and mesh.vertices.shape[1] == 3
    assert len(mesh.vertices) > 0 and np.isfinite(mesh.vertices).all()
    assert mesh.faces.dtype == np.int64 and mesh.faces.shape[1] == 3
    assert mesh.faces.size == 0 or (mesh.faces.min() >= 0 and mesh.faces.max() < len(mesh.vertices))


@BUDGET
@given(mutated(SEEDS[".obj"]))
def test_obj_reader_never_raises_anything_else(data):
    _check_mesh(data, ".obj")


@BUDGET
@given(mutated(SEEDS[".ply"]))
def test_binary_ply_reader_never_raises_anything_else(data):
    _check_mesh(data, ".ply")


@BUDGET
@given(mutated(ASCII_PLY))
@example(ASCII_PLY.replace(b"3 0 1 3\n", b"3 0 1 3\n\n"))  # a blank line in the face block (found by hypothesis)
def test_ascii_ply_reader_never_raises_anything_else(data):
    _check_mesh(data, ".ply")


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=4), max_leaves=20)


@BUDGET
@given(st.one_of(JSON_VALUES.map(lambda v: json.dumps(v).encode()), mutated(b'{"method": "pca", "x": [1, 2.5]}'),
                 st.integers(1, 5_000).map(lambda n: b"[" * n + b"]" * n)))
def test_json_reader_gives_the_value_or_one_line(data):
    tmp, path = _write(data, ".json")
    with tmp:
        try:
            value = read_json(path)
        except MorphableError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            return
    assert json.dumps(value, sort_keys=True) == json.dumps(json.loads(data.decode()), sort_keys=True)


@BUDGET
@given(mutated(SEEDS[".safetensors"]))
def test_safetensors_reader_never_raises_anything_else(data):
    import torch

    result = _read_or_refuse(load_weights, data, ".safetensors")
    if result is None:
        return
    tensors, metadata = result
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    assert all(bool(torch.isfinite(t).all()) for t in tensors.values() if t.is_floating_point())


def _npz_seed() -> bytes:
    out = io.BytesIO()
    np.savez(out, a=np.arange(6.0).reshape(2, 3), b=np.array("mm"))
    return out.getvalue()


@BUDGET
@given(mutated(_npz_seed()))
def test_npz_reader_never_raises_anything_else(data):
    arrays = _read_or_refuse(read_npz, data, ".npz")
    assert arrays is None or all(isinstance(a, np.ndarray) and not a.dtype.hasobject for a in arrays.values())


@pytest.mark.parametrize("suffix", [".obj", ".ply"])
def test_the_seeds_themselves_are_valid(suffix):
    tmp, path = _write(SEEDS[suffix], suffix)
    with tmp:
        mesh = read_mesh(path)
    np.testing.assert_allclose(mesh.vertices, V)
    np.testing.assert_array_equal(mesh.faces, F)
