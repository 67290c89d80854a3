"""User-facing one-line notices: imported by every layer, so it imports nothing heavy.

A notice goes through the ``orpo`` logger at WARNING level, so it shows by default and a user can
silence it with ``logging.getLogger("orpo").setLevel(logging.ERROR)``.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("orpo")

# Notices given with once=True so far in this process (a recipe loaded per tune trial says it once).
_said: set[str] = set()


def notice(message: str, once: bool = False) -> None:
    """One-line user-facing notice (not a warning with a stack); ``once``: not again in this process."""
    if once:
        if message in _said:
            return
        _said.add(message)
    logger.warning("orpo: %s", message)
