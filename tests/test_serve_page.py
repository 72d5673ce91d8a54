"""The web page at / in a real headless Chromium (the OS's package, driven by Selenium):
upload a shapes picture, check the JSON shown and what is drawn on the canvas."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest
from PIL import Image

from chromium import headless_chromium, needs_chromium
from test_serve import live_server
from torchinfer.datasets import shapes as ds
from torchinfer.serve import ModelSpec, ServeConfig

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def browser():
    with headless_chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def page_server():
    config = ServeConfig(models=(ModelSpec("shapes_detector"), ModelSpec("shapes_classifier"),
                                 ModelSpec("shapes_segmenter")), warmup=False)
    with live_server(config) as running:
        yield running


def _upload(driver, base: str, model: str, path: Path, expected_key: str) -> dict:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.wait import WebDriverWait

    driver.get(base + "/")
    wait = WebDriverWait(driver, 60)
    wait.until(lambda d: "ready" in d.find_element(By.ID, "status").text)
    Select(driver.find_element(By.ID, "model")).select_by_value(model)
    driver.find_element(By.ID, "file").send_keys(str(path))
    wait.until(lambda d: expected_key in d.find_element(By.ID, "json").text)
    wait.until(lambda d: d.find_element(By.ID, "canvas").get_attribute("data-drawn"))
    return json.loads(driver.find_element(By.ID, "json").text)


def _pixel(driver, x: int, y: int) -> list[int]:
    return driver.execute_script(
        "return Array.from(document.getElementById('canvas').getContext('2d')"
        ".getImageData(arguments[0], arguments[1], 1, 1).data).slice(0, 3);", x, y)


def test_page_detects_and_draws_boxes(browser, page_server, tmp_path):
    from selenium.webdriver.common.by import By

    base, _ = page_server
    path = tmp_path / "scene.png"
    image = ds.generate_scene(ds.scene_rng(5, 1), 256).image
    image.save(path)
    shown = _upload(browser, base, "shapes_detector", path, "detections")
    direct = httpx.post(f"{base}/v1/models/shapes_detector/predict",
                        params={"conf": "0.25", "iou": "0.45"},
                        files={"file": ("scene.png", path.read_bytes())}).json()
    assert shown["detections"] == direct["detections"] and shown["detections"]
    canvas = browser.find_element(By.ID, "canvas")
    assert canvas.get_attribute("data-drawn") == f"{len(direct['detections'])} boxes"
    assert (int(canvas.get_attribute("width")), int(canvas.get_attribute("height"))) == image.size
    # the box is drawn: pixels on its left edge (below the label) changed from the picture's
    x0, y0, x1, y1 = (round(v) for v in direct["detections"][0]["box"])
    edge = [(x0, y) for y in range(y0 + 20, max(y0 + 21, y1 - 2), 3)]
    changed = sum(_pixel(browser, x, y) != list(image.getpixel((x, y))) for x, y in edge)
    assert changed >= 0.8 * len(edge)
    timing = browser.find_element(By.ID, "timing")
    assert float(timing.get_attribute("data-server-ms")) > 0 and "server" in timing.text
    curl = browser.find_element(By.ID, "curl").text
    assert curl.startswith("curl -F 'file=@scene.png'") and "/v1/models/shapes_detector" in curl
    # the controls are the detect manifest's request options, at the model's values
    controls = {e.get_attribute("data-option"): e for e in
                browser.find_elements(By.CSS_SELECTOR, "#task-options [data-option]")}
    assert set(controls) == {"conf", "iou", "max_det", "classes"}
    assert controls["conf"].get_attribute("type") == "range"
    assert float(controls["conf"].get_attribute("value")) == 0.25
    assert "conf=0.25" in curl and "max_det=300" in curl and "classes" not in curl
    browser.save_screenshot(str(tmp_path / "page.png"))


def test_page_classifies_into_a_table_and_overlays_masks(browser, page_server, tmp_path):
    from selenium.webdriver.common.by import By

    base, _ = page_server
    path = tmp_path / "single.png"
    ds.generate_single(ds.scene_rng(5, 2), 128).image.save(path)
    shown = _upload(browser, base, "shapes_classifier", path, "topk")
    rows = browser.find_elements(By.CSS_SELECTOR, "#topk tbody tr")
    assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in rows] == \
        [c["label"] for c in shown["topk"]]
    assert len(rows) == 4  # top 5 of the 4 shape classes
    top_k = browser.find_element(By.ID, "option-top_k")
    assert (top_k.get_attribute("type"), top_k.get_attribute("value")) == ("number", "5")

    path = tmp_path / "scene.png"
    image = ds.generate_scene(ds.scene_rng(5, 3), 256).image
    image.save(path)
    shown = _upload(browser, base, "shapes_segmenter", path, "classes")
    assert shown["classes"][0]["label"] == "background" and len(shown["classes"]) > 1
    canvas = browser.find_element(By.ID, "canvas")
    assert canvas.get_attribute("data-drawn") == "overlay"
    data = browser.execute_script("return document.getElementById('canvas').toDataURL();")
    drawn = Image.open(io.BytesIO(__import__("base64").b64decode(data.split(",", 1)[1])))
    original = image.convert("RGB")
    differing = sum(1 for xy in ((x, y) for x in range(0, 256, 8) for y in range(0, 256, 8))
                    if drawn.convert("RGB").getpixel(xy) != original.getpixel(xy))
    assert differing > 10  # the mask overlay coloured the shapes
