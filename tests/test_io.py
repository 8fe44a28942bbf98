"""Mesh I/O: round trips, UVs, exact vertex order on the real ICT-FaceKit OBJ files, broken files, cache and
atomic folders."""

from pathlib import Path

import numpy as np
import pytest

from conftest import ICT_FOLDER, ICT_NPZ, MEDIAPIPE_OBJ, require
from morphable.errors import MorphableError
from morphable.io import (atomic_folder, cache_dir, load_weights, read_mesh, read_obj, read_ply, save_weights,
                          write_mesh, write_obj, write_ply)


def _random_mesh(rng, n_vertices=50, n_faces=80):
    return rng.normal(size=(n_vertices, 3)), rng.integers(0, n_vertices, size=(n_faces, 3))


def _ascii_ply(vertices, faces, extra_vertex_property=True):
    head = ["ply", "format ascii 1.0", "comment made by a test", f"element vertex {len(vertices)}",
            "property float x", "property float y", "property float z"]
    if extra_vertex_property:
        head.append("property float confidence")
    head += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    rows = [" ".join(f"{c:.6f}" for c in v) + (" 0.5" if extra_vertex_property else "") for v in vertices]
    rows += ["3 " + " ".join(str(i) for i in f) for f in faces]
    return "\n".join(head + rows) + "\n"


def test_ply_binary_round_trip_with_colors(tmp_path):
    rng = np.random.default_rng(0)
    v, f = _random_mesh(rng)
    colors = rng.integers(0, 256, size=(len(v), 3)).astype(np.uint8)
    write_ply(tmp_path / "m.ply", v, f, colors)
    mesh = read_ply(tmp_path / "m.ply")
    np.testing.assert_array_equal(mesh.vertices, v.astype(np.float32).astype(np.float64))
    np.testing.assert_array_equal(mesh.faces, f)
    raw = (tmp_path / "m.ply").read_bytes()
    assert b"property uchar red" in raw


def test_ply_ascii_and_big_endian(tmp_path):
    rng = np.random.default_rng(1)
    v, f = _random_mesh(rng, 10, 12)
    (tmp_path / "a.ply").write_text(_ascii_ply(v, f))
    mesh = read_ply(tmp_path / "a.ply")
    np.testing.assert_allclose(mesh.vertices, v, atol=1e-6)
    np.testing.assert_array_equal(mesh.faces, f)
    header = ("ply\nformat binary_big_endian 1.0\nelement vertex 10\nproperty double x\nproperty double y\n"
              "property double z\nelement face 12\nproperty list uchar int vertex_indices\nend_header\n").encode()
    faces = np.empty(12, dtype=[("n", "u1"), ("v", ">i4", (3,))])
    faces["n"], faces["v"] = 3, f
    (tmp_path / "b.ply").write_bytes(header + v.astype(">f8").tobytes() + faces.tobytes())
    mesh = read_ply(tmp_path / "b.ply")
    np.testing.assert_array_equal(mesh.vertices, v)
    np.testing.assert_array_equal(mesh.faces, f)


def test_ply_quads_are_split_into_fans(tmp_path):
    text = ("ply\nformat ascii 1.0\nelement vertex 5\nproperty float x\nproperty float y\nproperty float z\n"
            "element face 2\nproperty list uchar int vertex_indices\nend_header\n"
            "0 0 0\n1 0 0\n1 1 0\n0 1 0\n2 2 0\n4 0 1 2 3\n3 1 4 2\n")
    (tmp_path / "q.ply").write_text(text)
    np.testing.assert_array_equal(read_ply(tmp_path / "q.ply").faces, [[0, 1, 2], [0, 2, 3], [1, 4, 2]])


