"""The one figure helper the report's modules share: an image panel without ticks, with a small title."""

from __future__ import annotations


def _axes_off(ax, title: str = "", fontsize: float = 8) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=fontsize)
