"""Report tables: our CC2017 numbers beside the published ones.

The published numbers live in ``published_cc2017.tsv`` next to this module
(REFERENCE.md section 4): system, quantity (the paper's column), the fmrivid
metric key it corresponds to, a value or a low-high range, a note, the
source, and the evaluation protocol of :mod:`fmrivid.metrics.protocols` that
computes it as that paper's code does (empty when fmrivid has none).
:func:`published_comparison` puts beside each row the subject-mean of our
value under that paper's protocol (``protocol_value``: the number to compare)
and of fmrivid's own definition of the metric (``fmrivid_value``: what our
report shows; it may differ from the paper's computation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fmrivid.io.atomic import atomic_path

PUBLISHED_CC2017 = Path(__file__).with_name("published_cc2017.tsv")

COMPARISON_COLUMNS = ["quantity", "metric", "system", "published", "protocol", "protocol_value", "protocol_sd",
                      "protocol_variant", "note", "source", "fmrivid_value", "fmrivid_sd", "n_subjects",
                      "fmrivid_method", "fmrivid_variant"]


def read_published(path=PUBLISHED_CC2017):
    """The published CC2017 table as a DataFrame (value / low / high float, NaN when absent)."""
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if "protocol" not in df.columns:
        df["protocol"] = ""
    for c in ("value", "low", "high"):
        df[c] = pd.to_numeric(df[c].replace("", np.nan))
    return df


def _matches(key, metric, variant):
    """Whether an fmrivid (metric, variant) row is what a published ``metric`` key measures."""
    if key.startswith("nway_video_"):
        n = key.rsplit("_", 1)[1]
        return metric == "nway_topk" and "top-3 GT" in variant and "video level" in variant and f"N={n};" in variant
    for prefix, ours in (("retrieval_large_top", "retrieval_large_topk"), ("retrieval_top", "retrieval_topk")):
        if key.startswith(prefix):  # a large-gallery number is never paired with a small-set one
            k = key[len(prefix):]
            return metric == ours and variant.startswith(f"top-{k} ")
    return metric == key


def _under_protocol(ours, protocol, key):
    """Our subject-mean under the published paper's own protocol (protocol rows of the same metric key)."""
    from fmrivid.metrics import protocols

    empty = {"protocol": protocol, "protocol_value": np.nan, "protocol_sd": np.nan}
    if not protocol:
        return {**empty, "protocol_variant": "no protocol preset for this paper: not compared"}
    if key.startswith("nway_video_") and protocol in protocols.NWAY_NATIVE:
        hit = ours[[m == protocols.NWAY_LABEL and _matches(key, "nway_topk", v)
                    for m, v in zip(ours["metric"].astype(str), ours["variant"].astype(str))]]
    else:
        names = [protocols.label(m.name, protocol) for m in protocols.PROTOCOLS[protocol].metrics if m.key == key]
        if (protocol, key) in protocols.NOT_IN_CODE:
            return {**empty, "protocol_variant": f"not computed: {protocols.NOT_IN_CODE[protocol, key]}"}
        if not names:
            return {**empty, "protocol_variant": f"not computed: fmrivid does not reproduce this metric of the "
                                                f"{protocol} protocol yet"}
        hit = ours[ours["metric"].astype(str).isin(names)]
    if hit.empty:
        return {**empty, "protocol_variant": f"not computed in this run (add {protocol} to evaluate.protocol)"}
    h = hit.iloc[0]
    return {"protocol": protocol, "protocol_value": h["value"], "protocol_sd": h["sd"],
            "protocol_variant": f"{h['metric']}: {h['variant']}"}


def _published_text(row):
    if np.isfinite(row["value"]):
        return f"{row['value']:g}"
    return f"{row['low']:g}-{row['high']:g}"


def published_comparison(means, method, published=None, reason="not computed"):
    """Our subject-mean numbers beside the published CC2017 ones.

    Parameters
    ----------
    means : pandas.DataFrame
        :func:`fmrivid.metrics.table.subject_mean` of the long table.
    method : str
        The fmrivid method (or decoder) to compare.
    published : pandas.DataFrame, optional
        Default :func:`read_published`.
    reason : str
        Written in ``fmrivid_variant`` of rows without a matching fmrivid number.

    Returns
    -------
    pandas.DataFrame
        :data:`COMPARISON_COLUMNS`: one row per published number; the fmrivid
        columns are empty when no matching metric variant was computed.
    """
    published = read_published() if published is None else published
    ours = means[means["method"].astype(str) == str(method)]
    rows = []
    for _, p in published.iterrows():
        hit = ours[[_matches(p["metric"], m, v) for m, v in zip(ours["metric"], ours["variant"])]]
        base = {"quantity": p["quantity"], "metric": p["metric"], "system": p["system"],
                "published": _published_text(p), "note": p["note"], "source": p["source"],
                **_under_protocol(ours, p["protocol"], p["metric"])}
        if hit.empty:
            rows.append({**base, "fmrivid_value": np.nan, "fmrivid_sd": np.nan, "n_subjects": 0,
                         "fmrivid_method": method, "fmrivid_variant": reason})
        else:
            h = hit.iloc[0]
            rows.append({**base, "fmrivid_value": h["value"], "fmrivid_sd": h["sd"],
                         "n_subjects": int(h["n_subjects"]), "fmrivid_method": method,
                         "fmrivid_variant": h["variant"]})
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def write_comparison(means, method, path, reason="not computed"):
    """Write :func:`published_comparison` as a TSV (atomically)."""
    df = published_comparison(means, method, reason=reason)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format="%.6f", lineterminator="\n")
    return df
