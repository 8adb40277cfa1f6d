"""How chapters size their work: quick mode, the CPU's full sizes, and the GPU's larger ones."""

import pytest

from bonelab import config


@pytest.mark.parametrize(
    "quick, device, expected, words",
    [("1", "cpu", 1, "quick"), ("1", "cuda", 1, "quick"),
     ("0", "cpu", 30, "full size, CPU settings"), ("0", "cuda", 80, "full size, GPU settings")],
)
def test_choose_picks_quick_then_gpu_then_full(monkeypatch, quick, device, expected, words):
    monkeypatch.setenv("BONELAB_QUICK", quick)
    monkeypatch.setenv("BONELAB_DEVICE", device)
    assert config.choose(30, 1, gpu=80) == expected
    assert config.sizing() == words


def test_choose_without_a_gpu_size_keeps_the_full_size_on_a_gpu(monkeypatch):
    monkeypatch.setenv("BONELAB_QUICK", "0")
    monkeypatch.setenv("BONELAB_DEVICE", "cuda")
    assert config.choose((28, 5), (6, 1)) == (28, 5)


def test_cpu_bfloat16_is_fast_reads_the_amx_flag(tmp_path):
    amx, plain = tmp_path / "amx", tmp_path / "plain"
    amx.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_bf16 amx_tile\n")
    plain.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n")  # bf16 instructions, no matrix units
    assert config.cpu_bfloat16_is_fast(amx) is True
    assert config.cpu_bfloat16_is_fast(plain) is False
    assert config.cpu_bfloat16_is_fast(tmp_path / "missing") is False  # not Linux: no file, no bfloat16


def test_bfloat16_where_fast_fills_in_only_an_unset_cpu_choice(monkeypatch):
    for fast in (True, False):
        monkeypatch.setattr(config, "cpu_bfloat16_is_fast", lambda fast=fast: fast)
        assert config.bfloat16_where_fast(None, "cpu") is fast
        assert config.bfloat16_where_fast(False, "cpu") is False and config.bfloat16_where_fast(True, "cpu") is True
        assert config.bfloat16_where_fast(None, "cuda") is None  # the training loop's own CUDA default
