"""The size of a VRN volume and of its crop (numpy-free, so that configs validate it without numpy).

:mod:`morphable.data.voxels` holds the maps between the volume, the crop and the photo.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from morphable.errors import MorphableError

if TYPE_CHECKING:
    import numpy as np

VRN_FILL = 0.5


@dataclass(frozen=True)
class VolumeSpec:
    """The size of a VRN volume and of its crop.

    Attributes:
        size: ``S``, crop side in pixels (the network's input resolution; paper 192).
        depth: ``D``, number of depth slices (the network's output channels; paper 200).
        depth_scale: slices per crop pixel of depth (paper 2).
        fill: fraction of the crop the 68 landmarks fill (:func:`~morphable.image.align.template_landmarks`).
    """

    size: int = 192
    depth: int = 200
    depth_scale: float = 2.0
    fill: float = VRN_FILL

    def __post_init__(self) -> None:
        if not 8 <= self.size <= 1024:
            raise MorphableError(f"a volume's crop size must be in 8..1024 pixels, got {self.size}")
        if not 2 <= self.depth <= 1024:
            raise MorphableError(f"a volume's depth must be in 2..1024 slices, got {self.depth}")
        if not self.depth_scale > 0:
            raise MorphableError(f"a volume's depth scale must be positive, got {self.depth_scale}")
        if not 0 < self.fill <= 1:
            raise MorphableError(f"a crop fill must be in (0, 1], got {self.fill}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(D, S, S)``."""
        return self.depth, self.size, self.size

    def crop_matrix(self, landmarks_2d: np.ndarray) -> np.ndarray:
        """``(3, 3)`` photo pixels -> crop pixels for a face whose ``landmarks_2d (68, 2)`` are known."""
        from morphable.image.align import similarity_transform, template_landmarks

        return similarity_transform(landmarks_2d, template_landmarks(self.size, self.fill))
