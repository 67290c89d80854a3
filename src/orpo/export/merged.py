"""A run as one standalone model: the adapter of a LoRA/DoRA run merged into its base, or the full model.

``write_merged`` saves it as a Hugging Face folder (safetensors weights, config, tokenizer and its chat
template); ``merged_model`` returns it in memory for the GGUF writer.
"""

from __future__ import annotations

from pathlib import Path


def merged_model(run_dir: str | Path):
    """(model, tokenizer, was_adapter) of an ``orpo train`` run folder, with any adapter merged in."""
    from orpo.run.folder import is_adapter_run, run_recipe
    from orpo.run.loading import open_model

    run_recipe(run_dir)  # a run folder, not a checkpoint or a bare model: the message says what to pass
    loaded = open_model(run_dir)
    model, adapter = loaded.model, is_adapter_run(run_dir)
    if adapter:
        model = model.merge_and_unload()
    return model, loaded.tokenizer, adapter


def check_output_folder(out: Path, force: bool, flag: str = "--out") -> None:
    """A folder we may write into: new, empty, or ``force``."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise ValueError(f"{flag} {out} exists and is not empty; choose a new folder or pass --force")


def write_merged(run_dir: str | Path, out: str | Path, force: bool = False) -> str:
    """Save the merged model of ``run_dir`` to the folder ``out``; returns a one-line summary."""
    out = Path(out)
    check_output_folder(out, force)
    model, tokenizer, adapter = merged_model(run_dir)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return f"{'merged adapter into base' if adapter else 'copied full model'}: {out}"
