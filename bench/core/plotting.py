"""Matplotlib helpers shared by every figure of a report: panels, frequency axes, PNG + PDF output.

Figures are ``matplotlib.figure.Figure`` objects (rendered with Agg, no pyplot state), saved as a
PNG (for the HTML page and READMEs) and a PDF beside it (vector, for papers). Both files are
deterministic: the PDF carries no creation date, so re-rendering from the same cache gives the
same bytes. Matplotlib is imported inside the functions only, so importing this module is cheap.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

from bench.core.files import atomic_write_bytes

DPI = 150
PDF_METADATA = {"CreationDate": None}  # no timestamp: same cache, same bytes


def panels(n: int, width: float = 4.0, height: float = 3.0, cols: int = 4, **subplots):
    """A figure with ``n`` panels in rows of at most ``cols``; returns (figure, the n used axes)."""
    from matplotlib.figure import Figure

    cols = min(cols, max(n, 1))
    rows = math.ceil(max(n, 1) / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, **subplots).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def save(fig, png: str | Path) -> list[Path]:
    """Write ``fig`` as ``png`` and as the PDF beside it (atomically); returns both paths.

    The layout is solved once, for the PNG, and kept for the PDF (the constrained-layout solve was
    half of each PDF's time; the positions are in figure fractions, so the PDF's layout is the same).
    """
    png = Path(png)
    written = []
    for path, fmt, extra in ((png, "png", {"dpi": DPI}), (png.with_suffix(".pdf"), "pdf", {"metadata": PDF_METADATA})):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, **extra)
        fig.set_layout_engine("none")
        atomic_write_bytes(path, buf.getvalue())
        written.append(path)
    fig.clear()
    return written


def frequency_ticks(n: int) -> list[int]:
    """Tick positions (cycles/image) along a centred axis of ``n`` bins: 0 (DC) and steps of about n/4."""
    step = max(1, round(n / 4))
    low, high = -(n // 2), n - 1 - n // 2
    return [k * step for k in range(-(-low // step), high // step + 1)]


FREQUENCY_X = "horizontal frequency u (cycles/image)"
FREQUENCY_Y = "vertical frequency v (cycles/image)"


def frequency_axes(ax, shape: Sequence[int]) -> tuple[float, float, float, float]:
    """Ticks of a centred (H, W) spectrum on ``ax``; returns the ``imshow`` extent (DC at 0, v upwards).

    The axis labels (``FREQUENCY_X`` / ``FREQUENCY_Y``) go once per figure, see ``title``.
    """
    h, w = shape
    ax.set_xticks(frequency_ticks(w))
    ax.set_yticks(frequency_ticks(h))
    return (-(w // 2) - 0.5, w - 1 - w // 2 + 0.5, -(h // 2) - 0.5, h - 1 - h // 2 + 0.5)


def wrap(fig, text: str) -> str:
    """``text`` broken into lines that fit the width of ``fig`` at the title's font size."""
    return textwrap.fill(text, max(int(fig.get_figwidth() * 10), 30))


def title(fig, text: str, xlabel: str | None = None, ylabel: str | None = None) -> None:
    """Figure title wrapped to the figure's width (never clipped), and axis labels shared by its panels."""
    fig.suptitle(wrap(fig, text))
    if xlabel:
        fig.supxlabel(xlabel, fontsize="medium")
    if ylabel:
        fig.supylabel(ylabel, fontsize="medium")


def plain_log_ticks(axis) -> None:
    """Ticks of a log axis at 1, 2, 5 x 10^k, labelled as plain numbers (0.5, 1, 2) not powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())
