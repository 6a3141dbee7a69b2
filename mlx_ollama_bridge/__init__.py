"""mlx-ollama-bridge: a drop-in Ollama server that runs models on Apple's MLX."""

__version__ = "0.1.0"

# The Ollama API version we present to clients: the Ollama release whose request and
# response fields the bridge follows (its newest release at the time, v0.32.15: think "max",
# reasoning_effort up to "xhigh"/"ultra"), never older than the newest endpoint served
# (/v1/messages is 0.14). Several clients parse it as semver and refuse anything older than
# 0.6.4, so it is a real Ollama release, not our own version.
OLLAMA_COMPAT_VERSION = "0.32.15"

__all__ = ["OLLAMA_COMPAT_VERSION", "__version__"]
