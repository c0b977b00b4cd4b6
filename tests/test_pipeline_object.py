"""`MobilePicassoPipeline`: save/load round trip, device and dtype moves, the upscaler protocol."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import pipeline
from pipeline import InputError, MobilePicassoPipeline, synthedit
from pipeline import devices
from pipeline.bench.metrics import psnr
from pipeline.stages.upscale import Upscaler

SIZE = 384


@pytest.fixture(scope="module")
def example():
    ex = synthedit.sample(synthedit.split_seeds("test", 50)[3])
    return ex.source(*ex.size(SIZE)), ex.instruction


@pytest.fixture(scope="module")
def mini() -> MobilePicassoPipeline:
    return MobilePicassoPipeline.from_pretrained("pipeline/models/mini")


def test_components_and_protocol(mini):
    assert set(mini.components) == {"tokenizer", "text_encoder", "vae", "unet", "scheduler", "projector",
                                    "upscaler", "detector", "edit_region", "look"}
    assert isinstance(mini.components["upscaler"], Upscaler)
    assert mini.device.type == "cpu" and mini.dtype == torch.float32
    # the upscaler's decoder is the edit autoencoder itself: counted once
    assert len(mini.modules()) == len({id(m) for m in mini.modules()})


@pytest.mark.parametrize("method", ["mobilepicasso", "mobilepicasso-paper"])
def test_save_and_reload_is_bit_identical(mini, example, tmp_path, method):
    image, instruction = example
    mini.save_pretrained(tmp_path / "set")
    reloaded = MobilePicassoPipeline.from_pretrained(tmp_path / "set")
    for text in (instruction, "make it night"):  # the edit-region path and the look model's path
        before = mini(image, text, method=method, size=SIZE, seed=3)
        after = reloaded(image, text, method=method, size=SIZE, seed=3)
        assert not before.report.failed and after.report.model_set_trained
        assert np.array_equal(np.asarray(before.image), np.asarray(after.image))


def test_edit_is_a_thin_wrapper(mini, example):
    image, instruction = example
    a = pipeline.edit(image, instruction, size=SIZE, seed=1)
    b = mini(image, instruction, size=SIZE, seed=1)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))


@pytest.mark.skipif(not devices.cpu_has_native_bf16(), reason="this CPU has no native bf16")
@pytest.mark.parametrize("method", ["mobilepicasso", "mobilepicasso-paper"])
def test_bf16_moves_every_parameter_and_stays_close(example, method):
    image, instruction = example
    pipe = MobilePicassoPipeline.from_pretrained("mini")
    reference = pipe(image, instruction, method=method, size=SIZE, seed=0)
    pipe.to("cpu", torch.bfloat16)
    assert {p.dtype for m in pipe.modules() for p in m.parameters()} == {torch.bfloat16}
    result = pipe(image, instruction, method=method, size=SIZE, seed=0)
    assert result.report.dtype == "bfloat16"
    assert psnr(result.image, reference.image) >= 30.0
    # and a shared pipeline (edit()'s default copy) is untouched by this move
    assert pipeline.shared_pipeline("mini").dtype == torch.float32


@pytest.mark.skipif(not devices.cpu_has_native_bf16(), reason="this CPU has no native bf16")
def test_auto_dtype_keeps_the_edit_stage_in_fp32(example):
    """On a bf16 CPU "auto" runs the full-resolution stages in bf16 and the edit stage in fp32 on its own
    autoencoder copy, so the edit itself is unchanged."""
    image, instruction = example
    reference = MobilePicassoPipeline.from_pretrained("mini")(image, instruction, method="mobilepicasso-paper", size=SIZE)
    pipe = MobilePicassoPipeline.from_pretrained("mini").to("cpu", "auto")
    assert (pipe.dtype, pipe.upscale_dtype, pipe.channels_last) == (torch.float32, torch.bfloat16, True)
    assert pipe.models.upscaler.vae is not pipe.models.edit_pipeline.vae
    assert {p.dtype for p in pipe.models.edit_pipeline.unet.parameters()} == {torch.float32}
    result = pipe(image, instruction, method="mobilepicasso-paper", size=SIZE)
    assert (result.report.dtype, result.report.upscale_dtype) == ("float32", "bfloat16")
    assert psnr(result.image, reference.image) >= 35.0


def test_unsupported_device_or_dtype_is_one_sentence(monkeypatch):
    pipe = MobilePicassoPipeline(pipeline.load_model_set("mini"))
    with pytest.raises(InputError, match="float16 needs a CUDA device"):
        pipe.to("cpu", torch.float16)
    with pytest.raises(InputError, match="unknown dtype"):
        pipe.to("cpu", "float8")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            pipe.to("cuda")
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(InputError, match="no native bfloat16"):
        pipe.to("cpu", "bf16")
    assert devices.default_dtype(torch.device("cpu")) == torch.float32
    assert pipe.dtype == torch.float32  # a refused move changes nothing
