"""mlx-ollama-bridge: a drop-in Ollama server that runs models on Apple's MLX."""

__version__ = "0.1.0"

# The Ollama API version we present to clients. Several clients parse it as semver and
# refuse anything older than 0.6.4, so this is a realistic Ollama release, not our own.
OLLAMA_COMPAT_VERSION = "0.13.5"

__all__ = ["OLLAMA_COMPAT_VERSION", "__version__"]
