"""Mesh, array and weight files, units and the cache folder.

* OBJ: our own reader of ``v``, ``vt`` and ``f`` lines. Vertex order is kept exactly as in the file
  (trimesh re-orders the vertices of OBJ files that carry UVs, which breaks correspondence); texture
  coordinates are a separate table indexed per face corner, so a vertex may have several UVs.
  Polygons are split into triangles as fans ``(v0, vi, vi+1)``.
* PLY: our own reader of ASCII and binary (little/big endian) files. A header parse plus one
  ``numpy.frombuffer`` call per element is 5-20x faster than a general reader on the small
  COMA-sized files that datasets hold by the thousand, and it lets every problem be reported as
  one line naming the file.
* Writing: binary little-endian PLY with optional per-vertex colours, and OBJ with optional UVs.
* Weights: safetensors only (never pickle). JSON for configs and metrics. Arrays: ``.npy`` / ``.npz`` read by
  :func:`read_npy` / :func:`read_npz`, never unpickling.
* Untrusted files: readers open regular files only (a link to ``/dev/zero`` or a FIFO would never end) and
  compare every count a header claims (PLY elements, ``.npy`` shapes, zip members) with the bytes the file
  holds before allocating, so a lying header costs nothing; every problem is one line naming the file.

Every write goes to a temporary file (or folder, :func:`atomic_folder`) next to the target and is
renamed into place, so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
import tokenize
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from morphable.errors import input_error

MESH_SUFFIXES = (".ply", ".obj")
NAMED_UNITS = {"m": 1000.0, "cm": 10.0, "mm": 1.0}
UNIT_HELP = "m, cm, mm or a number of millimetres per unit (e.g. 250 when 1 unit = 25 cm)"


def parse_unit(unit: Any) -> str | None:
    """The canonical spelling of a length unit, or None when it is not one: ``m``, ``cm``, ``mm``, or a
    finite positive number of millimetres per unit (``250``, ``"2.5e2"`` -> ``"250"``; a number is
    written back in the shortest form that reads as the same float)."""
    if isinstance(unit, str) and unit in NAMED_UNITS:
        return unit
    if isinstance(unit, bool) or not isinstance(unit, (str, int, float)):
        return None
    try:
        value = float(unit)
    except (ValueError, OverflowError):
        return None
    if not (np.isfinite(value) and value > 0):
        return None
    return format(value, "g") if float(format(value, "g")) == value else repr(value)


class _UnitsToMm(dict):
    """``UNIT_TO_MM[unit]``: millimetres per ``unit`` for the named units and for any unit accepted by
    :func:`parse_unit` (``UNIT_TO_MM["250"] == 250.0``); ``unit in UNIT_TO_MM`` says whether it is one.
    Iterating lists the named units only."""

    def __missing__(self, unit: Any) -> float:
        canonical = parse_unit(unit)
        if canonical is None:
            raise KeyError(unit)
        return NAMED_UNITS.get(canonical, float(canonical))

    def __contains__(self, unit: object) -> bool:
        return parse_unit(unit) is not None


UNIT_TO_MM = _UnitsToMm(NAMED_UNITS)
"""Length units of data sets and the factor that turns a length in that unit into millimetres."""


@dataclass
class Mesh:
    """A triangle mesh: ``vertices (V, 3)`` float64 and ``faces (F, 3)`` int64.

    Texture coordinates, when the file has them: ``uvs (T, 2)`` float64 and ``face_uvs (F, 3)`` int64
    (corner ``k`` of face ``f`` has UV ``uvs[face_uvs[f, k]]``); both None otherwise.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray | None = None
    face_uvs: np.ndarray | None = None


def cache_dir(*parts: str) -> Path:
    """``$MORPHABLE_CACHE/<parts>``, or ``~/.cache/morphable/<parts>`` when the variable is unset or
    empty. The folder is not created (writers create it when they first store something)."""
    root = os.environ.get("MORPHABLE_CACHE") or Path.home() / ".cache" / "morphable"
    return Path(root).joinpath(*parts)


