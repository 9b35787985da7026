"""The codec code an artifact ships: the container format, chain decoding, the integer grid
and the decode half of every stage (``decoders/<name>.py`` pairs with ``encoders/<name>.py``).

Modules here import only the standard library, numpy, torch, the codec libraries
(constriction, zstandard, brotli) and each other; never the build side of golfpack (encoders,
spec, registry, packer). A test holds that line. A stage decoder is a function
``decode(value, params, blobs, meta) -> value``; only the decoders a pipeline uses ship.
"""
