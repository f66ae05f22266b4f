"""ModelOpt availability (a one-line refusal naming the install), QAT quantize values, QAT checkpoint detection."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from yolokd.quant import backend


@pytest.fixture
def without_modelopt(monkeypatch):
    """importlib finds no ``modelopt`` but finds ``huggingface_hub``, whether or not this machine has them."""
    find_spec, found = importlib.util.find_spec, {"modelopt": None, "huggingface_hub": object()}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: found.get(name, find_spec(name, *args)))


def test_missing_modelopt_names_the_install(without_modelopt):
    """The problem names the missing distribution and the pip command."""
    assert backend.modelopt_problem() == "NVIDIA ModelOpt (nvidia-modelopt not installed): pip install 'yolokd[int8]'"


def test_require_modelopt_is_a_one_line_value_error(without_modelopt):
    """require_modelopt raises a ValueError (the CLI prints it as one line) that starts with the purpose."""
    with pytest.raises(backend.QuantizationUnavailableError, match=r"^int8 export needs NVIDIA ModelOpt") as error:
        backend.require_modelopt("int8 export")
    assert isinstance(error.value, ValueError) and "\n" not in str(error.value)


@pytest.mark.parametrize(("value", "qat"), [(8, True), ("int8", True), ("w8a8", True), ("8", True)])
def test_int8_quantize_values_mean_qat(value, qat):
    """Ultralytics' aliases of 8 make its trainer run QAT."""
    assert backend.is_qat_quantize(value) is qat


@pytest.mark.parametrize("value", [None, 16, "fp16", 32, "w8a16", "w8a32"])
def test_other_quantize_values_do_not(value):
    """Unset, FP16/FP32 and weight-only schemes are not INT8 QAT."""
    assert backend.is_qat_quantize(value) is False


def test_checkpoint_is_qat_reads_the_modelopt_state(tmp_path):
    """A checkpoint with a 'modelopt' state is QAT; one with None or without the key is not."""
    for name, checkpoint, expected in [
        ("qat.pt", {"model": None, "modelopt": {"modelopt": [], "ranges": {}}}, True),
        ("none.pt", {"model": None, "modelopt": None}, False),
        ("plain.pt", {"model": None}, False),
    ]:
        torch.save(checkpoint, tmp_path / name)
        assert backend.checkpoint_is_qat(tmp_path / name) is expected, name
