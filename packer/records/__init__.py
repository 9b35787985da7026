"""Records folders for the challenge: the self-extracting ``train_gpt.py`` (``script``,
``loader``, ``lines``: shipped inside it), and ``golfpack submit`` / ``golfpack check``
(``submit``, ``check``: build side)."""