# --------------------------------------------------------------------------- atomic writes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _naming(path):
            yield tmp_path
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def _naming(path: Path) -> Iterator[None]:
    """Give an :class:`OSError` that names no file (a full disk while writing) the name of ``path``, so that
    the command line's one line says what could not be written."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise OSError(exc.errno, f"could not be written ({reason})", str(path)) from exc


def check_output_folder(path: str | os.PathLike, overwrite: bool, hint: str = "use --overwrite") -> Path:
    """``path`` checked before any work is done: a file is refused, and so is a non-empty existing folder
    unless ``overwrite`` (the message names the way out, ``hint``)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise input_error(path, "exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise input_error(path, f"output folder exists and is not empty ({hint})")
    return path


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; it becomes ``path`` only if the block succeeds.

    An existing ``path`` (checked by the caller: overwrite or not) is moved aside, the new folder is
    renamed into place and the old one deleted; a failed block deletes the temporary folder and leaves
    ``path`` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        with _naming(path):
            yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
        if not (path.exists() or path.is_symlink()):
            os.replace(tmp, path)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        os.replace(path, old / path.name)
        try:
            os.replace(tmp, path)
        except OSError:
            os.replace(old / path.name, path)
            raise
        finally:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing, irregular or broken file raises a one-line :class:`MorphableError`."""
    path = Path(path)
    data = read_file_bytes(path)
    try:
        return json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise input_error(path, f"not valid JSON ({exc})") from None
    except RecursionError:
        raise input_error(path, "not valid JSON (nested too deeply)") from None


# --------------------------------------------------------------------------- untrusted files


def regular_file(path: str | os.PathLike, what: str = "file") -> int:
    """The size in bytes of ``path``, refusing anything but a regular file (after links are followed).

    Devices, FIFOs and sockets never end or block (a link to ``/dev/zero``), so no reader opens them.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise input_error(path, f"{what} not found") from None
    except OSError as exc:
        raise input_error(path, f"cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise input_error(path, "is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise input_error(path, "not a regular file (a device, FIFO or socket): refused")
    return info.st_size


def read_file_bytes(path: str | os.PathLike, what: str = "file") -> bytes:
    """The contents of a regular file (:func:`regular_file`); an unreadable one is one line naming it."""
    regular_file(path, what)
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise input_error(path, f"cannot be read ({exc.strerror or exc})") from None


def _npy_header(path: Path, fh: Any, available: int) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the header of one ``.npy`` stream, checked against the ``available`` bytes
    so that a header claiming a huge array is refused before anything is allocated."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError, tokenize.TokenError) as exc:
        raise input_error(path, f"not a readable .npy array ({_first_line(exc)})") from None
    if dtype.hasobject:
        raise input_error(path, "holds Python objects: refused (arrays are read without unpickling)")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if nbytes > available:
        raise input_error(path, f"array header claims {nbytes} bytes, more than the {available} stored")
    return shape, dtype


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


_DEFLATE_MAX_RATIO = 1100
"""Deflate cannot expand data more than ~1032 times: a zip member claiming more is a lie (or a bomb)."""


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive, never unpickling and never allocating more than the archive
    can hold: each member's ``.npy`` header is checked against the member's size first."""
    path = Path(path)
    size = regular_file(path)
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.compress_type == zipfile.ZIP_STORED and info.file_size > size:
                    raise input_error(path, f"member {info.filename} claims more bytes than the file has")
                if info.file_size > max(info.compress_size, 1) * _DEFLATE_MAX_RATIO:
                    raise input_error(path, f"member {info.filename} claims an impossible uncompressed size")
                with archive.open(info) as fh:
                    _npy_header(path, fh, info.file_size)
                with archive.open(info) as fh:
                    array = np.lib.format.read_array(fh, allow_pickle=False)
                arrays[info.filename.removesuffix(".npy")] = array
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError,
            RuntimeError) as exc:
        raise input_error(path, f"not a readable .npz archive ({_first_line(exc)})") from None
    return arrays


def read_npy(path: str | os.PathLike) -> np.ndarray:
    """One ``.npy`` array, never unpickling, its header checked against the file size before reading."""
    path = Path(path)
    size = regular_file(path)
    try:
        with open(path, "rb") as fh:
            _npy_header(path, fh, size)
            fh.seek(0)
            return np.lib.format.read_array(fh, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise input_error(path, f"not a readable .npy array ({_first_line(exc)})") from None


# --------------------------------------------------------------------------- OBJ


def read_obj(path: str | os.PathLike) -> Mesh:
    """Read the ``v``, ``vt`` and ``f`` lines of an OBJ file, keeping the vertex order of the file.

    Face entries may be ``i``, ``i/t``, ``i//n`` or ``i/t/n``; negative (relative) indices are
    resolved. Polygons with n > 3 corners become n - 2 fan triangles, for the vertex and the UV
    indices alike. UVs (the first two numbers of each ``vt`` line) are kept when the faces index them;
    every face must then give a UV for every corner.
    """
    path = Path(path)
    try:
        text = read_file_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise input_error(path, "not a text OBJ file") from None
    if "\x00" in text:
        raise input_error(path, "not a text OBJ file (NUL bytes)")
    last = text.rstrip("\r\n").rsplit("\n", 1)[-1]
    if text and not text.endswith("\n") and last.split()[:1] in (["v"], ["vt"], ["f"]):
        raise input_error(path, f"ends in the middle of a line ('{last.strip()[:40]}'): truncated? "
                                "(a complete file ends with a newline)")
    vertex_lines: list[str] = []
    uv_lines: list[str] = []
    faces: list[tuple[int, int, int]] = []
    face_uvs: list[tuple[int, int, int]] = []
    faces_without_uvs = 0
    for line in text.splitlines():
        if line.startswith("v "):
            vertex_lines.append(line[2:])
        elif line.startswith("vt "):
            uv_lines.append(line[3:])
        elif line.startswith("f "):
            try:
                corners, uv_corners = _obj_face(line[2:], len(vertex_lines), len(uv_lines))
            except ValueError:
                raise input_error(path, f"malformed face line '{line.strip()}'") from None
            faces.extend(_fan(corners))
            if uv_corners is None:
                faces_without_uvs += 1
            else:
                face_uvs.extend(_fan(uv_corners))
    if not vertex_lines:
        raise input_error(path, "no vertices ('v' lines) found")
    vertices = _number_table(path, vertex_lines, 3, "vertex")
    face_array = np.array(faces, dtype=np.int64).reshape(-1, 3)
    _check_faces(path, face_array, len(vertices))
    if not face_uvs:
        return Mesh(vertices, face_array)
    if faces_without_uvs:
        raise input_error(path, f"{faces_without_uvs} faces have no texture coordinates while others have")
    uvs = _number_table(path, uv_lines, 2, "texture coordinate ('vt')")
    uv_array = np.array(face_uvs, dtype=np.int64).reshape(-1, 3)
    if uv_array.min() < 0 or uv_array.max() >= len(uvs):
        raise input_error(path, f"texture coordinate index out of range (file has {len(uvs)} 'vt' lines)")
    return Mesh(vertices, face_array, uvs, uv_array)


def _obj_face(entries: str, n_vertices: int, n_uvs: int) -> tuple[list[int], list[int] | None]:
    """0-based vertex and UV indices of the corners of one ``f`` line (UVs None when it has none)."""
    corners: list[int] = []
    uv_corners: list[int] = []
    for token in entries.split():
        parts = token.split("/")
        if len(parts) > 3:
            raise ValueError
        corners.append(_obj_index(parts[0], n_vertices))
        if len(parts) > 1 and parts[1]:
            uv_corners.append(_obj_index(parts[1], n_uvs))
    if len(corners) < 3 or (uv_corners and len(uv_corners) != len(corners)):
        raise ValueError
    return corners, (uv_corners or None)


def _obj_index(token: str, count: int) -> int:
    """0-based index of a 1-based (or negative, relative to the ``count`` entries so far) OBJ index;
    0 is not an OBJ index."""
    index = int(token)
    if index == 0:
        raise ValueError
    return index - 1 if index > 0 else count + index


def _fan(corners: list[int]) -> list[tuple[int, int, int]]:
    """Fan triangles ``(c0, ci, ci+1)`` of a polygon."""
    return [(corners[0], corners[i], corners[i + 1]) for i in range(1, len(corners) - 1)]


def _number_table(path: Path, lines: list[str], width: int, what: str) -> np.ndarray:
    """The first ``width`` numbers of each line as a float64 ``(len(lines), width)`` array."""
    rows = [line.split()[:width] for line in lines]
    if any(len(row) != width for row in rows):
        raise input_error(path, f"{what} lines must have at least {width} numbers")
    try:
        return np.array(rows, dtype=np.float64).reshape(-1, width)
    except ValueError:
        raise input_error(path, f"malformed {what} line") from None


# --------------------------------------------------------------------------- PLY

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


@dataclass
class _PlyElement:
    name: str
    count: int
    properties: list[tuple[str, str, str | None]]  # (name, value type, list count type or None)


def _parse_ply_header(path: Path, data: bytes) -> tuple[str, list[_PlyElement], int]:
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise input_error(path, "not a PLY file (missing 'ply' magic or 'end_header')")
    newline = data.find(b"\n", end)
    if newline < 0:
        raise input_error(path, "truncated file (no data after 'end_header')")
    body_start = newline + 1
    fmt = ""
    elements: list[_PlyElement] = []
    for raw in data[:end].decode("ascii", errors="replace").splitlines()[1:]:
        words = raw.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        try:
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                elements.append(_PlyElement(words[1], int(words[2]), []))
            elif words[0] == "property" and words[1] == "list":
                elements[-1].properties.append((words[4], _PLY_TYPES[words[3]], _PLY_TYPES[words[2]]))
            elif words[0] == "property":
                elements[-1].properties.append((words[2], _PLY_TYPES[words[1]], None))
        except (IndexError, KeyError, ValueError):
            raise input_error(path, f"malformed PLY header line '{raw.strip()}'") from None
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise input_error(path, f"unsupported PLY format '{fmt}'")
    _check_ply_counts(path, fmt, elements, len(data) - body_start)
    return fmt, elements, body_start


_INDEX_TYPES = ("i1", "u1", "i2", "u2", "i4", "u4")


def _check_ply_counts(path: Path, fmt: str, elements: list[_PlyElement], body_bytes: int) -> None:
    """Refuse element counts the file cannot hold (a header claiming 10^12 vertices allocates nothing) and
    list properties whose count or index type is not an integer."""
    needed = 0
    for element in elements:
        if element.count < 0:
            raise input_error(path, f"negative count for element '{element.name}'")
        for name, value_t, count_t in element.properties:
            if count_t is not None and (count_t not in _INDEX_TYPES or value_t not in _INDEX_TYPES):
                raise input_error(path, f"list property '{name}' must have integer count and value types")
        if fmt == "ascii":
            row = 2 * max(len(element.properties), 1)  # each value is at least one character and a separator
        else:
            row = sum(np.dtype(t if c is None else c).itemsize for _, t, c in element.properties)
        needed += element.count * row
    if needed > body_bytes:
        raise input_error(path, f"truncated file or lying header (the elements need at least {needed} bytes, "
                                f"the file has {body_bytes} after the header)")


def read_ply(path: str | os.PathLike) -> Mesh:
    """Read vertices (x, y, z) and triangle faces of an ASCII or binary PLY file."""
    path = Path(path)
    data = read_file_bytes(path)
    if not data:
        raise input_error(path, "empty file")
    fmt, elements, offset = _parse_ply_header(path, data)
    try:
        if fmt == "ascii":
            vertices, faces = _read_ply_ascii(path, data[offset:], elements)
        else:
            vertices, faces = _read_ply_binary(path, data, offset, elements, "<" if "little" in fmt else ">")
    except (ValueError, TypeError) as exc:  # e.g. two properties of one name, an element without properties
        raise input_error(path, f"malformed PLY element layout ({_first_line(exc)})") from None
    if vertices is None or not len(vertices):
        raise input_error(path, "no 'vertex' element with x, y, z")
    faces = np.zeros((0, 3), np.int64) if faces is None else faces
    _check_faces(path, faces, len(vertices))
    return Mesh(vertices, faces)


def _vertex_xyz(path: Path, element: _PlyElement, table: dict[str, np.ndarray]) -> np.ndarray:
    if not all(k in table for k in "xyz"):
        raise input_error(path, "vertex element lacks x, y or z")
    return np.stack([table["x"], table["y"], table["z"]], axis=1).astype(np.float64)


def _triangulate(path: Path, polygons: list[np.ndarray] | np.ndarray) -> np.ndarray:
    if isinstance(polygons, np.ndarray):
        if polygons.shape[1] < 3:
            raise input_error(path, "face with fewer than 3 corners")
        tris = [polygons[:, [0, i, i + 1]] for i in range(1, polygons.shape[1] - 1)]
        return np.stack(tris, axis=1).reshape(-1, 3).astype(np.int64)
    out = []
    for poly in polygons:
        if len(poly) < 3:
            raise input_error(path, "face with fewer than 3 corners")
        out.extend((poly[0], poly[i], poly[i + 1]) for i in range(1, len(poly) - 1))
    return np.array(out, dtype=np.int64).reshape(-1, 3)


def _read_ply_binary(
    path: Path, data: bytes, offset: int, elements: list[_PlyElement], endian: str
) -> tuple[np.ndarray | None, np.ndarray | None]:
    vertices = faces = None
    for element in elements:
        has_list = any(p[2] is not None for p in element.properties)
        if not has_list:
            dtype = np.dtype([(name, endian + t) for name, t, _ in element.properties])
            nbytes = dtype.itemsize * element.count
            if offset + nbytes > len(data):
                raise input_error(path, f"truncated file (element '{element.name}' incomplete)")
            table = np.frombuffer(data, dtype=dtype, count=element.count, offset=offset)
            offset += nbytes
            if element.name == "vertex":
                vertices = _vertex_xyz(path, element, {n: table[n] for n in table.dtype.names})
            continue
        polygons, offset = _read_binary_lists(path, data, offset, element, endian)
        if element.name == "face":
            faces = _triangulate(path, polygons)
    return vertices, faces


def _read_binary_lists(
    path: Path, data: bytes, offset: int, element: _PlyElement, endian: str
) -> tuple[list[np.ndarray] | np.ndarray, int]:
    """Read an element whose properties include lists; fast path for one list of constant length."""
    props = element.properties
    if len(props) == 1 and element.count > 0:
        name, value_t, count_t = props[0]
        count_dt, value_dt = np.dtype(endian + count_t), np.dtype(endian + value_t)
        if offset + count_dt.itemsize > len(data):
            raise input_error(path, f"truncated file (element '{element.name}' incomplete)")
        n = int(np.frombuffer(data, count_dt, 1, offset)[0])
        if n < 0:
            raise input_error(path, f"negative list length in element '{element.name}'")
        row = np.dtype([("n", count_dt), ("v", value_dt, (n,))])
        nbytes = row.itemsize * element.count
        if offset + nbytes <= len(data):
            table = np.frombuffer(data, row, element.count, offset)
            if np.all(table["n"] == n):
                return table["v"].astype(np.int64).reshape(element.count, n), offset + nbytes
    lists: list[np.ndarray] = []
    try:
        for _ in range(element.count):
            for name, value_t, count_t in props:
                if count_t is None:
                    offset += np.dtype(value_t).itemsize
                    continue
                count_dt = np.dtype(endian + count_t)
                n = int(np.frombuffer(data, count_dt, 1, offset)[0])
                offset += count_dt.itemsize
                if n < 0 or offset + n * np.dtype(value_t).itemsize > len(data):
                    raise ValueError
                values = np.frombuffer(data, np.dtype(endian + value_t), n, offset)
                offset += values.nbytes
                if name in ("vertex_indices", "vertex_index"):
                    lists.append(values.astype(np.int64))
    except ValueError:
        raise input_error(path, f"truncated file (element '{element.name}' incomplete)") from None
    return lists, offset


def _read_ply_ascii(
    path: Path, body: bytes, elements: list[_PlyElement]
) -> tuple[np.ndarray | None, np.ndarray | None]:
    lines = body.decode("ascii", errors="replace").splitlines()
    vertices = faces = None
    cursor = 0
    for element in elements:
        rows = lines[cursor : cursor + element.count]
        cursor += element.count
        if len(rows) < element.count:
            raise input_error(path, f"truncated file (element '{element.name}' incomplete)")
        has_list = any(p[2] is not None for p in element.properties)
        try:
            if not has_list:
                table = np.array([r.split()[: len(element.properties)] for r in rows], dtype=np.float64)
                table = table.reshape(element.count, len(element.properties))
                if element.name == "vertex":
                    named = {p[0]: table[:, i] for i, p in enumerate(element.properties)}
                    vertices = _vertex_xyz(path, element, named)
            elif element.name == "face":
                polygons = []
                for r in rows:
                    words = r.split()
                    if not words:  # a blank line where a face should be
                        raise ValueError
                    n = int(words[0])
                    if n < 0 or len(words) < n + 1:
                        raise ValueError
                    polygons.append(np.array(words[1 : n + 1], dtype=np.int64))
                faces = _triangulate(path, polygons)
        except ValueError:
            raise input_error(path, f"malformed ASCII data in element '{element.name}'") from None
    return vertices, faces


def _check_faces(path: Path, faces: np.ndarray, n_vertices: int) -> None:
    if faces.size and (faces.min() < 0 or faces.max() >= n_vertices):
        raise input_error(path, f"face index out of range (mesh has {n_vertices} vertices)")


# --------------------------------------------------------------------------- dispatch and writing


def read_mesh(path: str | os.PathLike) -> Mesh:
    """Read an OBJ or PLY mesh (by suffix) and reject non-finite coordinates."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".obj":
        mesh = read_obj(path)
    elif suffix == ".ply":
        mesh = read_ply(path)
    else:
        raise input_error(path, f"unknown mesh format '{suffix}' (expected .ply or .obj)")
    if not np.isfinite(mesh.vertices).all():
        raise input_error(path, "vertex coordinates contain NaN or Inf")
    return mesh


def write_ply(
    path: str | os.PathLike,
    vertices: np.ndarray,
    faces: np.ndarray | None = None,
    colors: np.ndarray | None = None,
) -> None:
    """Write a binary little-endian PLY (atomically).

    Args:
        vertices: ``(V, 3)`` coordinates, stored as float32.
        faces: ``(F, 3)`` vertex indices, or None for a point cloud.
        colors: ``(V, 3)`` per-vertex RGB, uint8 or floats in [0, 1].
    """
    vertices = np.asarray(vertices, dtype=np.float32).reshape(-1, 3)
    faces = np.zeros((0, 3), np.int32) if faces is None else np.asarray(faces, dtype=np.int32)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(vertices)}",
              "property float x", "property float y", "property float z"]
    if colors is not None:
        colors = np.asarray(colors)
        if colors.dtype != np.uint8:
            colors = np.clip(np.round(colors * 255.0), 0, 255).astype(np.uint8)
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    table = np.empty(len(vertices), dtype=fields)
    table["x"], table["y"], table["z"] = vertices.T
    if colors is not None:
        table["red"], table["green"], table["blue"] = colors[:, :3].T
    face_table = np.empty(len(faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
    face_table["n"] = 3
    face_table["v"] = faces
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(("\n".join(header) + "\n").encode("ascii"))
            f.write(table.tobytes())
            f.write(face_table.tobytes())


def write_obj(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray | None = None,
              face_uvs: np.ndarray | None = None) -> None:
    """Write an OBJ with ``v`` and ``f`` lines, and with ``uvs (T, 2)`` / ``face_uvs (F, 3)`` given, ``vt``
    lines and ``f a/ta b/tb c/tc`` faces (atomically)."""
    faces = np.asarray(faces, dtype=np.int64)
    lines = [f"v {x:.7g} {y:.7g} {z:.7g}" for x, y, z in np.asarray(vertices, dtype=np.float64)]
    if (uvs is None) != (face_uvs is None):
        raise ValueError("give both uvs and face_uvs, or neither")
    if uvs is None:
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    else:
        uvs, face_uvs = np.asarray(uvs, dtype=np.float64), np.asarray(face_uvs, dtype=np.int64)
        if uvs.ndim != 2 or uvs.shape[1] != 2 or face_uvs.shape != faces.shape:
            raise ValueError(f"uvs must be (T, 2) and face_uvs {faces.shape}, got {uvs.shape} and {face_uvs.shape}")
        lines += [f"vt {u:.7g} {v:.7g}" for u, v in uvs]
        lines += [f"f {a + 1}/{ta + 1} {b + 1}/{tb + 1} {c + 1}/{tc + 1}"
                  for (a, b, c), (ta, tb, tc) in zip(faces, face_uvs)]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def write_mesh(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray,
               colors: np.ndarray | None = None, uvs: np.ndarray | None = None,
               face_uvs: np.ndarray | None = None) -> None:
    """Write a mesh as PLY (with optional colours) or OBJ (with optional UVs), chosen by the suffix of ``path``."""
    if Path(path).suffix.lower() == ".obj":
        write_obj(path, vertices, faces, uvs, face_uvs)
    elif uvs is not None or face_uvs is not None:
        raise ValueError(f"{path}: per-corner UVs can only be written to .obj files")
    else:
        write_ply(path, vertices, faces, colors)


# --------------------------------------------------------------------------- weights


def save_weights(path: str | os.PathLike, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
    """Save a dict of torch tensors or numpy arrays as safetensors (atomically).

    Tensors are made contiguous and moved to the CPU first; ``metadata`` values must be strings.
    """
    import torch
    from safetensors.torch import save_file

    flat = {}
    for name, value in tensors.items():
        tensor = torch.as_tensor(value)
        flat[name] = tensor.detach().to("cpu").contiguous()
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=metadata)


class Weights(dict):
    """The tensors of one weights file: looking up a tensor the file lacks is a one-line error naming it."""

    def __init__(self, path: Path, tensors: dict[str, Any]) -> None:
        super().__init__(tensors)
        self.path = path

    def __missing__(self, key: str) -> Any:
        raise input_error(self.path, f"no tensor '{key}' (the file has {', '.join(sorted(self)) or 'none'})")


def load_weights(path: str | os.PathLike, device: str = "cpu") -> tuple[Weights, dict[str, str]]:
    """Load a safetensors file; return ``(tensors, metadata)`` or raise a one-line error.

    Only regular files are opened; floating-point tensors must be finite (NaN / Inf weights are refused);
    ``tensors[name]`` for a name the file lacks is a one-line error too.
    """
    import torch
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    regular_file(path, "weights file")
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, TypeError, RuntimeError, OverflowError) as exc:
        raise input_error(path, f"not a valid safetensors file ({_first_line(exc)})") from None
    except BaseException as exc:  # a panic inside the Rust reader (pyo3 PanicException derives BaseException)
        if type(exc).__name__ != "PanicException":
            raise
        raise input_error(path, f"not a valid safetensors file ({_first_line(exc)})") from None
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise input_error(path, f"tensor '{name}' contains NaN or Inf")
    return Weights(path, tensors), metadata
