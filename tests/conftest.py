from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision

from torchinfer.testing import calibrate, load_photographs, photograph_paths


def pytest_configure(config):
    """Tests about something else run the eager model, as a deployment can pin it (for the
    whole session: servers and Ray clusters started by session fixtures inherit it); the tests
    of the default itself (test_runtimes.py, test_backends.py) lift the pin."""
    os.environ["TORCHINFER_BACKEND"] = "torch"
    os.environ["TORCHINFER_PRECISION"] = "fp32"


@pytest.fixture(autouse=True)
def _no_network(monkeypatch, tmp_path_factory):
    """No test may download: named torchvision weights see an empty private cache."""
    monkeypatch.setenv("TORCHINFER_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.getbasetemp() / "torch_home"))
    monkeypatch.setenv("TORCHINFER_CACHE", str(tmp_path_factory.getbasetemp() / "torchinfer_cache"))


@pytest.fixture(scope="session")
def photographs():
    return load_photographs()


@pytest.fixture(scope="session")
def photo_paths() -> list[Path]:
    return photograph_paths(("chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg",
                             "camera.png"))


@pytest.fixture(scope="session")
def calibrated(photographs, tmp_path_factory):
    """arch -> (model, path of its saved state dict), built once per session."""
    cache: dict[str, tuple[torch.nn.Module, Path]] = {}
    folder = tmp_path_factory.mktemp("weights")

    def get(arch: str, **kwargs) -> tuple[torch.nn.Module, Path]:
        key = arch + repr(sorted(kwargs.items()))
        if key not in cache:
            torch.manual_seed(0)
            model = torchvision.models.get_model(arch, **kwargs)
            calibrate(model, list(photographs.values()), crops_per_image=4)
            path = folder / f"{arch}-{len(cache)}.pth"
            torch.save(model.state_dict(), path)
            cache[key] = (model, path)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def tiny_classifier_weights(calibrated):
    """A small real architecture (mobilenet_v3_small, 10 classes, calibrated) and its .pth."""
    model, path = calibrated("mobilenet_v3_small", num_classes=10)
    return model.eval(), path


@pytest.fixture(scope="session")
def shapes_images():
    """Six procedural scenes (two not square), as the bundled shapes models see them."""
    from torchinfer.datasets import shapes as ds

    return [ds.generate_scene(ds.scene_rng(4242, i), (256, 200) if i % 3 == 0 else 256).image
            for i in range(6)]
