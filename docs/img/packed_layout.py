"""Draws packed-layout.png for docs/engine.md: the padded rows TRL builds for two pairs, the same two pairs
packed by the engine (prompt once, position ids, the positions the output head scores), and one
segment's attention pattern. Run from the repository root: python docs/img/packed_layout.py"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

COLOURS = {"x": "#9ecae1", "w": "#a1d99b", "l": "#fc9272", "pad": "#eeeeee"}
LABELS = {"x": "x", "w": "w", "l": "l", "pad": ""}
# Two pairs: (prompt, chosen, rejected) lengths in tokens.
PAIRS = [(4, 3, 3), (3, 2, 3)]


def _cells(ax, y, kinds, names, x0=0.0):
    """One row of token cells at height y; kinds pick the colour, names are drawn inside."""
    for i, (kind, name) in enumerate(zip(kinds, names)):
        ax.add_patch(Rectangle((x0 + i, y), 1, 1, facecolor=COLOURS[kind], edgecolor="white", lw=1.5))
        ax.text(x0 + i + 0.5, y + 0.5, name, ha="center", va="center", fontsize=8)


def _token_names(kind, n, pair):
    mark = "'" * pair
    return [f"{kind}{mark}{k}" for k in range(n)]


def padded_rows(ax, top):
    """TRL's layout: per pair, prompt + chosen and prompt + rejected, each its own padded row."""
    width = max(p + max(c, r) for p, c, r in PAIRS)
    y = top
    for pair, (p, c, r) in enumerate(PAIRS):
        for kind, n in (("w", c), ("l", r)):
            kinds = ["x"] * p + [kind] * n + ["pad"] * (width - p - n)
            names = _token_names("x", p, pair) + _token_names(kind, n, pair) + [""] * (width - p - n)
            _cells(ax, y, kinds, names)
            y -= 1.15
    title = (
        "TRL (and our padded oracle): 2 rows per pair, the prompt encoded twice,\nlogits at every position"
    )
    ax.text(0, top + 1.2, title, fontsize=9, va="bottom")
    return y


def packed_row(ax, top):
    """The packed engine: each pair one segment [x | w | l] in one row, position ids restarting after x."""
    kinds, names, positions, scored, prompt_nll = [], [], [], [], []
    for pair, (p, c, r) in enumerate(PAIRS):
        start = len(kinds)
        kinds += ["x"] * p + ["w"] * c + ["l"] * r
        names += _token_names("x", p, pair) + _token_names("w", c, pair) + _token_names("l", r, pair)
        positions += list(range(p)) + list(range(p, p + c)) + list(range(p, p + r))
        # x_{P-1} predicts w_0 and l_0 (two head rows); every branch token but the last predicts the next.
        scored += [start + p - 1, start + p - 1] + list(range(start + p, start + p + c - 1))
        scored += list(range(start + p + c, start + p + c + r - 1))
        prompt_nll += list(range(start, start + p - 1))  # x_i predicts x_{i+1}: the NLL over the prompt
    kinds.append("pad")
    names.append("")
    positions.append(None)
    _cells(ax, top, kinds, names)
    for i, pos in enumerate(positions):
        if pos is not None:
            ax.text(i + 0.5, top - 0.35, str(pos), ha="center", va="center", fontsize=7, color="#555555")
    for i in sorted(set(scored)):
        double = scored.count(i) == 2
        for dx in (-0.15, 0.15) if double else (0.0,):
            ax.plot(i + 0.5 + dx, top - 0.85, marker="^", color="black", markersize=5)
    for i in prompt_nll:
        ax.plot(i + 0.5, top - 0.85, marker="^", markerfacecolor="white", color="black", markersize=5)
    ax.text(len(kinds) + 0.3, top + 0.5, "one row", fontsize=8, va="center")
    ax.text(len(kinds) + 0.3, top - 0.35, "position ids", fontsize=7, va="center", color="#555555")
    ax.text(len(kinds) + 0.3, top - 0.85, "head applied", fontsize=7, va="center")
    note = (
        "filled: response log-probs (x3 twice: it predicts w0 and l0); hollow: the prompt NLL (the default)"
    )
    ax.text(0, top - 1.6, note, fontsize=7, va="center")
    title = "orpo's packed engine: one segment per pair, the prompt once, no padding between pairs;\n"
    title += "the output head runs only where a log-prob is read"
    ax.text(0, top + 1.2, title, fontsize=9, va="bottom")


def attention(ax):
    """Which keys each query of the first segment may attend to."""
    p, c, r = PAIRS[0]
    kinds = ["x"] * p + ["w"] * c + ["l"] * r
    n = len(kinds)
    for q in range(n):
        for k in range(n):
            if k > q:
                allowed = False
            elif kinds[q] == "l":
                allowed = kinds[k] != "w"  # the rejected branch never sees the chosen one
            else:
                allowed = kinds[k] != "l"
            colour = COLOURS[kinds[q]] if allowed else "white"
            ax.add_patch(Rectangle((k, n - 1 - q), 1, 1, facecolor=colour, edgecolor="#dddddd", lw=0.8))
    names = _token_names("x", p, 0) + _token_names("w", c, 0) + _token_names("l", r, 0)
    ax.set_xticks([i + 0.5 for i in range(n)], names, fontsize=7, rotation=90)
    ax.set_yticks([n - 1 - i + 0.5 for i in range(n)], names, fontsize=7)
    ax.set_xlim(0, n)
    ax.set_ylim(0, n)
    ax.set_aspect("equal")
    ax.set_xlabel("keys", fontsize=8)
    ax.set_ylabel("queries", fontsize=8)
    ax.set_title("one segment's attention:\n[x | w] causal; l sees x and l, not w", fontsize=9)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)


def main() -> None:
    fig = plt.figure(figsize=(10.5, 3.9))
    rows = fig.add_axes([0.01, 0.08, 0.68, 0.9])
    below = padded_rows(rows, top=6.2)
    packed_row(rows, top=below - 1.4)
    rows.set_xlim(0, 22.5)
    rows.set_ylim(below - 3.9, 8.5)
    rows.set_aspect("equal")
    rows.axis("off")
    legend = [
        Patch(color=COLOURS[k], label=t) for k, t in (("x", "prompt"), ("w", "chosen"), ("l", "rejected"))
    ]
    legend.append(Patch(facecolor=COLOURS["pad"], label="padding"))
    rows.legend(
        handles=legend, loc="lower left", ncol=4, fontsize=8, frameon=False, bbox_to_anchor=(0, -0.04)
    )
    attention(fig.add_axes([0.73, 0.16, 0.25, 0.7]))
    out = Path(__file__).with_name("packed-layout.png")
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
