"""What an HRN run needs of its data, kept in the run folder (``hrn_setup.safetensors``) so that a trained run
reconstructs photos without the dataset or the linear model: the coarse level's model arrays
(:func:`~morphable.image.coarse.coarse_face_arguments`), the albedo space fitted to the training identities'
textures, the face tile of the detail maps and the number of training identities (the classes of the
perceptual loss's identity embedding)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from morphable.errors import MorphableError, input_error

SETUP_FILE = "hrn_setup.safetensors"
_SCALARS = ("identity", "cm", "identities")
_FACE_ARRAYS = ("mean", "basis", "faces", "uvs", "face_uvs", "textured", "vertex_colour", "landmarks")
_TILE_ARRAYS = ("uvs", "faces", "face_uvs", "face_ids", "weights")


@dataclass
class HRNSetup:
    """``face``: :func:`~morphable.image.coarse.coarse_face_arguments`; ``albedo``: the
    :class:`~morphable.data.albedo_space.AlbedoSpace`; ``tile``: the :class:`~morphable.image.detail_maps.FaceTile`;
    ``identities``: the training identities (the identity embedding's classes, in this order);
    ``coefficient_mean``, ``coefficient_std`` ``(P,)``: the training targets' statistics (the coarse regressor
    predicts ``mean + std * output``: :class:`~morphable.image.hrn.CoarseRegressor`)."""

    face: dict
    albedo: object
    tile: object
    identities: np.ndarray
    coefficient_mean: np.ndarray | None = None
    coefficient_std: np.ndarray | None = None

    def set_coefficient_statistics(self, targets: np.ndarray) -> None:
        """Mean and standard deviation (floored at 1e-3 of the largest) of ``targets (N, P)``."""
        t = np.asarray(targets, dtype=np.float64)
        std = t.std(axis=0)
        self.coefficient_mean, self.coefficient_std = t.mean(axis=0), np.maximum(std, 1e-3 * std.max())

    @classmethod
    def from_dataset(cls, dataset, config) -> "HRNSetup":
        """The setup of an HRN config (``config.model``: :class:`~morphable.config.HRNConfig`) on a
        :class:`~morphable.data.photos.PhotoDataset` whose ``dataset.json`` names its model files."""
        from morphable.data.albedo_space import AlbedoSpace, read_albedo_textures
        from morphable.data.photos import load_photo_model
        from morphable.image.coarse import coarse_face_arguments
        from morphable.image.detail_maps import FaceTile

        files = dataset.info.get("model_files")
        if not files:
            raise input_error(dataset.root / "dataset.json", "names no model files (made by an older `morphable data "
                                                             "photos`: make the dataset again)")
        model = load_photo_model(files["model"], files.get("uvs_from"))[0]
        face = coarse_face_arguments(dataset, model)
        train = dataset.indices("train")
        identities = sorted(set(int(j) for j in dataset.annotations["identity"][train]))
        m = config.model
        if m.albedo_components > len(identities) - 1:
            raise MorphableError(f"model.albedo_components {m.albedo_components} needs more than "
                                 f"{m.albedo_components} training identities; {dataset.root} has {len(identities)}")
        albedo = AlbedoSpace.fit(read_albedo_textures(dataset.root / "albedo", identities, m.albedo_height),
                                 m.albedo_components)
        tile = FaceTile.of(face["mean"], face["faces"], face["uvs"], face["face_uvs"], face["textured"],
                           m.fade_cm * face["cm"])
        return cls(face, albedo, tile, np.asarray(identities, dtype=np.int64))

    def save(self, path: str | Path) -> None:
        from morphable.io import save_weights

        tensors = {f"face_{k}": np.ascontiguousarray(self.face[k]) for k in _FACE_ARRAYS}
        tensors.update({f"tile_{k}": np.ascontiguousarray(getattr(self.tile, k)) for k in _TILE_ARRAYS})
        tensors.update(self.albedo.tensors())
        tensors.update({k: np.asarray([v], dtype=np.float64) for k, v in
                        (("identity", self.face["identity"]), ("cm", self.face["cm"]))})
        tensors["identities"] = self.identities
        if self.coefficient_mean is None:
            raise MorphableError("the HRN setup has no coefficient statistics yet")
        tensors["coefficient_mean"], tensors["coefficient_std"] = self.coefficient_mean, self.coefficient_std
        save_weights(path, tensors)

    @classmethod
    def load(cls, path: str | Path) -> "HRNSetup":
        from morphable.data.albedo_space import AlbedoSpace
        from morphable.image.detail_maps import FaceTile
        from morphable.io import load_weights

        path = Path(path)
        t = {k: v.numpy() for k, v in load_weights(path)[0].items()}
        missing = [k for k in [f"face_{a}" for a in _FACE_ARRAYS] + [f"tile_{a}" for a in _TILE_ARRAYS] +
                   list(_SCALARS) + ["coefficient_mean", "coefficient_std"] if k not in t]
        if missing:
            raise input_error(path, f"not an HRN setup (missing {', '.join(missing)})")
        face = {k: t[f"face_{k}"] for k in _FACE_ARRAYS}
        face["identity"], face["cm"] = int(t["identity"][0]), float(t["cm"][0])
        tile = FaceTile(**{k: t[f"tile_{k}"] for k in _TILE_ARRAYS})
        return cls(face, AlbedoSpace.from_tensors(t), tile, t["identities"].astype(np.int64),
                   t["coefficient_mean"].astype(np.float64), t["coefficient_std"].astype(np.float64))

    def coarse_face(self, size: int, fill: float):
        from morphable.image.coarse import CoarseFace

        return CoarseFace(**self.face, albedo=self.albedo, size=size, fill=fill)
