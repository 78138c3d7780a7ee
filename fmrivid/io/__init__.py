"""Input/output: atomic writes, HDF5 feature store, video files, NIfTI and BIDS."""
