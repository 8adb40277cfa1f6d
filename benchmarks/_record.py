"""``--record`` for the benchmark scripts: everything printed goes to the terminal and to
``results/NAME.md`` (the date, machine and command, then the log), and the tables to
``results/NAME.json``, which chapter 2 and the README's figures are read from."""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


class _Tee(io.StringIO):
    def write(self, text):
        sys.__stdout__.write(text)
        sys.__stdout__.flush()
        return super().write(text)


@contextlib.contextmanager
def recording(name: str, where: str, enabled: bool = True):
    """Run the block; with ``enabled``, write ``results/{name}.md`` and ``.json`` after it.  The
    block fills the yielded dict with its tables (lists of row dicts)."""
    tables: dict = {}
    if not enabled:
        yield tables
        return
    out = _Tee()
    with contextlib.redirect_stdout(out):
        yield tables
    info = {"measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()} Linux, {os.cpu_count()} CPU cores ({where})",
            "command": f"python benchmarks/{Path(sys.argv[0]).name} {' '.join(sys.argv[1:])}".strip()}
    header = f"Measured {info['measured']} on {info['machine']}, with `{info['command']}`.\n\n"
    RESULTS.mkdir(exist_ok=True)
    _write(RESULTS / f"{name}.md", header + "```text\n" + out.getvalue() + "```\n")
    _write(RESULTS / f"{name}.json", json.dumps({**info, "tables": tables}, indent=1) + "\n")


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
