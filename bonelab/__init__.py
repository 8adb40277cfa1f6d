"""bonelab: deep-learning bone imaging from CT to X-ray (the companion package of the book).

Arrays follow SimpleITK: numpy ``(z, y, x)``, geometry ``(x, y, z)`` in LPS millimetres.
See :mod:`bonelab.volume` for the conventions and :mod:`bonelab.config` for quick mode.
"""

from bonelab.errors import (
    BonelabError,
    ChecksumError,
    DataError,
    GeometryMismatchError,
    InvalidArgumentError,
    InvalidValuesError,
    MissingFileError,
    NotCTError,
    ProjectionGeometryError,
    UnreadableFileError,
    UnsafeArchiveError,
)
from bonelab.volume import Volume

__version__ = "0.1.0"


def __getattr__(name):
    # segment_xray, extract_bones, detect_vertebrae and segment_ct need torch: import them on first use so that
    # `import bonelab` stays light.
    if name in ("segment_xray", "extract_bones", "detect_vertebrae", "segment_ct"):
        from bonelab import segment

        return getattr(segment, name)
    raise AttributeError(f"module 'bonelab' has no attribute {name!r}")


__all__ = [
    "BonelabError",
    "ChecksumError",
    "DataError",
    "GeometryMismatchError",
    "InvalidArgumentError",
    "InvalidValuesError",
    "MissingFileError",
    "NotCTError",
    "ProjectionGeometryError",
    "UnreadableFileError",
    "UnsafeArchiveError",
    "Volume",
    "__version__",
    "detect_vertebrae",
    "extract_bones",
    "segment_ct",
    "segment_xray",
]
