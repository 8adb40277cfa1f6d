"""Headline results: what each chapter measured, beside the numbers of the study it reproduces.

Every chapter ends by calling :func:`record` with a few :class:`Result` rows; the book's landing
page and its results page read them back with :func:`load` and lay them out with
:func:`headline_table` and :func:`results_table`.  So no number on those pages is typed by hand:
each is what a chapter computed in the build that made the page.

A record is one small JSON file per chapter in :func:`results_dir` (``data_dir()/results``, or
``results-quick`` in quick mode, so that the tests never overwrite a full build's figures)::

    {"chapter": "03_wrist_segmentation", "title": "...", "recorded": "2026-12-02T01:30:00+00:00",
     "quick": false, "device": "cpu (2 CPU cores)", "results": [{"quantity": "...", "value": 0.8, ...}]}

>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> _ = record("03_wrist_segmentation", "Wrist bones", [
...     Result("mean Dice, all views", 0.812, reference=(0.80, 0.92), source="arXiv 2507.07131")],
...     folder=folder)
>>> headline_table(load(folder))["headline"].iloc[0]
'mean Dice, all views 0.812 (study: 0.800-0.920)'
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from bonelab import config, files
from bonelab.errors import InvalidArgumentError, UnreadableFileError

_CHAPTER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Result:
    """One measured number and what it is compared with.

    Parameters
    ----------
    quantity:
        What was measured, as a reader would say it ("mean Dice, all views").
    value:
        This build's measurement, in ``unit``: a number; NaN where the build could not measure it
        (shown as "n/a"), infinity where the measure itself is infinite (HD95 of an empty mask).
    reference:
        The study's number, its ``(low, high)`` range, or None where the chapter cites no number.
    source:
        Where ``reference`` comes from ("Konya et al. 2021, 730 films"), or what the anchor is
        ("int16 rounding"); may describe a qualitative finding when ``reference`` is None.
    unit:
        Unit of ``value`` and ``reference`` ("" for ratios such as Dice, "dB", "HU", "%").
    decimals:
        Decimals shown on the pages.
    """

    quantity: str
    value: float
    reference: float | tuple[float, float] | None = None
    source: str = ""
    unit: str = ""
    decimals: int = 3

    def __post_init__(self):
        if not self.quantity or not isinstance(self.quantity, str):
            raise InvalidArgumentError(f"a result needs a quantity (a name such as 'mean Dice'); got {self.quantity!r}.")
        if not _real(self.value):
            raise InvalidArgumentError(f"result {self.quantity!r}: value must be a number; got {self.value!r}.")
        object.__setattr__(self, "value", float(self.value))
        ref = self.reference
        if ref is not None:
            if isinstance(ref, (list, tuple)):
                if len(ref) != 2 or not all(_finite(r) for r in ref) or float(ref[0]) > float(ref[1]):
                    raise InvalidArgumentError(
                        f"result {self.quantity!r}: a reference range is (low, high) with low <= high; got {ref!r}.")
                ref = (float(ref[0]), float(ref[1]))
            elif _finite(ref):
                ref = float(ref)
            else:
                raise InvalidArgumentError(
                    f"result {self.quantity!r}: reference must be a number, a (low, high) pair or None; got {ref!r}.")
            object.__setattr__(self, "reference", ref)
        if not isinstance(self.decimals, int) or not 0 <= self.decimals <= 6:
            raise InvalidArgumentError(f"result {self.quantity!r}: decimals must be an integer 0-6; got {self.decimals!r}.")

    def formatted(self, number: float | None = None) -> str:
        """``number`` (default: the value) with this result's decimals and unit."""
        number = self.value if number is None else number
        if math.isnan(number):
            return "n/a"
        return f"{number:.{self.decimals}f}" + (f" {self.unit}" if self.unit else "")

    def formatted_reference(self) -> str:
        """The reference as the pages show it: ``0.981``, ``0.80-0.92`` or an empty string."""
        if self.reference is None:
            return ""
        if isinstance(self.reference, tuple):
            low, high = self.reference
            return f"{low:.{self.decimals}f}-{self.formatted(high)}"
        return self.formatted(self.reference)


