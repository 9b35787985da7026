"""Decode halves of the codec stages: the only codec code an artifact ships.

Each module here imports nothing but the standard library, numpy, torch and the codec
libraries (constriction, zstandard, brotli), plus :mod:`.base`; the packer checks this.
A decoder is a function ``decode(value, params, blobs, meta) -> value``.
"""
