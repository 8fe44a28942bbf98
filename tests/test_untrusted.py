"""Untrusted files never run code: a malicious pickle under every file name the package reads is refused
by the verbs (its payload would write a sentinel file), and no reader in src/ or benchmarks/ can unpickle.

This is the one file in the repository that calls ``pickle.loads`` / ``np.load(allow_pickle=True)`` and spells
``torch.load(path)``, on purpose: the positive control unpickles a payload the test wrote itself (to show the
sentinel does fire), and the AST scan is fed those calls as source text (to show it catches them). Nothing
here reads a user's file."""

import ast
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import UnpicklingRefused
from morphable.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMALL_SDF = ("--unit", "mm", "--n-surface", "64", "--n-near", "64", "--n-ball", "64")


class _Payload:
    """Unpickling this object writes ``sentinel`` (what an attacker's file would do)."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return exec, (f"open({str(self.sentinel)!r}, 'w').write('pwned')",)


def _pickle_bytes(sentinel: Path) -> bytes:
    return pickle.dumps(_Payload(sentinel))


def _pickled_npy(path: Path, sentinel: Path) -> None:
    """An ``.npz`` (by suffix) or ``.npy`` whose object arrays hold the payload: ``np.load(allow_pickle=True)``
    runs it."""
    array = np.array([_Payload(sentinel)], dtype=object)
    with open(path, "wb") as fh:
        if path.suffix == ".npz":
            np.savez(fh, mean=array, faces=array, unit=array, shape_basis=array, face_points=array)
        else:
            np.save(fh, array)


def test_positive_control_plain_pickle_runs_the_payload(tmp_path):
    sentinel = tmp_path / "sentinel"
    pickle.loads(_pickle_bytes(sentinel))
    assert sentinel.read_text() == "pwned"
    sentinel.unlink()
    path = tmp_path / "evil.npy"
    _pickled_npy(path, sentinel)
    np.load(path, allow_pickle=True)
    assert sentinel.exists()


def test_the_suite_fixture_refuses_unpickling_by_the_package(tmp_path):
    path = tmp_path / "evil.npy"
    _pickled_npy(path, tmp_path / "sentinel")
    probe = {"__name__": "morphable._probe", "np": np, "pickle": pickle, "path": path}
    for code in ("np.load(path, allow_pickle=True)", "pickle.loads(path.read_bytes())",
                 "pickle.Unpickler(open(path, 'rb'))"):
        with pytest.raises(UnpicklingRefused):
            exec(code, probe)
    assert not (tmp_path / "sentinel").exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny SDF dataset, an implicit run on it, a registered dataset and a PCA run on that."""
    from conftest import write_tiny_faces
    from morphable.io import write_obj

    root = tmp_path_factory.mktemp("untrusted")
    t = (1 + 5**0.5) / 2
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
                  [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]]) * 30.0
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
                  [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
                  [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    write_obj(root / "mesh.obj", v, f)
    assert main(["data", "sdf", str(root / "mesh.obj"), "--out", str(root / "sdf"), *SMALL_SDF]) == 0
    assert main(["train", "npm-small", "--data", str(root / "sdf"), "--out", str(root / "npm"), "--epochs", "1",
                 "--quiet"]) == 0
    write_tiny_faces(root / "faces", n=24, subdivisions=1)
    assert main(["train", "pca", "--data", str(root / "faces"), "--out", str(root / "pca"), "--quiet"]) == 0
    return root


# (folder copied from the trained fixture, file replaced by a pickle, verb arguments; {c} is the copy)
CASES = [
    ("pca", "model.safetensors", ["sample", "{c}", "--n", "1", "--out", "{o}"]),
    ("pca", "train_codes.safetensors", ["sample", "{c}", "--n", "1", "--out", "{o}"]),
    ("pca", "config.json", ["eval", "{c}"]),
    ("pca", "template_vertices.npy", ["sample", "{c}", "--n", "1", "--out", "{o}"]),
    ("pca", "template_faces.npy", ["sample", "{c}", "--n", "1", "--out", "{o}"]),
    ("npm", "model.safetensors", ["sample", "{c}", "--n", "1", "--res", "8", "--out", "{o}"]),
    ("npm", "last.safetensors", ["train", "npm-small", "--out", "{c}", "--resume", "--quiet"]),
    ("npm", "config.json", ["train", "npm-small", "--out", "{c}", "--resume", "--quiet"]),
    ("npm", "sdf_dataset.json", ["sample", "{c}", "--n", "1", "--res", "8", "--out", "{o}"]),
    ("sdf", "mesh.npz", ["train", "npm-small", "--data", "{c}", "--out", "{o}", "--epochs", "1", "--quiet"]),
    ("sdf", "sdf_dataset.json", ["train", "npm-small", "--data", "{c}", "--out", "{o}", "--epochs", "1"]),
    ("faces", "dataset.json", ["data", "info", "{c}"]),
    ("faces", "s0/e0/0001.ply", ["data", "info", "{c}"]),
    ("mesh.obj", "", ["data", "sdf", "{c}", "--out", "{o}", *SMALL_SDF]),
    ("vertices.npy", "", ["data", "info", "{c}", "--unit", "mm"]),
    ("model.npz", "", ["data", "linear", "{c}", "--out", "{o}"]),
    ("model.npz", "", ["fit-linear", "{c}", "--points", "{c}", "--out", "{o}"]),
]


@pytest.mark.parametrize("kind", ["raw", "object-array"])
@pytest.mark.parametrize("source, name, argv", CASES, ids=[f"{s}/{n}:{a[0]}-{a[1]}" for s, n, a in CASES])
def test_a_malicious_pickle_under_every_file_name_never_runs(trained, tmp_path, capsys, kind, source, name, argv):
    sentinel = tmp_path / "sentinel"
    copy = tmp_path / Path(source).name
    if (trained / source).is_dir():
        shutil.copytree(trained / source, copy)
        target = copy / name
        assert target.exists(), f"{source} has no {name}"
    else:
        target = copy
    if kind == "raw":
        target.write_bytes(_pickle_bytes(sentinel))
    else:
        _pickled_npy(target, sentinel)
    args = [a.format(c=copy, o=tmp_path / "out") for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("morphable: error:"), err
    assert not sentinel.exists()
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- the source never unpickles


def _call_name(node: ast.Call) -> str:
    parts = []
    func = node.func
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if isinstance(func, ast.Name):
        parts.append(func.id)
    return ".".join(reversed(parts))


def _keyword(node: ast.Call, name: str):
    for kw in node.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "dynamic"
    return None


def unpickling_calls(source: str) -> list[str]:
    """Calls in ``source`` that may unpickle: ``pickle.load(s)`` / ``Unpickler``, ``torch.load`` without
    ``weights_only=True``, ``np.load`` without ``allow_pickle=False``, and any ``allow_pickle=True``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names]
            if getattr(node, "module", None) in ("pickle", "cPickle", "dill", "joblib") or \
                    any(n in ("pickle", "dill", "joblib") for n in names):
                found.append(f"line {node.lineno}: imports {getattr(node, 'module', None) or names}")
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node)
        where = f"line {node.lineno}: {name}"
        if name.split(".")[-1] in ("Unpickler",) or name in ("pickle.load", "pickle.loads"):
            found.append(where)
        elif name == "torch.load" and _keyword(node, "weights_only") is not True:
            found.append(f"{where} without weights_only=True")
        elif name in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") is not False:
            found.append(f"{where} without allow_pickle=False")
        if _keyword(node, "allow_pickle") not in (None, False):
            found.append(f"{where} with allow_pickle not False")
    return found


def test_the_scan_finds_every_unpickling_pattern():
    bad = """
import pickle
np.load(path)
np.load(path, allow_pickle=True)
numpy.load(path, allow_pickle=flag)
torch.load(path)
torch.load(path, weights_only=False)
pickle.loads(data)
x = something(allow_pickle=True)
"""
    found = unpickling_calls(bad)
    assert {int(f.split(":")[0].removeprefix("line ")) for f in found} == set(range(2, 10)), found
    good = "np.load(p, allow_pickle=False)\ntorch.load(p, weights_only=True)\nnp.lib.format.read_array(f, allow_pickle=False)"
    assert unpickling_calls(good) == []


def test_no_source_file_can_unpickle():
    files = sorted((ROOT / "src").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))
    assert len(files) > 20
    problems = {str(f.relative_to(ROOT)): unpickling_calls(f.read_text()) for f in files}
    assert {f: p for f, p in problems.items() if p} == {}


# --------------------------------------------------------------------------- SDF dataset files stay inside


@pytest.mark.parametrize("entry", ["../outside.npz", "/etc/passwd", "sub/../../outside.npz", "link.npz", "", 7])
def test_sdf_dataset_file_entries_must_stay_inside_the_folder(trained, tmp_path, entry):
    from morphable.data.sdf import SdfDataset
    from morphable.errors import MorphableError
    from morphable.io import read_json, write_json

    dataset = tmp_path / "sdf"
    shutil.copytree(trained / "sdf", dataset)
    shutil.copy(dataset / "mesh.npz", tmp_path / "outside.npz")
    (dataset / "link.npz").symlink_to(tmp_path / "outside.npz")
    info = read_json(dataset / "sdf_dataset.json")
    assert len(SdfDataset(dataset)) == 1
    info["shapes"][0]["file"] = entry
    write_json(dataset / "sdf_dataset.json", info)
    with pytest.raises(MorphableError) as exc_info:
        SdfDataset(dataset)
    message = str(exc_info.value)
    assert message.startswith(str(dataset / "sdf_dataset.json")) and "\n" not in message
    assert "'file'" in message


def test_a_link_inside_the_dataset_folder_is_followed(trained, tmp_path):
    from morphable.data.sdf import SdfDataset
    from morphable.io import read_json, write_json

    dataset = tmp_path / "sdf"
    shutil.copytree(trained / "sdf", dataset)
    (dataset / "alias.npz").symlink_to(dataset / "mesh.npz")
    info = read_json(dataset / "sdf_dataset.json")
    info["shapes"][0]["file"] = "alias.npz"
    write_json(dataset / "sdf_dataset.json", info)
    assert len(SdfDataset(dataset)) == 1
