"""Decoders: map fMRI samples to stimulus features (ridge, semantic, structure, motion, ...).

Import the decoder you need from its module, for example
``from fmrivid.decoders.ridge import RidgeCV``; this package file imports
nothing so that loading one decoder never pulls in the others.
"""