def test_obj_round_trip_and_relative_indices(tmp_path):
    rng = np.random.default_rng(2)
    v, f = _random_mesh(rng)
    write_obj(tmp_path / "m.obj", v, f)
    mesh = read_obj(tmp_path / "m.obj")
    np.testing.assert_allclose(mesh.vertices, v, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(mesh.faces, f)
    (tmp_path / "r.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nf -3/1 -2/1 -1/1\n")
    np.testing.assert_array_equal(read_obj(tmp_path / "r.obj").faces, [[0, 1, 2]])


def test_ict_obj_files_keep_exact_vertex_order():
    require(ICT_NPZ)
    data = np.load(ICT_NPZ)
    neutral = read_obj(require(ICT_FOLDER) / "generic_neutral_mesh.obj")
    np.testing.assert_allclose(neutral.vertices, data["neutral"], atol=1e-5)
    np.testing.assert_array_equal(np.sort(neutral.faces, axis=1)[np.lexsort(np.sort(neutral.faces, axis=1).T)],
                                  np.sort(data["triangles"], axis=1)[np.lexsort(np.sort(data["triangles"], axis=1).T)])
    identity = read_obj(ICT_FOLDER / "identity000.obj")
    np.testing.assert_allclose(identity.vertices - neutral.vertices, data["identity_modes"][0], atol=1e-4)
    names = list(data["expression_names"])
    jaw = read_obj(ICT_FOLDER / "jawOpen.obj")
    np.testing.assert_allclose(jaw.vertices - neutral.vertices, data["expression_modes"][names.index("jawOpen")],
                               atol=1e-4)


def test_mediapipe_face_reads():
    mesh = read_mesh(require(MEDIAPIPE_OBJ))
    assert mesh.vertices.shape == (468, 3)
    assert mesh.faces.shape[1] == 3 and mesh.faces.max() == 467


@pytest.mark.parametrize("content, problem", [
    (b"", "empty file"),
    (b"hello world", "not a PLY file"),
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 100\nproperty float x\nproperty float y\n"
     b"property float z\nend_header\n" + b"\0" * 40, "truncated"),
    (b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
     b"end_header\n0 0 0\nnan 1 1\n", "NaN"),
    (b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
     b"element face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n",
     "out of range"),
])
def test_broken_ply_files_give_one_line_errors(tmp_path, content, problem):
    path = tmp_path / "bad.ply"
    path.write_bytes(content)
    with pytest.raises(MorphableError) as info:
        read_mesh(path)
    message = str(info.value)
    assert str(path) in message and problem in message and "\n" not in message


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(MorphableError, match="unknown mesh format"):
        read_mesh(tmp_path / "mesh.stl")
    with pytest.raises(MorphableError, match="file not found"):
        read_mesh(tmp_path / "missing.ply")


def test_weights_round_trip_and_broken_file(tmp_path):
    import torch

    state = {"a": torch.arange(6.0).reshape(2, 3), "b": np.ones(4, dtype=np.float32)}
    save_weights(tmp_path / "w.safetensors", state, {"method": "test"})
    tensors, meta = load_weights(tmp_path / "w.safetensors")
    assert meta == {"method": "test"}
    assert torch.equal(tensors["a"], state["a"]) and tensors["b"].tolist() == [1.0] * 4
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00garbage")
    with pytest.raises(MorphableError, match="bad.safetensors"):
        load_weights(tmp_path / "bad.safetensors")


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    from morphable.io import atomic_path

    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("partial")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


SEAM_OBJ = """# a quad and a triangle; vertex 1 has two UVs (a seam), the last face has no normals
v 0 0 0
v 1 0 0
v 1 1 0
v 0 1 0
v 2 0 0
vt 0.0 0.0
vt 0.5 0.0
vt 0.5 0.5 0.0
vt 0.0 0.5
vt 0.9 0.1
vt 1.0 0.0
vn 0 0 1
f 1/1/1 2/2/1 3/3/1 4/4/1
f 2/5 5/6 -3/-4
"""


