"""The demo dataset: procedural clips, planted BOLD responses and their ground truth.

``plan(params)`` says which files ``simulate_dataset(root, params)`` writes; the
workflow's ``simulate_demo`` rule calls both.
"""

from fmrivid.simulate.dataset import plan, simulate_dataset

__all__ = ["plan", "simulate_dataset"]
