"""`Volume`: a 3D image as a numpy array plus its physical geometry.

Conventions (the same as SimpleITK's, everywhere in bonelab):

* ``Volume.array`` is indexed ``array[z, y, x]`` (slowest to fastest), shape ``(nz, ny, nx)``.
* ``spacing`` and ``origin`` are ``(x, y, z)`` in millimetres; ``origin`` is the world position of
  the centre of voxel ``array[0, 0, 0]``.
* ``direction`` is a 3x3 matrix whose *columns* are the world directions of the x, y and z index
  axes; world coordinates are LPS (x to the patient's Left, y to Posterior, z to Superior).
* A continuous index is ``(i, j, k)`` = (x, y, z) order, as in ITK; ``array[k, j, i]`` reads it.
* CT values are Hounsfield units (float32); label maps hold integers with a ``{value: name}``
  table in ``label_names`` (0 is background); :func:`default_label_names` names the values a
  table lacks, :func:`label_centroids` says where each structure is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bonelab.errors import InvalidArgumentError


@dataclass(eq=False)
class Volume:
    """A 3D image in physical space.

    Parameters
    ----------
    array : ndarray, shape (nz, ny, nx)
        Voxel values, SimpleITK order.
    spacing : (sx, sy, sz) in mm
    origin : (ox, oy, oz) in mm, LPS, centre of voxel ``array[0, 0, 0]``
    direction : 3x3, columns are the LPS directions of the x, y, z index axes
    label_names : {int: str} or None
        Set for label maps (``{1: "scaphoid", ...}``); None for intensity images.

    Examples
    --------
    >>> import numpy as np
    >>> v = Volume(np.zeros((10, 20, 30), np.float32), spacing=(0.5, 0.5, 2.0))
    >>> v.shape, v.size_mm
    ((10, 20, 30), (15.0, 10.0, 20.0))
    >>> v.index_to_world([1, 0, 0])
    array([0.5, 0. , 0. ])
    """

    array: np.ndarray
    spacing: tuple = (1.0, 1.0, 1.0)
    origin: tuple = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    label_names: dict | None = None

    def __post_init__(self):
        self.array = np.asarray(self.array)
        if self.array.ndim != 3:
            raise InvalidArgumentError(
                f"Volume needs a 3D array (z, y, x); got shape {self.array.shape}."
            )
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise InvalidArgumentError(f"spacing must be three positive mm values (x, y, z); got {self.spacing}.")
        if len(self.origin) != 3:
            raise InvalidArgumentError(f"origin must be three mm values (x, y, z); got {self.origin}.")
        if self.label_names is not None:
            self.label_names = {int(k): str(v) for k, v in self.label_names.items()}

    # --- shape and extent -------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        """Array shape ``(nz, ny, nx)``."""
        return self.array.shape

    @property
    def size(self) -> tuple:
        """Voxel counts in ITK order ``(nx, ny, nz)``."""
        return self.array.shape[::-1]

    @property
    def size_mm(self) -> tuple:
        """Physical extent ``(x, y, z)`` in mm (voxel count times spacing)."""
        return tuple(float(n * s) for n, s in zip(self.size, self.spacing))

    @property
    def is_label(self) -> bool:
        """True for label maps (a name table, or integer values)."""
        return self.label_names is not None

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix mapping a homogeneous index ``(i, j, k, 1)`` to LPS mm."""
        m = np.eye(4)
        m[:3, :3] = self.direction @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    @property
    def center(self) -> np.ndarray:
        """World position (LPS mm) of the centre of the voxel grid."""
        return self.index_to_world((np.asarray(self.size) - 1) / 2.0)

    def corners(self) -> np.ndarray:
        """The 8 corners of the volume's outer voxel faces, LPS mm, shape (8, 3)."""
        lo, hi = -0.5, np.asarray(self.size) - 0.5
        idx = np.array([[a, b, c] for a in (lo, hi[0]) for b in (lo, hi[1]) for c in (lo, hi[2])])
        return self.index_to_world(idx)

    # --- index <-> world ---------------------------------------------------------------------
    def index_to_world(self, ijk) -> np.ndarray:
        """Continuous index ``(i, j, k)`` (x, y, z order; shape (..., 3)) -> LPS mm (..., 3)."""
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ (self.direction @ np.diag(self.spacing)).T + np.asarray(self.origin)

    def world_to_index(self, xyz) -> np.ndarray:
        """LPS mm (..., 3) -> continuous index ``(i, j, k)`` (x, y, z order).  Read the array
        at ``array[k, j, i]`` after rounding."""
        xyz = np.asarray(xyz, dtype=float)
        inv = np.linalg.inv(self.direction @ np.diag(self.spacing))
        return (xyz - np.asarray(self.origin)) @ inv.T

    def value_at(self, point):
        """The value of the voxel nearest to the world point ``point`` (x, y, z) LPS mm.

        >>> import numpy as np
        >>> Volume(np.arange(8.0).reshape(2, 2, 2), spacing=(2, 2, 2)).value_at([2.1, 0, 0])
        1.0
        """
        i, j, k = np.round(self.world_to_index(np.asarray(point, dtype=float).reshape(3))).astype(int)
        if not (0 <= i < self.size[0] and 0 <= j < self.size[1] and 0 <= k < self.size[2]):
            raise InvalidArgumentError(f"point {tuple(point)} mm lies outside the volume ({self.geometry_str()}).")
        return self.array[k, j, i].item()

    # --- copies and conversion -----------------------------------------------------------------
    def with_array(self, array, label_names=...) -> Volume:
        """A new Volume on the same grid holding ``array`` (same shape).  ``label_names`` is
        kept unless given (pass None for an intensity image)."""
        array = np.asarray(array)
        if array.shape != self.shape:
            raise InvalidArgumentError(
                f"with_array needs shape {self.shape} (z, y, x) to keep the grid; got {array.shape}."
            )
        names = self.label_names if label_names is ... else label_names
        return Volume(array, self.spacing, self.origin, self.direction.copy(), names)

    def same_grid(self, other: Volume, atol: float = 1e-3) -> bool:
        """True if ``other`` has the same shape, spacing, origin and direction (mm tolerance)."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=atol)
            and np.allclose(self.origin, other.origin, atol=atol)
            and np.allclose(self.direction, other.direction, atol=1e-5)
        )

    def geometry_str(self) -> str:
        """Human-readable geometry for error messages and printing."""
        d = np.round(self.direction, 4).tolist()
        return (
            f"size (x,y,z)={self.size}, spacing={tuple(round(s, 4) for s in self.spacing)} mm, "
            f"origin={tuple(round(o, 3) for o in self.origin)} mm, direction={d}"
        )

    def to_sitk(self):
        """A ``SimpleITK.Image`` with the same voxels and geometry (the array is copied)."""
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(self.array)
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        img.SetDirection(tuple(self.direction.ravel()))
        return img

    @classmethod
    def from_sitk(cls, image, label_names: dict | None = None) -> Volume:
        """Build a Volume from a 3D ``SimpleITK.Image`` (the voxels are copied)."""
        import SimpleITK as sitk

        if image.GetDimension() != 3:
            raise InvalidArgumentError(f"Volume.from_sitk needs a 3D image; got {image.GetDimension()}D.")
        return cls(
            sitk.GetArrayFromImage(image),
            spacing=image.GetSpacing(),
            origin=image.GetOrigin(),
            direction=np.asarray(image.GetDirection()).reshape(3, 3),
            label_names=label_names,
        )

    def __repr__(self) -> str:
        kind = f"labels ({len(self.label_names)} names)" if self.is_label else "image"
        return f"Volume({kind}, shape(z,y,x)={self.shape}, dtype={self.array.dtype}, {self.geometry_str()})"


def default_label_names(values, names: dict | None = None) -> dict:
    """``{value: name}`` for the label values in ``values`` (an array or any iterable) and ``names``: the name from
    ``names`` where it has one, else ``"label <value>"``; 0 (background) gets none unless
    ``names`` gives it.  Sorted by value.  The one place bonelab names unnamed labels.

    >>> default_label_names([0, 1, 3], {1: "radius"})
    {1: 'radius', 3: 'label 3'}
    """
    out = {int(k): str(v) for k, v in (names or {}).items()}
    flat = np.ravel(values) if isinstance(values, np.ndarray) else values  # or a list, set, dict keys
    out.update({int(v): f"label {int(v)}" for v in flat if v and int(v) not in out})
    return dict(sorted(out.items()))


def label_centroids(labels: Volume, values=None) -> dict:
    """Centroid of each labelled structure: ``{value: (x, y, z)}`` in LPS mm (the mean world
    position of its voxel centres), for the non-zero ``values`` given (default: all present).
    A value with no voxel is left out.  Works through the label map's direction, so it holds
    for any storage order.

    >>> import numpy as np
    >>> lab = Volume(np.zeros((4, 4, 4), np.uint8), spacing=(1, 1, 2), origin=(10, 0, 0), label_names={})
    >>> lab.array[1:3, 0, 0] = 5
    >>> label_centroids(lab)
    {5: (10.0, 0.0, 3.0)}
    """
    from scipy import ndimage

    array = np.asarray(labels.array)
    present = [int(v) for v in np.unique(array) if v]
    wanted = present if values is None else [int(v) for v in values if int(v) in present]
    if not wanted:
        return {}
    centres = ndimage.center_of_mass(array > 0, array, wanted)  # (z, y, x) indices
    world = labels.index_to_world(np.asarray(centres)[:, ::-1])
    return {v: tuple(float(c) for c in p) for v, p in zip(wanted, world)}


def count_sections(labels: Volume, values, z_mm: float) -> int:
    """Number of separate cross-sections (2D connected components) of the structures with label
    ``values`` in the axial slice of ``labels`` nearest to ``z_mm`` (LPS mm), e.g. the rib
    sections a CT slice cuts.

    >>> lab = Volume(np.zeros((3, 8, 8), np.uint8)); lab.array[1, 1:3, 1:3] = 1; lab.array[1, 5:7, 5:7] = 1
    >>> count_sections(lab, [1], z_mm=1.0)
    2
    """
    from scipy import ndimage

    k = int(round(float(labels.world_to_index([0.0, 0.0, z_mm])[2])))
    if not 0 <= k < labels.shape[0]:
        raise InvalidArgumentError(f"z = {z_mm} mm lies outside the volume ({labels.geometry_str()}).")
    return int(ndimage.label(np.isin(labels.array[k], list(values)))[1])

