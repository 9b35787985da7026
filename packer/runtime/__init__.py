"""The shipped part of the packer: the artifact format (``artifact``, inlined into every
bootstrap), the bootstrap, and the artifact's own commands (``commands``).

Import-free on purpose: ``golfpack``'s command line reads the format's constants from here
without loading torch.
"""
