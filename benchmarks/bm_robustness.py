"""Fuzzing the readers through the command line: corrupted files fed to the real verbs.

For each reader, ``--cases`` corrupted inputs (default 1,000) are made from valid seed files (written
by the verbs themselves at start-up) by generic byte mutations (truncation, empty file, byte and bit
flips, zeroed / duplicated / inserted chunks) and by format-aware ones (lying headers with huge or
negative counts, out-of-range or zero indices, dropped face corners, NaN / Inf, wrong dtypes and shapes,
missing or renamed keys, files cut mid-line, deep JSON nesting). Each case runs ``morphable.cli.main``
with the verb that reads the file (``data sdf``, ``data info``, ``data linear``, ``train npm-small``,
``sample``) in a child process forked from a worker that has already imported torch and the package
(a fresh interpreter per case would spend most of the budget importing torch): the child gets a 10 s
``alarm`` (its default action kills it: a hang) and an address-space limit of 1 GiB above the worker's
(``resource.setrlimit(RLIMIT_AS)``; Linux does not enforce ``RLIMIT_RSS``). Its outcome is one of

* ``error``: exit 2, the last stderr line a ``morphable: error:`` line, no traceback (``names_file``
  counts those that name the corrupted file or its folder);
* ``accepted``: exit 0 and the output checked valid by reading it back;
* ``invalid_output``: exit 0 but the output does not read back;
* ``traceback``, ``hang`` (killed by the alarm), ``memory`` (MemoryError / failed allocation),
  ``crash`` (killed by another signal), ``half_written`` (a failed case left its output, or ``.tmp`` /
  ``.old`` debris anywhere in the case folder).

Writes ``benchmarks/results/bm_robustness.json`` and prints a table. Two workers by default (2 cores).

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bm_robustness.py [--cases N] [--workers 2]
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import random
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy and torch start their thread pools; forks follow

import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bm_robustness.json"
TIMEOUT_S = 10
MEMORY_LIMIT = 1 << 30
OUTCOMES = ("error", "accepted", "invalid_output", "traceback", "hang", "memory", "crash", "half_written")
HUGE = (10**12, 2**31, 2**32 + 3, 2**63 - 1, -1, -(10**9))
BAD_FLOATS = ("nan", "inf", "-inf", "1e999", "NaN", "0x1p3", "1,5", "")


# --------------------------------------------------------------------------- seeds


def _icosahedron() -> tuple[np.ndarray, np.ndarray]:
    """A closed icosahedron of radius ~50 mm: ``(12, 3)`` vertices, ``(20, 3)`` faces."""
    t = (1 + 5**0.5) / 2
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
                  [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], float) * 30.0
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
                  [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
                  [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    return v, f


def _cli(*argv: str) -> None:
    from morphable.cli import main

    if main(list(argv)) != 0:
        raise SystemExit(f"seed command failed: morphable {' '.join(argv)}")


def make_seeds(root: Path) -> None:
    """The valid files every corruption starts from, written by the package itself."""
    from morphable.io import write_obj, write_ply

    v, f = _icosahedron()
    write_obj(root / "mesh.obj", v, f)
    write_ply(root / "binary.ply", v, f)
    header = ["ply", "format ascii 1.0", f"element vertex {len(v)}", "property float x", "property float y",
              "property float z", f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    body = [f"{x:.6g} {y:.6g} {z:.6g}" for x, y, z in v] + [f"3 {a} {b} {c}" for a, b, c in f]
    (root / "ascii.ply").write_text("\n".join(header + body) + "\n")
    small = ("--n-surface", "64", "--n-near", "64", "--n-ball", "64")
    _cli("data", "sdf", str(root / "mesh.obj"), "--out", str(root / "sdf"), "--unit", "mm", *small)
    basis = np.random.default_rng(0).normal(size=(len(v) * 3, 2))
    np.savez(root / "model.npz", mean=v, shape_basis=basis, shape_std=np.ones(2), faces=f, unit=np.array("mm"))
    _cli("data", "synth", "--out", str(root / "synth"), "--subjects", "2", "--expressions", "2", "--frames", "3")
    _cli("train", "pca", "--data", str(root / "synth"), "--out", str(root / "pca"), "--quiet")
    for extra in ("meshes", "plots"):
        shutil.rmtree(root / "pca" / extra, ignore_errors=True)
    np.save(root / "vertices.npy", np.stack([v, v * 1.1, v * 0.9]).astype(np.float32))


def warm_up(root: Path) -> None:
    """Run every verb once on the valid seeds: it imports what the verbs import lazily (torch, plotting),
    so that the forked cases do not each pay for it, and shows each seed is accepted."""
    warm = root.parent / "warm"
    for reader in READERS:
        case = warm / reader.name
        case.mkdir(parents=True)
        seed = root / reader.seed
        _cli(*reader.argv(case, seed))
        reader.valid(case / "out")
    shutil.rmtree(warm)


# --------------------------------------------------------------------------- mutations


def generic(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    """A format-blind corruption of ``data``."""
    kind = rng.choice(("truncate", "empty", "flip", "bitflip", "zero", "duplicate", "insert", "delete"))
    n = len(data)
    buf = bytearray(data)
    if kind == "truncate":
        return kind, data[: rng.randrange(max(n, 1))]
    if kind == "empty":
        return kind, b""
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(n)] = rng.randrange(256)
    elif kind == "bitflip":
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
    elif kind == "zero":
        i, width = rng.randrange(n), rng.randint(1, 64)
        buf[i : i + width] = bytes(len(buf[i : i + width]))
    elif kind == "duplicate":
        i = rng.randrange(n)
        buf[i:i] = buf[i : i + rng.randint(1, 256)]
    elif kind == "insert":
        buf[rng.randrange(n + 1) : rng.randrange(n + 1)] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    else:
        i = rng.randrange(n)
        del buf[i : i + rng.randint(1, 256)]
    return kind, bytes(buf)


def _edit_lines(rng: random.Random, lines: list[str], edit: Callable[[random.Random, str], str]) -> list[str]:
    i = rng.randrange(len(lines))
    return lines[:i] + [edit(rng, lines[i])] + lines[i + 1 :]


def _bad_index(rng: random.Random, count: int) -> str:
    return str(rng.choice((0, count + 1, -count - 1, 10**12, -(10**12), count * 7)))


def obj_mutation(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    lines = data.decode().splitlines()
    n_v = sum(line.startswith("v ") for line in lines)
    faces = [i for i, line in enumerate(lines) if line.startswith("f ")]
    verts = [i for i, line in enumerate(lines) if line.startswith("v ")]
    kind = rng.choice(("index", "drop_corners", "coordinate", "cut_mid_line", "drop_line", "garbage", "slashes",
                       "few_numbers"))
    if kind == "index":
        i = rng.choice(faces)
        words = lines[i].split()
        words[rng.randint(1, 3)] = _bad_index(rng, n_v)
        lines[i] = " ".join(words)
    elif kind == "drop_corners":
        i = rng.choice(faces)
        lines[i] = " ".join(lines[i].split()[: rng.randint(1, 3)])
    elif kind == "coordinate":
        i = rng.choice(verts)
        words = lines[i].split()
        words[rng.randint(1, 3)] = rng.choice(BAD_FLOATS)
        lines[i] = " ".join(words)
    elif kind == "few_numbers":
        i = rng.choice(verts)
        lines[i] = " ".join(lines[i].split()[: rng.randint(1, 3)])
    elif kind == "cut_mid_line":
        text = "\n".join(lines[: rng.randint(1, len(lines))])
        return kind, text[: len(text) - rng.randint(1, 4)].encode()
    elif kind == "drop_line":
        del lines[rng.randrange(len(lines))]
    elif kind == "garbage":
        i = rng.choice(faces)
        lines[i] = lines[i] + " " + rng.choice(("x", "1/2/3/4", "//", "1.5", "\x00"))
    else:
        i = rng.choice(faces)
        lines[i] = "f " + " ".join(f"{w}/{rng.choice(('', '1', '99', '-5', 'a'))}" for w in lines[i].split()[1:])
    return kind, ("\n".join(lines) + "\n").encode()


def _ply_header_mutation(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header, body = data[:end].decode().splitlines(), data[end:]
    kind = rng.choice(("count", "count", "type", "format", "no_end_header", "property_order"))
    elems = [i for i, line in enumerate(header) if line.startswith("element")]
    props = [i for i, line in enumerate(header) if line.startswith("property")]
    if kind == "count":
        i = rng.choice(elems)
        words = header[i].split()
        header[i] = f"element {words[1]} {rng.choice(HUGE + (0, int(words[2]) + 1, int(words[2]) - 1))}"
    elif kind == "type":
        i = rng.choice(props)
        words = header[i].split()
        t = rng.choice(("float", "double", "char", "uchar", "int", "blob", "list"))
        words[-2 if words[1] != "list" else rng.choice((2, 3))] = t
        header[i] = " ".join(words)
    elif kind == "format":
        header[1] = rng.choice(("format ascii 1.0", "format binary_little_endian 1.0", "format binary_big_endian 1.0",
                                "format xml 1.0", "format"))
    elif kind == "no_end_header":
        return kind, "\n".join(header[:-1]).encode() + b"\n" + body
    else:
        i, j = rng.sample(props, 2)
        header[i], header[j] = header[j], header[i]
    return kind, ("\n".join(header) + "\n").encode() + body


def ply_ascii_mutation(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    if rng.random() < 0.5:
        return _ply_header_mutation(rng, data)
    text = data.decode()
    head, body = text.split("end_header\n")
    lines = body.splitlines()
    n_v = int(head.split("element vertex ")[1].split()[0])
    kind = rng.choice(("index", "coordinate", "list_count", "drop_line", "cut"))
    if kind == "index":
        i = rng.randrange(n_v, len(lines))
        words = lines[i].split()
        words[rng.randint(1, 3)] = _bad_index(rng, n_v)
        lines[i] = " ".join(words)
    elif kind == "coordinate":
        i = rng.randrange(n_v)
        words = lines[i].split()
        words[rng.randrange(3)] = rng.choice(BAD_FLOATS)
        lines[i] = " ".join(words)
    elif kind == "list_count":
        i = rng.randrange(n_v, len(lines))
        words = lines[i].split()
        words[0] = str(rng.choice((0, 1, 2, 4, 255, -3, 10**12)))
        lines[i] = " ".join(words)
    elif kind == "drop_line":
        del lines[rng.randrange(len(lines))]
    else:
        cut = "\n".join(lines)
        return kind, (head + "end_header\n" + cut[: rng.randrange(len(cut))]).encode()
    return kind, (head + "end_header\n" + "\n".join(lines) + "\n").encode()


def ply_binary_mutation(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    if rng.random() < 0.5:
        return _ply_header_mutation(rng, data)
    end = data.index(b"end_header\n") + len(b"end_header\n")
    n_v = int(data[:end].split(b"element vertex ")[1].split()[0])
    buf = bytearray(data)
    face0 = end + 12 * n_v
    n_f = (len(data) - face0) // 13
    kind = rng.choice(("nan", "index", "list_count"))
    if kind == "nan":
        value = rng.choice((float("nan"), float("inf"), -float("inf")))
        struct.pack_into("<f", buf, end + 4 * rng.randrange(3 * n_v), value)
    elif kind == "index":
        struct.pack_into("<i", buf, face0 + 13 * rng.randrange(n_f) + 1 + 4 * rng.randrange(3),
                         rng.choice((n_v, n_v + 100, -1, 2**31 - 1, -(2**31))))
    else:
        buf[face0 + 13 * rng.randrange(n_f)] = rng.choice((0, 1, 2, 4, 255))
    return kind, bytes(buf)


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def _lying_npz(arrays: dict[str, np.ndarray], key: str, rng: random.Random) -> bytes:
    """An archive whose ``key`` member has a valid CRC but a header claiming a huge shape."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(array))
            raw = member.getvalue()
            if name == key:
                shape = str(tuple(array.shape)).encode()
                raw = raw.replace(shape, str((rng.choice(HUGE[:4]),) + tuple(array.shape[1:])).encode(), 1)
            archive.writestr(f"{name}.npy", raw)
    return out.getvalue()


