"""Split and caption tables: the train/test split (``splits.tsv``) every rule after `splits` reads, and
``captions.tsv``."""

from __future__ import annotations

import pandas as pd

SPLIT_COLUMNS = ["clip_id", "split", "file", "caption"]


def read_splits(path):
    """Read the splits file: DataFrame with clip_id, split, file, caption."""
    return pd.read_csv(path, sep="\t", dtype={"clip_id": str})


def clip_ids(splits, split):
    return splits.loc[splits["split"] == split, "clip_id"].tolist()


def read_captions(path):
    """Read ``captions.tsv``: clip_id, caption, source."""
    return pd.read_csv(path, sep="\t", dtype={"clip_id": str, "caption": str}, keep_default_na=False)


def chunk_rows(n_total, chunk, chunk_size):
    """Row slice of chunk ``chunk`` (0-based) when ``n_total`` test clips are cut in chunks of ``chunk_size``."""
    chunk, chunk_size = int(chunk), int(chunk_size)
    n_chunks = max(1, -(-int(n_total) // chunk_size))
    if not 0 <= chunk < n_chunks:
        from fmrivid.errors import ConfigError

        raise ConfigError(f"generate.chunk_size={chunk_size}: {n_total} test clips make {n_chunks} chunk(s); "
                          f"chunk {chunk} does not exist")
    return slice(chunk * chunk_size, min(int(n_total), (chunk + 1) * chunk_size))