def test_obj_uvs_per_corner_with_seams_and_fans(tmp_path):
    path = tmp_path / "seam.obj"
    path.write_text(SEAM_OBJ)
    mesh = read_obj(path)
    np.testing.assert_array_equal(mesh.vertices[:, 0], [0, 1, 1, 0, 2])  # file order
    np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [0, 2, 3], [1, 4, 2]])
    np.testing.assert_array_equal(mesh.face_uvs, [[0, 1, 2], [0, 2, 3], [4, 5, 2]])
    np.testing.assert_array_equal(mesh.uvs, [[0, 0], [0.5, 0], [0.5, 0.5], [0, 0.5], [0.9, 0.1], [1, 0]])
    # vertex 1 is seen with two different UVs
    assert {tuple(mesh.uvs[t]) for f, tf in zip(mesh.faces, mesh.face_uvs) for v, t in zip(f, tf) if v == 1} \
        == {(0.5, 0.0), (0.9, 0.1)}
    write_mesh(tmp_path / "again.obj", mesh.vertices, mesh.faces, uvs=mesh.uvs, face_uvs=mesh.face_uvs)
    again = read_mesh(tmp_path / "again.obj")
    for name in ("vertices", "faces", "uvs", "face_uvs"):
        np.testing.assert_array_equal(getattr(again, name), getattr(mesh, name))
    with pytest.raises(ValueError, match="only be written to .obj"):
        write_mesh(tmp_path / "m.ply", mesh.vertices, mesh.faces, uvs=mesh.uvs, face_uvs=mesh.face_uvs)


def test_obj_without_uvs_and_broken_uv_files(tmp_path):
    (tmp_path / "plain.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nvn 0 0 1\nf 1//1 2//1 3//1\n")
    plain = read_obj(tmp_path / "plain.obj")
    assert plain.uvs is None and plain.face_uvs is None
    np.testing.assert_array_equal(plain.faces, [[0, 1, 2]])
    broken = {
        "mixed.obj": ("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nf 1/1 2/1 3/1\nf 1 3 2\n", "1 faces have no texture"),
        "range.obj": ("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nf 1/1 2/1 3/2\n", "texture coordinate index out of range"),
        "partial.obj": ("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nf 1/1 2 3/1\n", "malformed face line"),
        "word.obj": ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 two 3\n", "malformed face line"),
        "short.obj": ("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0\nf 1/1 2/1 3/1\n", "at least 2 numbers"),
    }
    for name, (text, problem) in broken.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(MorphableError) as info:
            read_mesh(tmp_path / name)
        assert name in str(info.value) and problem in str(info.value), name


def _naive_obj_corners(path):
    """(vertex, uv) index pairs of every face corner, 0-based, read line by line."""
    pairs = []
    for line in path.read_text().splitlines():
        if line.startswith("f "):
            pairs += [tuple(int(x) - 1 for x in token.split("/")[:2]) for token in line.split()[1:]]
    return pairs


def test_ict_neutral_obj_uvs():
    path = require(ICT_FOLDER) / "generic_neutral_mesh.obj"
    mesh = read_obj(path)
    assert mesh.vertices.shape == (26719, 3) and mesh.uvs.shape == (28911, 2)
    assert mesh.face_uvs.shape == mesh.faces.shape
    # UDIM-style tiles: u in [0, 7) (one tile per material), v in [0, 1]
    assert (mesh.uvs >= 0).all() and mesh.uvs[:, 0].max() < 7 and mesh.uvs[:, 1].max() <= 1
    # the (vertex, uv) pairs of the triangles are exactly those of the file's polygons
    naive = set(_naive_obj_corners(path))
    assert set(zip(mesh.faces.ravel().tolist(), mesh.face_uvs.ravel().tolist())) == naive
    # seams: more UVs than vertices, and some vertex carries two of them
    uv_count = np.bincount(np.array(sorted(naive))[:, 0], minlength=len(mesh.vertices))
    assert uv_count.max() >= 2 and uv_count.min() == 1


def test_cache_dir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MORPHABLE_CACHE", str(tmp_path / "c"))
    assert cache_dir("hierarchies") == tmp_path / "c" / "hierarchies"
    assert not (tmp_path / "c").exists()
    monkeypatch.setenv("MORPHABLE_CACHE", "")
    assert cache_dir("a", "b") == Path.home() / ".cache" / "morphable" / "a" / "b"


