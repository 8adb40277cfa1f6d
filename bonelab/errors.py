"""The errors bonelab raises.

Every error is a :class:`BonelabError`, so ``except bonelab.BonelabError`` catches them all;
each also derives from the matching built-in (``FileNotFoundError``, ``ValueError``, ...), so
code written against the built-ins keeps working.  Messages name the input and the fix.
"""

from __future__ import annotations


class BonelabError(Exception):
    """Base class of every error raised by bonelab."""


class MissingFileError(BonelabError, FileNotFoundError):
    """A path that should exist does not."""


class UnreadableFileError(BonelabError, OSError):
    """A file or folder exists but cannot be read as an image (truncated, wrong format, empty)."""


class NotCTError(BonelabError, ValueError):
    """An image was read but is not a CT volume in HU (a 2D picture, an MR volume, ...)."""


class InvalidValuesError(BonelabError, ValueError):
    """An array holds values that cannot be used (NaN, infinity, wrong dtype or shape)."""


class GeometryMismatchError(BonelabError, ValueError):
    """Two images that must share a physical grid (CT and labels) do not."""


class InvalidArgumentError(BonelabError, ValueError):
    """An argument is out of range or of the wrong kind."""


class ProjectionGeometryError(InvalidArgumentError):
    """An X-ray geometry that cannot be rendered (source inside the volume, zero-size detector, ...)."""


class DataError(BonelabError):
    """A data set cannot be found, fetched or verified."""


class ChecksumError(DataError, ValueError):
    """A downloaded or embedded file does not match the checksum in the manifest."""


class UnsafeArchiveError(DataError, ValueError):
    """An archive member would be extracted outside its target folder."""
