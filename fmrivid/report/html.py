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


def provenance_page(doc, path):
    """Write the provenance record as an HTML page (tables for versions, models and checksums, then the config).

    Parameters
    ----------
    doc : dict
        The provenance record written to ``provenance.yaml`` (see :func:`fmrivid.stages.run_provenance`).
    path : str or Path
        Output ``.html``.

    Returns
    -------
    Path
    """
    import yaml

    def kv(mapping, table_id, key="item", value="value"):
        df = pd.DataFrame([(str(k), v if isinstance(v, str) else json_text(v)) for k, v in mapping.items()],
                          columns=[key, value])
        return table_html(df, table_id)

    def json_text(v):
        import json

        return json.dumps(v, sort_keys=True, default=str)

    run = {k: doc.get(k) for k in ("fmrivid_version", "git_commit", "python", "platform", "seed")}
    models = {name: {k: info.get(k) for k in ("spec", "resolved", "revision", "class", "tiny", "seed", "status")
                     if k in info} for name, info in (doc.get("models") or {}).items()}
    body = "\n".join([
        "<h3>Run</h3>", kv(run, "provenance-run"),
        "<h3>Models (id, revision, class, seed)</h3>", kv(models, "provenance-models", "model", "details"),
        "<h3>Package versions</h3>", kv(doc.get("packages") or {}, "provenance-packages", "package", "version"),
        "<h3>Input checksums (SHA-256)</h3>", kv(doc.get("input_sha256") or {}, "provenance-inputs", "file", "sha256"),
        "<h3>Configuration (defaults filled in)</h3>",
        f"<pre id=\"provenance-config\">{html.escape(yaml.safe_dump(doc.get('config') or {}, sort_keys=False))}</pre>",
    ])
    return _write(path, _page("fmrivid provenance", body))
