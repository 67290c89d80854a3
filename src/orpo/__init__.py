"""orpo: single-stage preference fine-tuning of causal LMs with ORPO (arXiv:2403.07691).

Drop-in for ``trl.experimental.orpo``: ``from orpo import ORPOConfig, ORPOTrainer``.
"""

from typing import TYPE_CHECKING

__all__ = ["KTOConfig", "KTOTrainer", "ORPOConfig", "ORPOTrainer"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from orpo.config import KTOConfig, ORPOConfig
    from orpo.trainer import KTOTrainer, ORPOTrainer


def __getattr__(name: str):
    # Lazy: `import orpo.losses` should not pay for importing transformers' Trainer.
    if name == "ORPOConfig":
        from orpo.config import ORPOConfig

        return ORPOConfig
    if name == "ORPOTrainer":
        from orpo.trainer import ORPOTrainer

        return ORPOTrainer
    if name == "KTOConfig":
        from orpo.config import KTOConfig

        return KTOConfig
    if name == "KTOTrainer":
        from orpo.trainer import KTOTrainer

        return KTOTrainer
    raise AttributeError(f"module 'orpo' has no attribute {name!r}")
