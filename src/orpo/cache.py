"""Where orpo keeps what it computes once and reuses: ``$ORPO_CACHE_DIR`` (default ``~/.cache/orpo``).

Subfolders by owner: ``ref_logps/`` (reference log-probs), ``gguf/`` (dequantized GGUF models), and the
demo's stages.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("ORPO_CACHE_DIR") or Path.home() / ".cache" / "orpo")