def test_atomic_folder_replaces_or_keeps_the_old_folder(tmp_path):
    out = tmp_path / "data"
    with atomic_folder(out) as tmp:
        (tmp / "a.txt").write_text("first")
    assert [p.name for p in out.iterdir()] == ["a.txt"]
    with pytest.raises(RuntimeError):
        with atomic_folder(out) as tmp:
            (tmp / "b.txt").write_text("partial")
            raise RuntimeError("interrupted")
    assert [p.name for p in out.iterdir()] == ["a.txt"]
    with atomic_folder(out) as tmp:
        (tmp / "c.txt").write_text("second")
    assert [p.name for p in out.iterdir()] == ["c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temporary folders left


# --------------------------------------------------------------------------- untrusted and corrupted files


def _one_line(info, path) -> str:
    message = str(info.value)
    assert str(path) in message and "\n" not in message, message
    return message


def test_devices_fifos_and_links_to_them_are_refused(tmp_path):
    import os

    fifo = tmp_path / "pipe.obj"
    os.mkfifo(fifo)
    (tmp_path / "zero.ply").symlink_to("/dev/zero")
    (tmp_path / "folder.obj").mkdir()
    for name, problem in (("pipe.obj", "not a regular file"), ("zero.ply", "not a regular file"),
                          ("folder.obj", "is a folder")):
        with pytest.raises(MorphableError) as info:
            read_mesh(tmp_path / name)
        assert problem in _one_line(info, tmp_path / name)
    from morphable.io import read_json, read_npy, read_npz

    for reader in (read_json, read_npy, read_npz, load_weights):
        with pytest.raises(MorphableError, match="not a regular file"):
            reader(tmp_path / "zero.ply")


def test_a_ply_header_claiming_a_trillion_vertices_allocates_nothing(tmp_path):
    import resource

    for fmt in ("ascii", "binary_little_endian"):
        path = tmp_path / f"{fmt}.ply"
        path.write_bytes(f"ply\nformat {fmt} 1.0\nelement vertex 1000000000000\nproperty float x\nproperty float y\n"
                         "property float z\nend_header\n".encode() + b"\0" * 36)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pytest.raises(MorphableError) as info:
            read_mesh(path)
        assert "lying header" in _one_line(info, path)
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # kB


@pytest.mark.parametrize("text, problem", [
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\nf 1 2", "ends in the middle of a line"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\nv 0 0", "ends in the middle of a line"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2\n", "malformed face line"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", "malformed face line"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n", "out of range"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf -4 1 2\n", "out of range"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 inf\nf 1 2 3\n", "NaN or Inf"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1/1/1/1 2 3\n", "malformed face line"),
])
def test_obj_files_cut_short_or_with_dropped_corners_are_refused(tmp_path, text, problem):
    path = tmp_path / "bad.obj"
    path.write_text(text)
    with pytest.raises(MorphableError) as info:
        read_mesh(path)
    assert problem in _one_line(info, path)


def test_a_complete_obj_without_final_newline_is_refused_only_mid_record(tmp_path):
    path = tmp_path / "ok.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n# made by hand")
    assert read_mesh(path).faces.tolist() == [[0, 1, 2]]


@pytest.mark.parametrize("count_type, value_type, count", [("uchar", "float", 3), ("float", "int", 3),
                                                           ("char", "int", -1)])
def test_ply_face_lists_must_have_integer_types_and_lengths(tmp_path, count_type, value_type, count):
    import struct

    header = ("ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
              f"property float z\nelement face 1\nproperty list {count_type} {value_type} vertex_indices\nend_header\n")
    body = np.eye(3, dtype="<f4").tobytes() + struct.pack("<b", count) + np.arange(3, dtype="<i4").tobytes()
    path = tmp_path / "bad.ply"
    path.write_bytes(header.encode() + body)
    with pytest.raises(MorphableError) as info:
        read_mesh(path)
    _one_line(info, path)


