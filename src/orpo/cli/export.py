"""`orpo export RUN --format {merged,gguf} --out PATH`: a trained run as a file or folder that serving
tools load. The work is in ``orpo.export``; this module parses flags and prints one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

# Kept in step with orpo.export (not imported here: it pulls in torch, and `orpo --help` builds this parser).
FORMATS = ("merged", "gguf")
DTYPES = ("f32", "f16", "bf16", "q8_0")

HELP = """\
Export a run folder written by `orpo train` to where models run.

  --format merged   a standalone Hugging Face model in the folder --out: for a LoRA/DoRA run the
                    adapter merged into its base, else the model as trained; safetensors weights,
                    config, tokenizer and chat template (vLLM, TGI, transformers).
  --format gguf     one GGUF file --out for llama.cpp and Ollama, from the merged model: tensor names
                    and metadata as llama.cpp's converter writes them, tokenizer and chat template
                    included. Architectures: Llama, Mistral, Qwen2, with a BPE tokenizer
                    (byte-level, or SentencePiece-style with byte fallback).
                    --dtype f16 (default), bf16, f32 or q8_0 (8-bit, about half the size of f16).

examples:
  orpo export runs/x --format merged --out models/x
  orpo export runs/x --format gguf --dtype q8_0 --out models/x-q8_0.gguf
  ollama create x -f Modelfile    # Modelfile: FROM ./models/x-q8_0.gguf
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a run as a merged model folder or a GGUF file (llama.cpp, Ollama)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN", help="run folder written by `orpo train`")
    p.add_argument(
        "--format", default="merged", metavar="F", help=f"one of {', '.join(FORMATS)} (default merged)"
    )
    p.add_argument(
        "--dtype", default="f16", metavar="D", help=f"gguf only: one of {', '.join(DTYPES)} (default f16)"
    )
    p.add_argument(
        "--out", required=True, metavar="PATH", help="folder (merged) or .gguf file (gguf) to write"
    )
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.format not in FORMATS:
        raise ValueError(f"--format {args.format!r}: use one of {', '.join(FORMATS)}")
    if args.dtype not in DTYPES:
        raise ValueError(f"--dtype {args.dtype!r}: use one of {', '.join(DTYPES)}")
    if args.format == "merged" and args.dtype != "f16":
        raise ValueError("--dtype is for --format gguf; a merged folder keeps the run's dtype")
    out = Path(args.out)
    if args.format == "gguf" and out.is_dir():
        raise ValueError(f"--out {out} is a folder; give the .gguf file to write, e.g. {out / 'model.gguf'}")
    if args.format == "gguf" and out.exists() and not args.force:
        raise ValueError(f"--out {out} exists; choose a new file or pass --force")
    from orpo.run.folder import run_recipe
    from orpo.run.loading import has_final_model, no_final_model

    run_recipe(args.run_dir)  # a missing or foreign folder fails here, before any model is loaded
    if not has_final_model(args.run_dir):  # an interrupted run: name its checkpoint and how to finish
        raise no_final_model(Path(args.run_dir), checkpoint_ok=False)
    if args.format == "merged":
        from orpo.export import write_merged

        print(write_merged(args.run_dir, args.out, args.force))
        return 0
    from orpo.export import merged_model, write_gguf
    from orpo.export.gguf_file import architecture

    model, tokenizer, _ = merged_model(args.run_dir)
    architecture(model.config)
    path = write_gguf(model, tokenizer, out, args.dtype, name=Path(args.run_dir).resolve().name)
    size = path.stat().st_size / 2**20
    print(f"wrote {path} ({args.dtype}, {size:.1f} MiB, {model.config.model_type})")
    return 0
