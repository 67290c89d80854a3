"""The README's promises, checked: its first code block is the two commands CI runs, its own-data
recipe trains as written, the Hub-model variant is a valid recipe, and its relative links exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from helpers import toy_rows
from orpo.cli.main import main
from orpo.run.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
MARKER = "<!-- tests/test_readme.py trains this recipe as written -->"


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)


def test_first_code_block_is_exactly_the_two_commands():
    """Line 1 installs and runs `orpo train`; line 2 installs the dev extras and runs the tests, the fast
    tier then the slow one. `.ci/run` takes the second non-blank, non-comment line of the first block as
    CI's test command."""
    _, body = code_blocks(README)[0]
    lines = [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(lines) == 2, lines
    assert lines[0].startswith("pip install") and lines[0].endswith("orpo train")
    assert '".[dev,' in lines[1] and lines[1].endswith('pytest -m "not slow" && pytest -m slow')


def test_own_data_recipe_trains_as_written(tmp_path, monkeypatch):
    """The recipe block under the marker, written to a file unchanged, trains on a small
    prompt/chosen/rejected file (a few steps) and leaves a finished run with its model."""
    after = README[README.index(MARKER) + len(MARKER) :]
    lang, text = code_blocks(after)[0]
    assert lang == "yaml"
    recipe = yaml.safe_load(text)
    assert recipe["model"]["name"].startswith("tiny:")  # trains offline, as the README says

    monkeypatch.chdir(tmp_path)
    Path("my.yaml").write_text(text)
    data = Path(recipe["data"]["train"])
    data.write_text("".join(json.dumps(row) + "\n" for row in toy_rows(40)))

    assert main(["train", "--no-progress", "my.yaml", "max_steps=3"]) == 0
    run = Path(recipe["training"]["output_dir"])
    assert (run / "model.safetensors").is_file()
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_real_model_variant_trains_as_written(tmp_path, monkeypatch, smollm2_gguf):
    """The real-model example, with the GGUF file where it says: one LoRA step on the user's pairs, the
    recipe defaults for an adapter (learning rate 1e-4), a finished run with an adapter."""
    [text] = [body for lang, body in code_blocks(README) if lang == "yaml" and ".gguf" in body]
    recipe = yaml.safe_load(text)
    monkeypatch.chdir(tmp_path)
    Path(recipe["model"]["name"]).parent.mkdir(parents=True)
    Path(recipe["model"]["name"]).symlink_to(smollm2_gguf)
    Path("smol.yaml").write_text(text)
    Path(recipe["data"]["train"]).write_text("".join(json.dumps(row) + "\n" for row in toy_rows(40)))
    loaded = load_recipe("smol.yaml")
    assert loaded.adapter is not None and loaded.training_args().learning_rate == 1e-4
    overrides = ["max_steps=1", "per_device_train_batch_size=2", "eval_strategy=no", "max_length=64"]
    assert main(["train", "--no-progress", "smol.yaml", *overrides]) == 0
    run = Path(recipe["training"]["output_dir"])
    assert (run / "adapter_model.safetensors").is_file()
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"


def test_relative_links_point_at_files_that_exist():
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert local, "the README links into docs/"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, missing