def _real(x) -> bool:
    """A number (numpy scalars included), not a bool or a string."""
    try:
        float(x)
    except (TypeError, ValueError):
        return False
    return not isinstance(x, (bool, str))


def _finite(x) -> bool:
    return _real(x) and math.isfinite(float(x))


def results_dir() -> Path:
    """Folder of the chapters' result records: ``data_dir()/results`` (``results-quick`` in
    quick mode).  Not created here."""
    return config.data_dir() / ("results-quick" if config.quick() else "results")


def record(chapter: str, title: str, results: Sequence[Result], *, folder=None) -> Path:
    """Write a chapter's headline results; returns the JSON file written.

    Parameters
    ----------
    chapter:
        The chapter's file name without extension ("03_wrist_segmentation"): the record's name
        and the link the landing page makes.
    title:
        The chapter's title, as its first heading says it.
    results:
        One or more :class:`Result`; the first is the chapter's headline.
    folder:
        Where to write (default :func:`results_dir`).

    Notes
    -----
    The file is replaced atomically, so a page never reads half of one.
    """
    if not isinstance(chapter, str) or not _CHAPTER.match(chapter):
        raise InvalidArgumentError(f"chapter must be a file name without folder or extension, such as "
                                   f"'03_wrist_segmentation'; got {chapter!r}.")
    results = list(results)
    if not results or not all(isinstance(r, Result) for r in results):
        raise InvalidArgumentError(f"chapter {chapter!r}: record needs at least one Result (bonelab.results.Result).")
    out = Path(folder) if folder is not None else results_dir()
    payload = {"chapter": chapter, "title": str(title),
               "recorded": datetime.now(UTC).isoformat(timespec="seconds"),
               "quick": config.quick(), "sizing": config.sizing(), "device": config.device_description(),
               "results": [asdict(r) for r in results]}
    return files.write_json(out / f"{chapter}.json", payload)


def load(folder=None) -> dict[str, dict]:
    """Every chapter's record in ``folder`` (default :func:`results_dir`), sorted by chapter:
    ``{chapter: record}``, each record's ``"results"`` a list of :class:`Result`.  A folder that
    does not exist gives an empty dict; a file that is not a record raises
    :class:`~bonelab.errors.UnreadableFileError` naming it."""
    folder = Path(folder) if folder is not None else results_dir()
    records = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
            rows = [Result(**{**r, "reference": tuple(r["reference"]) if isinstance(r.get("reference"), list)
                              else r.get("reference")}) for r in rec["results"]]
            records[rec["chapter"]] = {**rec, "results": rows}
        except (ValueError, KeyError, TypeError) as err:
            raise UnreadableFileError(f"{path} is not a bonelab result record ({err}); delete it, or run its "
                                      "chapter again to rewrite it.") from err
    return records


def headline_table(records: dict[str, dict]):
    """One row per chapter: ``chapter``, ``title``, ``headline`` (the first result with the
    study's number beside it) and ``recorded``, as a pandas DataFrame."""
    import pandas as pd

    rows = []
    for chapter, rec in records.items():
        first = rec["results"][0]
        ref = first.formatted_reference()
        rows.append({"chapter": chapter, "title": rec["title"],
                     "headline": f"{first.quantity} {first.formatted()}" + (f" (study: {ref})" if ref else ""),
                     "recorded": rec["recorded"]})
    return pd.DataFrame(rows, columns=["chapter", "title", "headline", "recorded"])


def results_table(records: dict[str, dict]):
    """Every result of every chapter, one row each: ``chapter``, ``quantity``, ``this build``,
    ``study`` (the reference, formatted) and ``source``, as a pandas DataFrame."""
    import pandas as pd

    rows = [{"chapter": rec["title"], "quantity": r.quantity, "this build": r.formatted(),
             "study": r.formatted_reference(), "source": r.source}
            for rec in records.values() for r in rec["results"]]
    return pd.DataFrame(rows, columns=["chapter", "quantity", "this build", "study", "source"])