def npz_mutation(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    key = rng.choice(sorted(arrays))
    kind = rng.choice(("dtype", "nan", "shape", "missing", "extra", "lying_header", "object", "empty"))
    a = arrays[key]
    if kind == "lying_header":
        return kind, _lying_npz(arrays, key, rng)
    if kind == "dtype":
        dtype = np.dtype(rng.choice((np.int32, np.bool_, np.complex64, np.uint8, "U4")))
        arrays[key] = a.astype(dtype) if a.dtype.kind in "biuf" else np.zeros(a.shape, dtype)
    elif kind == "nan" and a.dtype.kind == "f" and a.size:
        flat = a.copy().reshape(-1)
        flat[rng.randrange(flat.size)] = rng.choice((np.nan, np.inf, -np.inf))
        arrays[key] = flat.reshape(a.shape)
    elif kind == "shape":
        arrays[key] = a.reshape(-1)[: max(a.size - rng.randint(0, 3), 0)] if a.size else np.zeros((2, 2))
    elif kind == "missing":
        del arrays[key]
    elif kind == "extra":
        arrays["unexpected"] = np.zeros(3)
    elif kind == "object":
        arrays[key] = np.array([{"x": 1}, None], dtype=object)
    else:
        arrays[key] = np.zeros((0,) + a.shape[1:], a.dtype)
    return kind, _npz_bytes(arrays)


def npy_mutation(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    array = np.load(io.BytesIO(data), allow_pickle=False)
    kind = rng.choice(("lying_header", "dtype", "nan", "shape", "object"))
    if kind == "lying_header":
        shape = str(tuple(array.shape)).encode()
        return kind, data.replace(shape, str((rng.choice(HUGE[:4]),) + array.shape[1:]).encode(), 1)
    if kind == "dtype":
        array = array.astype(rng.choice((np.int64, np.bool_, np.complex64, "U3")))
    elif kind == "nan":
        array = array.copy()
        array.reshape(-1)[rng.randrange(array.size)] = rng.choice((np.nan, np.inf))
    elif kind == "shape":
        array = array.reshape(-1)[: rng.randrange(array.size)]
    else:
        array = np.array([None, {"x": 1}], dtype=object)
    out = io.BytesIO()
    np.save(out, array)
    return kind, out.getvalue()


def safetensors_mutation(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    body = data[8 + length :]
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    kind = rng.choice(("length", "shape", "dtype", "offsets", "missing", "nan", "metadata", "rename"))
    if kind == "length":
        return kind, struct.pack("<Q", rng.choice((0, 1, length + 1, length - 1, 2**40, 2**64 - 1))) + data[8:]
    entry = header[name]
    if kind == "shape":
        entry["shape"] = [rng.choice((10**12, 0, 2**31, 7))] + entry["shape"][1:]
    elif kind == "dtype":
        entry["dtype"] = rng.choice(("I64", "F16", "BOOL", "U8", "F64", "XYZ", "I8"))
    elif kind == "offsets":
        start, stop = entry["data_offsets"]
        entry["data_offsets"] = rng.choice(([stop, start], [start, stop + 8], [0, 2**62], [start, len(body) * 2]))
    elif kind == "missing":
        del header[name]
    elif kind == "nan":
        if entry["dtype"] in ("F32", "F64"):
            width = 4 if entry["dtype"] == "F32" else 8
            start, stop = entry["data_offsets"]
            if stop > start:
                at = start + width * rng.randrange((stop - start) // width)
                value = rng.choice((float("nan"), float("inf")))
                body = body[:at] + struct.pack("<f" if width == 4 else "<d", value) + body[at + width :]
    elif kind == "metadata":
        header["__metadata__"] = rng.choice(({"a": 1}, [], "x", {"format": None}))
    else:
        header[name + "_renamed"] = header.pop(name)
    raw = json.dumps(header).encode()
    return kind, struct.pack("<Q", len(raw)) + raw + body


def _json_paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    paths = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            paths += _json_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:4]):
            paths += _json_paths(v, prefix + (i,))
    return paths


def json_mutation(rng: random.Random, data: bytes) -> tuple[str, bytes]:
    obj = json.loads(data)
    kind = rng.choice(("value", "value", "delete", "extra", "deep", "top"))
    if kind == "deep":
        depth = rng.choice((100, 10_000, 200_000))
        return kind, b"[" * depth + b"]" * depth
    if kind == "top":
        return kind, json.dumps(rng.choice(([], 1, "x", None, [obj]))).encode()
    path = rng.choice(_json_paths(obj)[1:])
    parent = obj
    for step in path[:-1]:
        parent = parent[step]
    if kind == "delete":
        del parent[path[-1]]
    elif kind == "extra" and isinstance(parent, dict):
        parent["unexpected_key"] = 1
    else:
        parent[path[-1]] = rng.choice((None, "", "../../etc/passwd", "/dev/zero", -1, 0, 1e308, float("nan"),
                                       float("inf"), [], {}, True, 10**30, "x" * 1000, [[[]]], -(10**12)))
    return kind, json.dumps(obj).encode()


# --------------------------------------------------------------------------- readers and verbs


def _valid_sdf(out: Path) -> None:
    from morphable.data.sdf import SdfDataset

    SdfDataset(out)


def _valid_run(out: Path) -> None:
    from morphable.io import load_weights, read_json

    load_weights(out / "model.safetensors")
    read_json(out / "config.json")


def _valid_meshes(out: Path) -> None:
    from morphable.io import read_mesh

    meshes = sorted(out.rglob("*.ply"))
    if not meshes:
        raise ValueError("no meshes written")
    for mesh in meshes:
        read_mesh(mesh)


def _valid_registered(out: Path) -> None:
    from morphable.data.registered import load_registered

    load_registered(out)


def _nothing(out: Path) -> None:
    """``data info`` writes nothing; exit 0 with its summary is the valid result."""


@dataclass(frozen=True)
class Reader:
    """One reader under test: the seed it corrupts (``seed`` copied into the case folder, ``target`` the
    file inside it that is replaced), the format-aware mutation and the verb that reads it."""

    name: str
    seed: str
    target: str
    mutate: Callable[[random.Random, bytes], tuple[str, bytes]]
    argv: Callable[[Path, Path], list[str]]  # (case folder, input) -> arguments of morphable
    valid: Callable[[Path], None]


def _seeds() -> Path:
    return Path(os.environ["BM_ROBUSTNESS_WORK"]) / "seeds"


SDF_ARGS = ["--unit", "mm", "--n-surface", "64", "--n-near", "64", "--n-ball", "64"]


def _sdf_argv(case: Path, path: Path) -> list[str]:
    return ["data", "sdf", str(path), "--out", str(case / "out"), *SDF_ARGS]


def _train_argv(case: Path, path: Path) -> list[str]:
    return ["train", "npm-small", "--data", str(path), "--out", str(case / "out"), "--epochs", "1", "--quiet"]


READERS = (
    Reader("obj", "mesh.obj", "", obj_mutation, _sdf_argv, _valid_sdf),
    Reader("ply_ascii", "ascii.ply", "", ply_ascii_mutation, _sdf_argv, _valid_sdf),
    Reader("ply_binary", "binary.ply", "", ply_binary_mutation, _sdf_argv, _valid_sdf),
    Reader("npz_sdf_samples", "sdf", "mesh.npz", npz_mutation, _train_argv, _valid_run),
    Reader("npz_linear_model", "model.npz", "", npz_mutation,
           lambda c, p: ["data", "linear", str(p), "--out", str(c / "out"), "--subjects", "2", "--expressions", "1",
                         "--frames", "1"], _valid_registered),
    Reader("npy_registered", "vertices.npy", "", npy_mutation,
           lambda c, p: ["data", "info", str(p), "--unit", "mm", "--template", str(_seeds() / "mesh.obj")],
           _nothing),
    Reader("safetensors_model", "pca", "model.safetensors", safetensors_mutation,
           lambda c, p: ["sample", str(p), "--n", "2", "--out", str(c / "out")], _valid_meshes),
    Reader("safetensors_codes", "pca", "train_codes.safetensors", safetensors_mutation,
           lambda c, p: ["sample", str(p), "--n", "2", "--out", str(c / "out")], _valid_meshes),
    Reader("json_config", "pca", "config.json", json_mutation,
           lambda c, p: ["sample", str(p), "--n", "2", "--out", str(c / "out")], _valid_meshes),
    Reader("json_sdf_dataset", "sdf", "sdf_dataset.json", json_mutation, _train_argv, _valid_run),
    Reader("json_dataset", "synth", "dataset.json", json_mutation,
           lambda c, p: ["data", "info", str(p)], _nothing),
)


# --------------------------------------------------------------------------- one case


def _child(argv: list[str], case: Path, valid: Callable[[Path], None], address_limit: int) -> None:
    """Run ``morphable argv`` in this forked child and ``os._exit`` with its outcome code."""
    code = 1
    try:
        for fd, name in ((1, "stdout.txt"), (2, "stderr.txt")):
            os.dup2(os.open(case / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        resource.setrlimit(resource.RLIMIT_AS, (address_limit, address_limit))
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(TIMEOUT_S)
        from morphable.cli import main

        code = main(argv)
        if code == 0:
            try:
                valid(case / "out")
            except Exception as exc:  # the output does not read back
                print(f"INVALID OUTPUT: {exc}", file=sys.stderr)
                code = 3
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except MemoryError:
        traceback.print_exc()
        code = 4
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _debris(case: Path) -> list[str]:
    return [str(p.relative_to(case)) for p in case.rglob("*") if p.name.endswith((".tmp", ".old"))]


def run_case(job: tuple[int, int, int]) -> dict[str, Any]:
    """Make and run case ``index`` of reader ``reader_index`` (seeded by ``seed``); return its record."""
    reader_index, index, seed = job
    reader = READERS[reader_index]
    rng = random.Random(f"{seed}:{reader.name}:{index}")
    work = Path(os.environ["BM_ROBUSTNESS_WORK"])
    case = work / f"{reader.name}_{index}"
    seed_path = _seeds() / reader.seed
    if seed_path.is_dir():
        shutil.copytree(seed_path, case / reader.seed)
        path = case / reader.seed
        target = path / reader.target
    else:
        case.mkdir()
        path = target = case / reader.seed
    data = (seed_path / reader.target if reader.target else seed_path).read_bytes()
    family, (kind, corrupted) = ("generic", generic(rng, data)) if rng.random() < 0.4 else \
        ("aware", reader.mutate(rng, data))
    target.write_bytes(corrupted)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    address_limit = _address_space() + MEMORY_LIMIT
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        _child(reader.argv(case, path), case, reader.valid, address_limit)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    stderr = (case / "stderr.txt").read_text(errors="replace")
    lines = [line for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if os.WIFSIGNALED(status):
        outcome = "hang" if os.WTERMSIG(status) == signal.SIGALRM else "crash"
    else:
        rc = os.WEXITSTATUS(status)
        if rc == 4 or "can't allocate memory" in stderr or "MemoryError" in stderr:
            outcome = "memory"
        elif "Traceback" in stderr or rc not in (0, 2, 3):
            outcome = "traceback"
        elif rc == 3:
            outcome = "invalid_output"
        elif rc == 0:
            outcome = "accepted"
        else:
            outcome = "error" if last.startswith("morphable: error:") else "traceback"
        if outcome in ("error", "traceback") and (case / "out").exists():
            outcome = "half_written"
    if _debris(case):
        outcome = "half_written"
    record = {"reader": reader.name, "index": index, "mutation": f"{family}:{kind}", "outcome": outcome,
              "seconds": round(seconds, 3), "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
              "worker_rss_mb": round(rss_before / 1024, 1),
              "names_file": outcome == "error" and (target.name in last or path.name in last)}
    if outcome == "error":
        record["message"] = last.removeprefix("morphable: error: ").replace(str(case), "CASE")[:300]
    if outcome not in ("error", "accepted"):
        record["stderr_tail"] = "\n".join(lines[-6:])[-1500:]
    shutil.rmtree(case, ignore_errors=True)
    return record


def _address_space() -> int:
    """Current virtual size of this process in bytes."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * resource.getpagesize()


def _init_worker(work: str) -> None:
    os.environ["BM_ROBUSTNESS_WORK"] = work
    os.environ["MORPHABLE_CACHE"] = str(Path(work) / f"cache_{os.getpid()}")
    import morphable.cli  # noqa: F401  (imported once; the forked cases inherit it)


# --------------------------------------------------------------------------- driver


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    per_reader: dict[str, Any] = {}
    for reader in READERS:
        rows = [r for r in records if r["reader"] == reader.name]
        if not rows:
            continue
        counts = Counter(r["outcome"] for r in rows)
        errors = [r for r in rows if r["outcome"] == "error"]
        per_reader[reader.name] = {
            "cases": len(rows), **{o: counts.get(o, 0) for o in OUTCOMES},
            "errors_naming_file": sum(r["names_file"] for r in errors),
            "max_seconds": max(r["seconds"] for r in rows),
            "max_rss_mb": max(r["max_rss_mb"] for r in rows),
            "max_rss_growth_mb": max(r["max_rss_mb"] - r["worker_rss_mb"] for r in rows),
            "errors_not_naming_file": sorted({r["message"] for r in errors if not r["names_file"]})[:5],
            "sample_errors": sorted({r["message"] for r in errors})[:8],
            "verb": " ".join(reader.argv(Path("CASE"), Path("INPUT"))[:2]),
        }
    return per_reader


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=1000, help="corrupted inputs per reader (default 1000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corruptions (default 0)")
    parser.add_argument("--readers", nargs="+", choices=[r.name for r in READERS], help="only these readers")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    args = parser.parse_args(argv)
    readers = [i for i, r in enumerate(READERS) if not args.readers or r.name in args.readers]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bm_robustness_") as work:
        os.environ["MORPHABLE_CACHE"] = str(Path(work) / "cache_seeds")
        os.environ["BM_ROBUSTNESS_WORK"] = work
        (Path(work) / "seeds").mkdir()
        make_seeds(Path(work) / "seeds")
        warm_up(Path(work) / "seeds")
        jobs = [(r, i, args.seed) for i in range(args.cases) for r in readers]
        with mp.get_context("fork").Pool(args.workers, _init_worker, (work,)) as pool:
            records = []
            for record in pool.imap_unordered(run_case, jobs, chunksize=4):
                records.append(record)
                if len(records) % 500 == 0:
                    print(f"{len(records)} / {len(jobs)} cases, {time.perf_counter() - start:.0f} s", flush=True)
    seconds = time.perf_counter() - start
    per_reader = summarise(records)
    bad = [r for r in records if r["outcome"] not in ("error", "accepted")]
    result = {
        "cases_per_reader": args.cases, "workers": args.workers, "seed": args.seed, "seconds": round(seconds, 1),
        "method": "in-process morphable.cli.main in a child forked per case from a worker with torch imported; "
                  f"alarm({TIMEOUT_S}) kills a hang; RLIMIT_AS = worker's address space + 1 GiB",
        "totals": {o: sum(v[o] for v in per_reader.values()) for o in ("cases",) + OUTCOMES},
        "readers": per_reader,
        "failures": sorted(bad, key=lambda r: (r["reader"], r["index"]))[:200],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    cols = ("cases",) + OUTCOMES + ("errors_naming_file", "max_seconds", "max_rss_mb", "max_rss_growth_mb")
    for row in per_reader.values():
        row["max_rss_growth_mb"] = round(row["max_rss_growth_mb"], 1)
    print(f"{'reader':<18} " + " ".join(f"{c[:9]:>9}" for c in cols))
    for name, row in per_reader.items():
        print(f"{name:<18} " + " ".join(f"{row[c]:>9}" for c in cols))
    print(f"{len(records)} cases in {seconds:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
