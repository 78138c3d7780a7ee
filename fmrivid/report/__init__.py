"""Report artefacts: figures (frame grids, preview videos, metric bars, loss curves).

Figures are drawn with matplotlib's Agg canvas (no display needed) and written atomically.
"""
