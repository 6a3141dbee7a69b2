"""Guard the layering of DESIGN.md: who may import what, and no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import PACKAGE, package_files, uses

files = package_files


def test_only_the_listed_engine_modules_and_the_converter_import_mlx():
    # The backend (engine/backend.py) imports no MLX itself; its jobs do: loading models,
    # generating, sampling. engine/embeddings.py is the BERT encoder behind its embed().
    allowed = {
        PACKAGE / "engine" / "mlx_models.py",
        PACKAGE / "engine" / "generation.py",
        PACKAGE / "engine" / "sampling.py",
        PACKAGE / "engine" / "embeddings.py",
        # structured output: the token mask is applied to mx logits inside mlx-lm's loop
        PACKAGE / "engine" / "constrained.py",
        # prompt cache reuse: mlx-lm's LRUPromptCache and KV-cache trimming, behind the backend
        PACKAGE / "engine" / "prompt_cache.py",
        # continuous batching: mlx-lm's BatchGenerator
        PACKAGE / "engine" / "batching.py",
        # the batch lane's decode step: a subclass of mlx-lm's GenerationBatch
        PACKAGE / "engine" / "lean_batch.py",
        # prompt caches on disk: mlx-lm's save_prompt_cache / load_prompt_cache
        PACKAGE / "engine" / "prompt_disk.py",
        # OLLAMA_KV_CACHE_TYPE: mlx-lm's QuantizedKVCache
        PACKAGE / "engine" / "kv_quant.py",
        # draft models: mlx-lm's speculative_generate_step
        PACKAGE / "engine" / "speculative.py",
        # prompt-lookup decoding: the model checks n-gram drafts, KV caches trimmed back
        PACKAGE / "engine" / "prompt_lookup.py",
        # Linux CPU mode: small quantized models dequantized to float32 at load, behind load()
        PACKAGE / "engine" / "cpu_dense.py",
        # logprobs: a log-softmax over each position's logits
        PACKAGE / "engine" / "logprobs.py",
        # vision models: mlx-vlm's model behind mlx-lm's face, image features as embeddings
        PACKAGE / "engine" / "vision.py",
        PACKAGE / "engine" / "vision_rope.py",  # M-RoPE positions for the language model
        # distributed groups: collectives (all_sum, send/recv) and sharded loading
        PACKAGE / "engine" / "group_channel.py",
        PACKAGE / "engine" / "group_load.py",
        PACKAGE / "engine" / "group_pipeline.py",
        PACKAGE / "store" / "gguf.py",
        # Ollama's MLX tensor layers: each safetensors blob renamed for mlx-lm (bf16, packed)
        PACKAGE / "store" / "ollama_layers.py",
        # /api/create quantize and adapters: mlx-lm's load_adapters, fuse, quantize_model
        PACKAGE / "store" / "derive.py",
        PACKAGE / "store" / "adapters.py",
    }
    offenders = [p for p in files() if p not in allowed and uses(p, "mlx", "mlx_lm")]
    assert offenders == []


def test_engine_never_imports_server_flask_or_click():
    offenders = [
        p
        for p in files("engine")
        if uses(p, "flask", "click", "werkzeug", "mlx_ollama_bridge.server")
    ]
    assert offenders == []


def test_cli_never_imports_the_engine():
    assert not uses(PACKAGE / "cli.py", "mlx_ollama_bridge.engine")


def test_registry_and_config_stay_free_of_web_and_ml():
    for name in (
        *(str(p.relative_to(PACKAGE)) for p in files("config")),
        "registry.py",
        "name_order.py",
        "names.py",
        "durations.py",
        "manifest.py",
        "errors.py",
        "cpu_blas.py",  # runs in the gunicorn master and in doctor, before or without MLX
    ):
        path = PACKAGE / name
        assert not uses(path, "flask", "mlx", "mlx_lm", "mlx_ollama_bridge.engine"), name


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_nodes(tree: ast.AST):
    """Every node but those under ``if TYPE_CHECKING:`` (annotations only, never run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            yield from (n for child in node.orelse for n in [child, *runtime_nodes(child)])
            continue
        yield node
        yield from runtime_nodes(node)


def internal_imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules ``path`` imports when it runs, lazily or not: ``from pkg import
    mod`` is an edge to ``mod``, ``from pkg import name`` one to ``pkg``."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    found: set[str] = set()
    for node in runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            prefix = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{prefix}.{alias.name}"
                found.add(sub if sub in modules else prefix)
    return found & modules


def test_no_import_cycles():
    paths = {module_name(p): p for p in files()}
    graph = {m: internal_imports(p, set(paths)) - {m} for m, p in paths.items()}
    cycles = []
    for start in graph:  # a path from one of start's imports back to start is a cycle
        seen, todo = set(), [(n, [start, n]) for n in graph[start]]
        while todo:
            module, route = todo.pop()
            if module == start:
                cycles.append(" -> ".join(route))
                break
            if module not in seen:
                seen.add(module)
                todo.extend((n, [*route, n]) for n in graph[module])
    assert cycles == []
