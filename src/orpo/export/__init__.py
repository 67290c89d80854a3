"""Export a trained run to where models run: a merged safetensors folder, or one GGUF file.

- ``orpo.export.merged``: the run as a standalone Hugging Face model (a LoRA/DoRA adapter merged into
  its base), loadable with ``AutoModelForCausalLM.from_pretrained``, vLLM, TGI ...
- ``orpo.export.gguf_file``: the merged model as a GGUF file for llama.cpp / Ollama (Llama, Mistral,
  Qwen2 architectures; f32, f16, bf16 or q8_0 weights; tokenizer and chat template included).

``orpo export RUN --format {merged,gguf}`` (``orpo.cli.export``) is the command line.
"""

from orpo.export.gguf_file import DTYPES, SUPPORTED_ARCHITECTURES, write_gguf
from orpo.export.merged import merged_model, write_merged

FORMATS = ("merged", "gguf")

__all__ = ["DTYPES", "FORMATS", "SUPPORTED_ARCHITECTURES", "merged_model", "write_gguf", "write_merged"]
