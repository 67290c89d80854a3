"""mkdocs hook: the recipe reference page shows `orpo train --help-config` as the code prints it.

The fields are documented once, in the code (``ORPOConfig`` field metadata and the recipe sections);
running the command at build time keeps the page from drifting from it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

MARKER = "<!-- orpo train --help-config -->"


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    if MARKER not in markdown:
        return markdown
    out = subprocess.run(
        [sys.executable, "-m", "orpo.cli.main", "train", "--help-config"],
        capture_output=True,
        text=True,
        check=True,
    )
    # Wrap the one-line help strings so the page reads without scrolling sideways.
    lines = [
        textwrap.fill(line, width=100, subsequent_indent=" " * (len(line) - len(line.lstrip()) + 4))
        for line in out.stdout.rstrip().splitlines()
    ]
    return markdown.replace(MARKER, "```text\n" + "\n".join(lines) + "\n```")
