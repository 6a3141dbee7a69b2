"""``python -m mlx_ollama_bridge``."""

from .cli import main

main()
