"""The chapters' result records: written, read back, laid out, and bad input refused."""

import json

import pytest

from bonelab import results
from bonelab.errors import InvalidArgumentError, UnreadableFileError
from bonelab.results import Result


def test_record_round_trip_keeps_numbers_ranges_and_order(tmp_path):
    rows = [Result("mean Dice", 0.8123, reference=(0.80, 0.92), source="arXiv 2507.07131"),
            Result("PSNR", 24.5, reference=21.17, unit="dB", decimals=2),
            Result("round trip", 0.0, unit="HU", decimals=1)]
    path = results.record("03_wrist", "Wrist", rows, folder=tmp_path)
    assert path == tmp_path / "03_wrist.json"
    results.record("01_ct", "CT", [Result("Dice", 0.5)], folder=tmp_path)
    back = results.load(tmp_path)
    assert list(back) == ["01_ct", "03_wrist"]  # sorted by chapter
    assert back["03_wrist"]["results"] == rows
    assert back["03_wrist"]["title"] == "Wrist" and back["03_wrist"]["quick"] is True  # the tests run quick
    assert back["03_wrist"]["sizing"] == "quick"


def test_headline_and_results_tables_show_study_beside_build(tmp_path):
    results.record("06_femur", "Femur", [Result("Dice", 0.97712, reference=0.9815, source="paper", decimals=4),
                                        Result("volume R2", 0.98, decimals=2)], folder=tmp_path)
    recs = results.load(tmp_path)
    head = results.headline_table(recs)
    assert head.loc[0, "headline"] == "Dice 0.9771 (study: 0.9815)"
    table = results.results_table(recs)
    assert table["this build"].tolist() == ["0.9771", "0.98"]
    assert table["study"].tolist() == ["0.9815", ""]
    assert Result("HD95", float("nan"), unit="mm").formatted() == "n/a"  # not measured
    assert Result("HD95", float("inf"), unit="mm").formatted() == "inf mm"  # an empty mask
    assert Result("PSNR", 24.456, reference=(20, 22), unit="dB", decimals=1).formatted_reference() == "20.0-22.0 dB"


def test_results_dir_separates_quick_mode(monkeypatch, tmp_path):
    monkeypatch.setenv("BONELAB_DATA", str(tmp_path))
    monkeypatch.setenv("BONELAB_QUICK", "1")
    assert results.results_dir() == tmp_path / "results-quick"
    monkeypatch.setenv("BONELAB_QUICK", "0")
    assert results.results_dir() == tmp_path / "results"
    assert results.load() == {}  # nothing recorded yet: empty, not an error


@pytest.mark.parametrize("kwargs", [
    {"value": None}, {"value": "0.9"}, {"value": True}, {"reference": (0.9, 0.8)},
    {"reference": (0.8,)}, {"reference": "0.8"}, {"quantity": ""}, {"decimals": 9}])
def test_result_refuses_bad_values(kwargs):
    args = {"quantity": "Dice", "value": 0.9, **kwargs}
    with pytest.raises(InvalidArgumentError):
        Result(**args)


@pytest.mark.parametrize("chapter", ["", "../evil", "a/b", ".hidden", 3])
def test_record_refuses_bad_chapter_names(tmp_path, chapter):
    with pytest.raises(InvalidArgumentError, match="chapter"):
        results.record(chapter, "t", [Result("Dice", 0.9)], folder=tmp_path)


def test_record_refuses_no_results(tmp_path):
    with pytest.raises(InvalidArgumentError, match="at least one Result"):
        results.record("03_wrist", "t", [], folder=tmp_path)
    with pytest.raises(InvalidArgumentError):
        results.record("03_wrist", "t", [{"quantity": "Dice", "value": 0.9}], folder=tmp_path)


def test_load_names_a_corrupt_record(tmp_path):
    (tmp_path / "04_bones.json").write_text(json.dumps({"chapter": "04_bones"}), encoding="utf-8")
    with pytest.raises(UnreadableFileError, match="04_bones.json"):
        results.load(tmp_path)
    (tmp_path / "04_bones.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(UnreadableFileError, match="run its chapter again"):
        results.load(tmp_path)