def test_npy_and_npz_headers_claiming_huge_arrays_are_refused_before_reading(tmp_path):
    import io
    import zipfile

    from morphable.io import read_npy, read_npz

    member = io.BytesIO()
    np.lib.format.write_array(member, np.zeros((4, 3), np.float32))
    lying = member.getvalue().replace(b"(4, 3)", b"(1000000000000, 3)")
    (tmp_path / "a.npy").write_bytes(lying)
    with zipfile.ZipFile(tmp_path / "a.npz", "w") as archive:
        archive.writestr("x.npy", lying)
    for reader, name in ((read_npy, "a.npy"), (read_npz, "a.npz")):
        with pytest.raises(MorphableError) as info:
            reader(tmp_path / name)
        assert "claims 12000000000000 bytes" in _one_line(info, tmp_path / name)
    np.save(tmp_path / "object.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(MorphableError, match="Python objects"):
        read_npy(tmp_path / "object.npy")
    np.save(tmp_path / "good.npy", np.arange(5))
    assert read_npy(tmp_path / "good.npy").tolist() == [0, 1, 2, 3, 4]


def test_non_finite_weights_and_deep_json_are_one_line(tmp_path):
    from morphable.io import read_json

    save_weights(tmp_path / "nan.safetensors", {"w": np.array([1.0, np.nan], np.float32)})
    with pytest.raises(MorphableError) as info:
        load_weights(tmp_path / "nan.safetensors")
    assert "'w' contains NaN" in _one_line(info, tmp_path / "nan.safetensors")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(MorphableError) as info:
        read_json(tmp_path / "deep.json")
    assert "nested too deeply" in _one_line(info, tmp_path / "deep.json")


# --------------------------------------------------------------------------- full disk, read-only folders


def _mesh_file(tmp_path) -> Path:
    vertices, faces = _random_mesh(np.random.default_rng(0))
    write_ply(tmp_path / "in.ply", vertices, faces)
    return tmp_path / "in.ply"


def test_a_read_only_output_folder_is_one_line_and_leaves_nothing(tmp_path, capsys):
    import os

    from morphable.cli import main

    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions (the full-disk test covers the same path)")
    source = _mesh_file(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["data", "depth", str(source), "--out", str(locked / "obs.ply"), "--n", "50"]) == 2
    finally:
        locked.chmod(0o755)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("morphable: error:") and str(locked) in err[-1] and "Permission denied" in err[-1]
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("verb", ["depth", "synth", "save_weights"])
def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(tmp_path, monkeypatch, capsys, verb):
    """ENOSPC from the final rename (every atomic writer ends there) or from a write of the file itself."""
    import errno
    import os

    from morphable.cli import main

    source = _mesh_file(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    real_replace = os.replace

    def full(src, dst, *args, **kwargs):
        if str(dst).startswith(str(out)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full)
    if verb == "depth":
        code = main(["data", "depth", str(source), "--out", str(out / "obs.ply"), "--n", "50"])
    elif verb == "synth":
        code = main(["data", "synth", "--out", str(out / "faces"), "--subjects", "1", "--expressions", "1",
                     "--frames", "2"])
    else:
        from morphable.errors import os_error_message

        with pytest.raises(OSError) as info:
            save_weights(out / "w.safetensors", {"w": np.ones(3)})
        print(f"morphable: error: {os_error_message(info.value)}", file=__import__("sys").stderr)
        code = 2
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("morphable: error:") and str(out) in err[-1] and "No space left" in err[-1], err
    assert list(out.iterdir()) == []


def test_a_tensor_the_weights_file_lacks_is_one_line(tmp_path):
    save_weights(tmp_path / "w.safetensors", {"mean": np.zeros(3, np.float32)})
    tensors, _ = load_weights(tmp_path / "w.safetensors")
    assert tensors["mean"].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(MorphableError) as info:
        tensors["components"]
    assert "no tensor 'components' (the file has mean)" in _one_line(info, tmp_path / "w.safetensors")
