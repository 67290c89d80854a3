"""The one model loader: what the user points at -> model, tokenizer and how training rendered prompts.

Every command that reads a trained model uses ``open_model``: ``orpo eval``, ``orpo generate`` (and so
``orpo judge``'s inputs), ``orpo export`` / ``orpo merge``. Four kinds of path are accepted, so a base
model and a tuned one are loaded (and then prompted) the same way:

  kind        what the folder holds                                     prompt rendering from
  run         config.yaml + model or adapter (``orpo train``)            the run's training config
  checkpoint  RUN/checkpoint-N/ (model or adapter, tokenizer), and       the parent run's config
              config.yaml in its parent RUN/
  adapter     adapter_config.json (+ adapter weights), no config.yaml   defaults (chat template 'auto')
  model       config.json + weights, a Hub name, or a .gguf file         defaults
              (dequantized once into its cached folder, ``orpo.models.gguf``)

The reference of a DPO/IPO/hinge run (``open_reference``, for ``orpo eval``) is the model the run
started from: for an adapter, the same base with the adapter disabled (nothing to load); for a full
fine-tune, ``--ref-model``, else ``RUN/base_model/`` (saved for tiny models), else the recipe's
``model.name``.

An adapter's base is ``RUN/base_model/`` when the run saved one (tiny models built in memory), else
the adapter's ``base_model_name_or_path`` (at the run's ``model.revision``). A folder without a
tokenizer (``RUN/base_model/``) takes ``--tokenizer``, else the tokenizer of the run folder it sits in.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from orpo.checkpoints import BASE_MODEL_DIR, CONFIG_FILE, checkpoint_step, latest_checkpoint, read_summary
from orpo.data.tokenize import Limits
from orpo.run.folder import run_recipe

CHECKPOINT = re.compile(r"^checkpoint-\d+$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


@dataclass
class LoadedModel:
    """A model ready to generate, and how prompts must be rendered for it.

    Attributes:
        model: in eval mode; an adapter stays unmerged.
        tokenizer: with a pad token.
        name: the path or name as the user gave it (recorded in every generated line).
        kind: 'run', 'checkpoint', 'adapter' or 'model' (see the module docstring).
        chat_template_mode: as ``ORPOConfig.chat_template_mode`` of the run ('auto' otherwise).
        limits: the run's prompt limits (``max_prompt_length`` and its truncation side).
        tokenization: as ``ORPOConfig.tokenization`` of the run ('orpo' otherwise: BOS as the
            tokenizer adds it, the chat template on string prompts).
    """

    model: object
    tokenizer: object
    name: str
    kind: str
    chat_template_mode: str = "auto"
    limits: Limits = Limits()
    tokenization: str = "orpo"


def _has_weights(path: Path) -> bool:
    return (path / "config.json").is_file() and any(
        any(path.glob(pattern)) for pattern in ("*.safetensors", "pytorch_model*.bin")
    )


def _has_tokenizer(path: Path) -> bool:
    return any((path / name).is_file() for name in TOKENIZER_FILES)


def kind_of(path: str | Path) -> str:
    """Which of the four kinds ``path`` is; ValueError naming what is missing otherwise."""
    p = Path(path)
    if not p.exists():
        # "org/name" may be a Hub name; a path whose parent folder exists here is a local typo.
        if str(path).startswith((".", "/", "~")) or p.suffix or (str(p.parent) != "." and p.parent.is_dir()):
            raise ValueError(
                f"{path} is not an orpo run folder, checkpoint, adapter or model (no such folder)"
            )
        return "model"  # a Hub name
    if not p.is_dir():
        raise ValueError(
            f"{path} is a file; pass a run folder, a checkpoint, an adapter folder, a model folder or a .gguf file"
        )
    if (p / CONFIG_FILE).is_file():
        return "run"
    if CHECKPOINT.match(p.name) and (p.parent / CONFIG_FILE).is_file():
        return "checkpoint"
    if (p / "adapter_config.json").is_file():
        return "adapter"
    if _has_weights(p):
        return "model"
    raise ValueError(
        f"{path} is not an orpo run folder (no config.yaml), checkpoint, adapter (no adapter_config.json) "
        "or model (no config.json + *.safetensors)"
    )


def adapter_base(folder: Path, run: Path | None = None) -> str:
    """Where the base model of the adapter in ``folder`` (of run ``run``, if any) is loaded from."""
    for candidate in (folder / BASE_MODEL_DIR, *([run / BASE_MODEL_DIR] if run else [])):
        if _has_weights(candidate):
            return str(candidate)
    base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path") or ""
    if not base or base.startswith("tiny:"):
        raise ValueError(
            f"{folder}: the adapter's base model ({base or 'unnamed'}) cannot be found (a tiny model built in "
            f"memory is saved to {BASE_MODEL_DIR}/ by a current `orpo train`); pass it with --base "
            "(orpo generate) or retrain"
        )
    return base


def _tokenizer_source(folder: Path, explicit: str | None, run: Path | None, base: str | None) -> str:
    """Where the tokenizer comes from: --tokenizer, else the first folder with tokenizer files among the
    folder, its run, the adapter's base, and the run folder either sits in (``RUN/base_model/`` holds
    weights only), else the Hub name itself."""
    if explicit:
        return explicit
    places = [folder, run, Path(base) if base else None]
    places += [p.parent for p in places if p is not None and (p.parent / CONFIG_FILE).is_file()]
    for candidate in places:
        if candidate is not None and candidate.is_dir() and _has_tokenizer(candidate):
            return str(candidate)
    for name in (base, str(folder)):
        if name and not Path(name).exists():
            return name  # a Hub name
    raise ValueError(f"{folder}: no tokenizer files here or in its run folder; pass --tokenizer PATH")


def has_final_model(run: str | Path) -> bool:
    """Whether a run folder holds its final model or adapter (an interrupted or failed run does not)."""
    return (Path(run) / "adapter_config.json").is_file() or _has_weights(Path(run))


def no_final_model(run: Path, checkpoint_ok: bool = True) -> ValueError:
    """The error for a run folder without its final model (interrupted, failed or still training): it
    names the run's newest complete checkpoint, which eval and generate load like a finished run
    (``checkpoint_ok``; export takes finished runs only)."""
    status = read_summary(run).get("status", "unknown")
    found, _ = latest_checkpoint(run)
    if found is None:
        return ValueError(
            f"{run} holds no final model (status: {status}) and no complete checkpoint; train it to the end "
            "(the run's command again, with resume_from_checkpoint=true if it saved checkpoints)"
        )
    where = f"its newest checkpoint is {found} (step {checkpoint_step(found)})"
    if checkpoint_ok:
        return ValueError(
            f"{run} holds no final model (status: {status}); {where}: pass that, or finish the run with "
            "resume_from_checkpoint=true"
        )
    return ValueError(
        f"{run} holds no final model (status: {status}) to export; {where}: finish the run with "
        "resume_from_checkpoint=true, then export it"
    )


def open_model(
    path: str | Path,
    base: str | None = None,
    tokenizer: str | None = None,
    dtype: str | None = None,
    weights: bool = True,
) -> LoadedModel:
    """Load ``path`` (run, checkpoint, adapter or model; see the module docstring).

    ``base`` overrides an adapter's base model, ``tokenizer`` the tokenizer location, ``dtype`` the
    weights' dtype (default: the run's, else float32). ``weights=False`` loads no model (``model`` is
    None): the tokenizer and prompt rendering of a model that a server already serves.
    """
    from orpo.models.gguf import gguf_folder, is_gguf
    from orpo.models.load import ensure_pad_token, load_model, load_tokenizer

    name = str(path)
    if is_gguf(path) and not Path(path).is_dir():  # llama.cpp's file: its folder, dequantized once and cached
        path = gguf_folder(path)
    kind = kind_of(path)
    folder = Path(path)
    run = folder if kind == "run" else folder.parent if kind == "checkpoint" else None
    mode, limits, init, trust = "auto", Limits(), {"dtype": dtype or "float32"}, False
    tokenization, revision = "orpo", None
    if run is not None:
        recipe = run_recipe(run)
        config = recipe.training_args()
        mode, limits = config.chat_template_mode, Limits.from_config(config)
        tokenization = config.tokenization
        init = {"dtype": dtype or recipe.model.dtype}
        trust = recipe.model.trust_remote_code
        revision = recipe.model.revision
    if not weights:
        model = None
        adapter = (folder / "adapter_config.json").is_file()
        tok_source = _tokenizer_source(
            folder, tokenizer, run, (base or adapter_base(folder, run)) if adapter else None
        )
    elif (folder / "adapter_config.json").is_file():
        from peft import PeftModel

        base_name = base or adapter_base(folder, run)
        # The run's revision names a version of its base on the Hub, not of a folder on disk.
        base_init = {**init, "revision": revision} if revision and not Path(base_name).exists() else init
        model = PeftModel.from_pretrained(load_model(base_name, base_init, trust), str(folder))
        tok_source = _tokenizer_source(folder, tokenizer, run, base_name)
    elif kind == "model" or _has_weights(folder):
        model = load_model(str(path), init, trust)
        tok_source = _tokenizer_source(folder, tokenizer, run, None)
    elif kind == "run":
        raise no_final_model(folder)
    else:
        raise ValueError(f"{path}: no model weights (config.json + *.safetensors) and no adapter_config.json")
    tok = load_tokenizer(tok_source, trust)
    ensure_pad_token(tok, model)
    if model is not None:
        model.eval()
    return LoadedModel(
        model=model,
        tokenizer=tok,
        name=name,
        kind=kind,
        chat_template_mode=mode,
        limits=limits,
        tokenization=tokenization,
    )


def open_reference(run: Path, explicit: str | None = None, dtype: str | None = None):
    """The frozen model a full fine-tune of ``run`` started from, as its DPO/IPO/hinge reference.

    ``explicit`` (``--ref-model``) wins; then ``RUN/base_model/``; then the recipe's ``model.name`` at
    its revision. A tiny model built in memory and not saved cannot be rebuilt: ValueError saying what
    to pass.
    """
    from orpo.models.load import load_model

    recipe = run_recipe(run)
    spec = recipe.model
    init = {"dtype": dtype or spec.dtype}
    if explicit:
        source = explicit
    elif _has_weights(run / BASE_MODEL_DIR):
        source = str(run / BASE_MODEL_DIR)
    elif not spec.name.startswith("tiny:"):
        source = spec.name
        if spec.revision and not Path(source).exists():
            init["revision"] = spec.revision
    else:
        method = recipe.training_args().method
        raise ValueError(
            f"{run}: method={method} scores against the model the run started from ({spec.name}, built in "
            f"memory and not saved in {BASE_MODEL_DIR}/); pass it with --ref-model PATH"
        )
    model = load_model(source, init, spec.trust_remote_code)
    model.eval()
    return model
