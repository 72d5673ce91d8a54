"""Every example on the documentation site and in the READMEs runs as written.

A fenced ``python`` block is executed; a ``bash`` block runs line by line, each command being
``torchinfer ...`` (run in this process through the command line's own entry point) or
``python -m torchinfer...``. Blocks run in order, page by page, in one working folder per page
that holds stand-ins with the names the pages use (weights files, photos/, cat.jpg), so a page
may build on its earlier blocks. An example that cannot run here (it needs a GPU, the network,
a running server or cluster, or it starts one) is marked on the line before its fence:

    <!-- not run: starts a server that runs until stopped -->

and a test fails when a block is neither runnable nor marked, so a new example cannot slip
past. ``<!-- exit N -->`` before a bash block says its last command is expected to exit N.
The READMEs' and the home pages' examples run by default, the guides' with ``-m slow``.
"""

from __future__ import annotations

import os
import re
import runpy
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RUNNABLE = ("python", "bash")
SHELL = ("bash", "sh", "shell", "console")
FENCE = re.compile(r"^(?P<indent>[ ]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ ]*$",
                   re.M | re.S)
MARK = re.compile(r"<!--\s*(not run:\s*(?P<reason>[^>]*?)|exit\s+(?P<code>\d+))\s*-->\s*$")


@dataclass(frozen=True)
class Example:
    page: str
    index: int
    language: str
    code: str
    not_run: str | None  # the reason, where it is marked
    exit_code: int

    @property
    def name(self) -> str:
        return f"{self.page}#{self.index}"


def pages() -> list[Path]:
    found = sorted(p for p in DOCS.rglob("*.md") if p.name != "design-notes.md")
    return [ROOT / "README.md", ROOT / "README.zh-CN.md", *found]


def examples_of(page: Path) -> list[Example]:
    text = page.read_text(encoding="utf-8")
    out = []
    for i, match in enumerate(FENCE.finditer(text)):
        language = (match["info"].split() or [""])[0].strip("{.")
        if language not in RUNNABLE + SHELL:
            continue  # json, text, yaml...: not examples
        before = text[:match.start()].rstrip().splitlines()[-1:] or [""]
        mark = MARK.search(before[0])
        reason = mark["reason"] if mark and mark["reason"] is not None else None
        code = 0 if not mark or mark["code"] is None else int(mark["code"])
        body = "\n".join(line[len(match["indent"]):] for line in match["body"].splitlines())
        out.append(Example(str(page.relative_to(ROOT)), i, language, body, reason, code))
    return out


EXAMPLES = [example for page in pages() for example in examples_of(page)]
BY_PAGE: dict[str, list[Example]] = {}
for _example in EXAMPLES:
    BY_PAGE.setdefault(_example.page, []).append(_example)


def shell_commands(code: str) -> list[list[str]]:
    """The commands of a bash block: continuations joined, comments and blank lines gone."""
    joined = re.sub(r"\\\n", " ", code)
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            commands.append(words)
    return commands


def is_python_module(words: list[str]) -> bool:
    """``python -m torchinfer...``."""
    return words[:2] == ["python", "-m"] and len(words) > 2 and words[2].startswith("torchinfer")


def unrunnable(example: Example) -> str | None:
    """Why an unmarked example cannot run, or None."""
    if example.language not in RUNNABLE:
        return f"a {example.language!r} block: write it as bash or python, or mark it"
    if example.language == "bash":
        for words in shell_commands(example.code):
            if words[0] == "torchinfer" or is_python_module(words):
                if any(w in ("|", ">", "<", "&&", "||", ";") for w in words):
                    return f"{' '.join(words)}: pipes and redirections are not run"
                continue
            return f"{words[0]}: only torchinfer and python -m torchinfer commands are run"
    return None


def test_the_pages_have_examples():
    assert len(EXAMPLES) >= 20, len(EXAMPLES)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.name)
def test_every_example_is_run_or_marked(example):
    if example.not_run is not None:
        assert example.not_run.strip(), f"{example.name}: say why it is not run"
        return
    reason = unrunnable(example)
    assert reason is None, f"{example.name}: {reason} (or mark it <!-- not run: why -->)"


@pytest.fixture
def standins(tmp_path, monkeypatch, calibrated, photo_paths):
    """A working folder holding what the pages name: the notes' weights files (calibrated
    stand-ins, nothing downloaded), cat.jpg and photos/."""
    _, weights = calibrated("mobilenet_v2")
    (tmp_path / "weights").mkdir()
    shutil.copy(weights, tmp_path / "weights" / "mobilenet_v2-b0353104.pth")
    _, deeplab = calibrated("deeplabv3_mobilenet_v3_large", weights_backbone=None)
    shutil.copy(deeplab, tmp_path / "weights" / "deeplab.pth")
    torch.manual_seed(0)
    frcnn = torchvision.models.get_model("fasterrcnn_mobilenet_v3_large_320_fpn",
                                         weights_backbone=None)
    torch.save(frcnn.state_dict(), tmp_path / "weights" / "frcnn.pth")
    shutil.copy(photo_paths[0], tmp_path / "cat.jpg")
    (tmp_path / "photos").mkdir()
    for p in photo_paths:
        shutil.copy(p, tmp_path / "photos" / p.name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCHINFER_NO_MEMO", "1")
    return tmp_path


def run_example(example: Example, namespace: dict) -> None:
    if example.language == "python":
        exec(compile(example.code, example.name, "exec"), namespace)
        return
    from torchinfer.cli.app import run

    commands = shell_commands(example.code)
    for n, words in enumerate(commands):
        expected = example.exit_code if n == len(commands) - 1 else 0
        if words[0] == "torchinfer":
            code = run(words[1:])
        else:  # python -m torchinfer.something ...
            argv = sys.argv
            sys.argv = [words[2], *words[3:]]
            try:
                runpy.run_module(words[2], run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            finally:
                sys.argv = argv
        assert code == expected, f"{example.name}: `{' '.join(words)}` exited {code}"


# The quick starts run in the default suite; the guides' examples (minutes on two cores) with
# -m slow (make test-all)
QUICK_STARTS = ("README.md", "README.zh-CN.md", "docs/index.md", "docs/zh/index.md")


@pytest.mark.parametrize("page", [page if page in QUICK_STARTS
                                  else pytest.param(page, marks=pytest.mark.slow)
                                  for page in sorted(BY_PAGE)])
def test_the_examples_of_a_page_run(page, standins):
    namespace: dict = {}
    ran = 0
    for example in BY_PAGE[page]:
        if example.not_run is None and unrunnable(example) is None:
            run_example(example, namespace)
            ran += 1
    if not ran:
        pytest.skip(f"{page}: every example is marked not run")
    assert os.getcwd() == str(standins)
