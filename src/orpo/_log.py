"""User-facing one-line notices: imported by every layer, so it imports nothing heavy.

A notice goes through the ``orpo`` logger at WARNING level, so it shows by default and a user can
silence it with ``logging.getLogger("orpo").setLevel(logging.ERROR)``.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("orpo")


def notice(message: str) -> None:
    """One-line user-facing notice (not a warning with a stack)."""
    logger.warning("orpo: %s", message)
