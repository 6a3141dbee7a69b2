"""The client commands of the CLI (``cli.py`` registers them): each module lists its own in
``COMMANDS``. They talk to servers over HTTP only and never import the engine or MLX."""
