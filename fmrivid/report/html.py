"""Self-contained HTML pages for the report: metric tables and video previews.

Snakemake's report shows PNG/SVG/JPEG as images and HTML in an iframe, but
offers other files (TSV, MP4) only as downloads. These pages make the metric
tables and the GT-vs-reconstruction previews visible inside the report: tables
as HTML ``<table>`` elements, previews as looping ``<video>`` elements with
the MP4 embedded as a data URI (no external file, no network).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from fmrivid.io.atomic import atomic_path

_STYLE = """
body { font-family: sans-serif; font-size: 12px; margin: 12px; }
table.metrics { border-collapse: collapse; margin-bottom: 24px; }
table.metrics th, table.metrics td { border: 1px solid #bbb; padding: 2px 6px; text-align: left; }
table.metrics th { background: #eee; position: sticky; top: 0; }
td.variant { max-width: 520px; font-size: 11px; color: #333; }
"""


def _page(title, body):
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head>\n<body>\n<h2>{html.escape(title)}</h2>\n{body}\n</body></html>\n")


def _write(path, text):
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def table_html(df, table_id):
    """One DataFrame as an HTML ``<table class="metrics" id=...>`` (floats with 4 decimals, NaN as 'nan')."""
    return df.to_html(index=False, table_id=table_id, classes="metrics", float_format=lambda v: f"{v:.4f}",
                      na_rep="nan", border=0, escape=True)


def tables_page(tables, path, title):
    """Write an HTML page holding several tables.

    Parameters
    ----------
    tables : dict of str -> (pandas.DataFrame, str)
        Section title -> (table, html id).
    path : str or Path
        Output ``.html``.
    title : str
        Page title.

    Returns
    -------
    Path
    """
    parts = []
    for heading, (df, table_id) in tables.items():
        parts.append(f"<h3>{html.escape(heading)}</h3>")
        parts.append(table_html(pd.DataFrame(df), table_id))
    return _write(path, _page(title, "\n".join(parts)))


def video_page(mp4_path, path, title, caption=""):
    """Write an HTML page with the MP4 embedded as a looping, muted, autoplaying ``<video>``.

    Parameters
    ----------
    mp4_path : str or Path
        An H.264 MP4 (e.g. from :func:`fmrivid.report.figures.preview_video`).
    path : str or Path
        Output ``.html``.
    title, caption : str
        Shown above / below the video.

    Returns
    -------
    Path
    """
    data = base64.b64encode(Path(mp4_path).read_bytes()).decode("ascii")
    body = (f"<video id=\"preview\" class=\"preview\" controls autoplay loop muted playsinline "
            f"src=\"data:video/mp4;base64,{data}\"></video>\n<p>{html.escape(caption)}</p>")
    return _write(path, _page(title, body))
