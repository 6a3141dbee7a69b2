"""``/api/create``: a new name from an existing model or uploaded files, with new system,
template, parameters and messages, optionally LoRA adapters fused in and quantized.

Creating runs in two steps, so that a bad request is a 400 before any line is streamed:
:func:`plan_create` checks everything that can be checked cheaply (the name, the base
model, the quantization type, that the base is unquantized, the adapter's files and that
they fit the base), then :meth:`CreatePlan.events` does the work and yields Ollama's status
lines, ending in ``success`` or an ``{"error": …}`` line. New weights are written to a hidden
directory renamed into place, and the name is written last: a failure leaves nothing listed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadRequest, BridgeError, ErrorLine, InvalidModelName, ModelNotFound
from ..manifest import Manifest, hash_model_dir
from ..model_code import check_model_dir
from ..registry import LocalModel, Registry
from .atomic import staged_dir
from .blobs import blob_file, check_model_blobs
from .gguf_reader import read_gguf_header
from .lock import store_lock
from .manage import check_name, prune_weights
from .manifests import write_manifest

log = logging.getLogger(__name__)

__all__ = ["CreatePlan", "CreateSpec", "ErrorLine", "create_model", "plan_create"]

_FLOAT_TENSORS = {"F32", "F16", "BF16"}


@dataclass
class CreateSpec:
    """A validated ``/api/create`` request (parameters already typed by the server).

    Exactly one of ``base`` (an existing model) and ``files`` (uploaded blobs) is set.
    """

    name: str
    base: str | None = None
    files: dict[str, str] | None = None  # file name -> sha256 digest of an uploaded blob
    system: str | None = None
    template: str | None = None
    parameters: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = None
    quantize: str | None = None  # Ollama's quantize/quantization: q4_K_M, q8_0, int4, …
    adapters: dict[str, str] | None = None  # LoRA adapter files: name -> blob digest


@dataclass
class CreatePlan:
    """A checked create: :meth:`events` does it."""

    registry: Registry
    spec: CreateSpec
    base: LocalModel | None  # None: made from ``spec.files``
    quant: Any  # derive.QuantType | None
    adapter_dir: Path | None  # an mlx-lm adapter directory (temporary, outside the store)
    model: LocalModel | None = None  # set when done

    def events(self) -> Iterator[dict[str, Any]]:
        """Do the create, yielding Ollama's status lines; the last is success or an error.

        The whole create holds the store lock and writes the manifest once, last (as
        ``manage`` did before quantize and adapters): a concurrent delete or create of the
        same name runs before or after it, and a crash leaves the old model or the new one.
        """
        try:
            yield from self._run()
        except BridgeError as exc:
            log.info("create failed model=%s: %s", self.spec.name, exc.message)
            yield ErrorLine(exc.message, exc.status_code)
        except Exception as exc:  # never leave the stream without an ending
            log.exception("create failed model=%s", self.spec.name)
            yield ErrorLine(f"create failed: {type(exc).__name__}")
        finally:
            if self.adapter_dir is not None:
                shutil.rmtree(self.adapter_dir.parent, ignore_errors=True)

    def _run(self) -> Iterator[dict[str, Any]]:
        spec, registry = self.spec, self.registry
        derive = self.quant is not None or self.adapter_dir is not None
        used_blobs: list[Path] = []
        with store_lock(registry):
            replaced = registry.stored_manifest(spec.name)
            converted: list[Path] = []  # weights made from files and then derived from
            if self.base is not None:
                base_manifest, parent = self.base.manifest, self.base.name.display
                yield {"status": f"using existing layer sha256:{self.base.digest}"}
            else:
                from .blobs import manifest_from_blobs

                # as Ollama's, before the (possibly long) conversion
                kind = "parsing GGUF" if _has_gguf(spec.files) else "converting model"
                yield {"status": kind}
                base_manifest, used_blobs = manifest_from_blobs(
                    registry, spec.name, spec.files or {}
                )
                parent = ""
                if derive:
                    converted.append(base_manifest.resolve_dir(registry.models_dir))
                else:
                    yield {"status": f"creating new layer sha256:{base_manifest.digest}"}
            if derive:
                try:
                    base_manifest = yield from self._derive(base_manifest)
                except BaseException:  # no converted weights left behind that no name uses
                    prune_weights(registry, converted)
                    raise
            manifest = dataclasses.replace(
                base_manifest,
                created_at=time.time(),
                parent_model=parent,
                system=spec.system if spec.system is not None else base_manifest.system,
                template=spec.template if spec.template is not None else base_manifest.template,
                parameters={**base_manifest.parameters, **(spec.parameters or {})},
                messages=list(spec.messages)
                if spec.messages is not None
                else base_manifest.messages,
            )
            for layer in (spec.template, spec.system, spec.parameters, spec.messages):
                if layer is not None:
                    yield {"status": f"creating new layer sha256:{_digest(layer)}"}
            yield {"status": "writing manifest"}
            self.model = write_manifest(registry, spec.name, manifest)
            old = [replaced.resolve_dir(registry.models_dir)] if replaced is not None else []
            prune_weights(registry, old + converted)
        for blob in used_blobs:
            blob.unlink(missing_ok=True)  # consumed: the store has its own copy now
        log.info("created model=%s from=%s", self.model.name.display, spec.base or "files")
        yield {"status": "success"}

    def _derive(self, base_manifest: Manifest) -> Generator[dict[str, Any], None, Manifest]:
        """New weights from the base's (adapter fused, quantized), once per base and recipe;
        returns the manifest naming them. Call with the store lock held."""
        from .derive import check_quantizable, derive_weights

        registry, quant = self.registry, self.quant
        base_dir = base_manifest.resolve_dir(registry.models_dir)
        dtype = check_quantizable(base_dir, quant) if quant is not None else None
        recipe = [base_manifest.digest, quant.name if quant else "", self._adapter_digest()]
        out_dir = registry.weights_root / f"derived-{_digest(json.dumps(recipe))[:16]}"
        if self.adapter_dir is not None:
            yield {"status": "converting adapter"}
        if quant is not None and quant.gguf_name:
            status = f"quantizing {dtype} model to {quant.name}"
        elif quant is not None:
            status = f"importing {self.spec.name} (quantizing to {quant.name})"
        else:
            status = "applying adapter"
        if not (out_dir / "config.json").is_file():
            with staged_dir(out_dir) as staging:
                yield from derive_weights(
                    base_dir, staging, quant=quant, adapter_dir=self.adapter_dir, status=status
                )
            if quant is not None and quant.gguf_name:
                yield {"status": "verifying conversion"}
        check_model_dir(out_dir, model=self.spec.name)
        manifest = dataclasses.replace(
            base_manifest,
            model_dir=str(out_dir.relative_to(registry.models_dir)),
            format="mlx",
            source=_derived_source(base_manifest.source, quant, self.adapter_dir),
            files=hash_model_dir(out_dir),
        )
        yield {"status": f"creating new layer sha256:{manifest.digest}"}
        return manifest

    def _adapter_digest(self) -> str:
        return _digest(self.spec.adapters) if self.spec.adapters else ""


def plan_create(registry: Registry, spec: CreateSpec) -> CreatePlan:
    """Check ``spec`` (4xx for anything wrong) and return the plan that carries it out."""
    check_name(spec.name, "invalid model name")
    quant = None
    if spec.quantize:
        from .derive import parse_quantize

        quant = parse_quantize(spec.quantize)
    base = None
    if spec.files:
        sources = check_model_blobs(registry, spec.files)
        if quant is not None:
            _check_float_files(sources)
    else:
        base = _resolve_base(registry, spec.base or "")
        check_model_dir(base.path, model=base.name.display)  # stored before the check existed
        if quant is not None:
            from .derive import check_quantizable, load_derived

            check_quantizable(base.path, quant)
            if not spec.adapters:  # mlx-lm can load it (lazily: nothing is read yet)
                load_derived(base.path, quant=None, adapter_dir=None)
    adapter_dir = _adapter(registry, spec, base) if spec.adapters else None
    return CreatePlan(registry, spec, base, quant, adapter_dir)


def create_model(registry: Registry, spec: CreateSpec) -> tuple[LocalModel, list[str]]:
    """Create ``spec.name`` to the end; returns the new model and Ollama-style status lines.

    Parameters merge over the base model's (the request wins); the others replace the
    base's when given. A failure raises the error its ``{"error": …}`` line carries.
    """
    plan = plan_create(registry, spec)
    statuses = []
    for line in plan.events():
        if "error" in line:
            raise BridgeError(line["error"], status_code=getattr(line, "status", 500))
        statuses.append(line["status"])
    assert plan.model is not None
    return plan.model, list(dict.fromkeys(statuses))


def _adapter(registry: Registry, spec: CreateSpec, base: LocalModel | None) -> Path:
    """The adapter's blobs as an mlx-lm adapter directory (temporary), checked against the
    base model now when there is one (a model from files is checked once converted)."""
    from .adapters import write_mlx_adapter

    paths = {name: blob_file(registry, digest) for name, digest in (spec.adapters or {}).items()}
    if missing := [name for name, path in paths.items() if not path.is_file()]:
        raise BadRequest(f"blob for {missing[0]} not found: upload it to /api/blobs first")
    scratch = Path(tempfile.mkdtemp(prefix="mlx-bridge-adapter-"))  # small files, not the store
    try:
        num_layers = _num_layers(base.path) if base is not None else 1 << 16
        write_mlx_adapter(paths, scratch / "adapter", num_layers)
        if base is not None:
            from .derive import load_derived

            load_derived(base.path, quant=None, adapter_dir=scratch / "adapter")
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return scratch / "adapter"


def _num_layers(model_dir: Path) -> int:
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        return int(config.get("num_hidden_layers") or config["text_config"]["num_hidden_layers"])
    except (OSError, ValueError, KeyError, TypeError):
        return 1 << 16  # every layer


def _check_float_files(sources: dict[str, Path]) -> None:
    """As Ollama: only an F16/BF16/F32 model can be quantized (a GGUF's tensors, or a
    safetensors directory without a quantization config)."""
    refused = BadRequest("quantization is only supported for F16, BF16 and F32 models")
    for rel, path in sources.items():
        if rel.lower().endswith(".gguf"):
            _, tensors = read_gguf_header(path)
            if any(t.type_name not in _FLOAT_TENSORS for t in tensors.values()):
                raise refused
        elif rel == "config.json":
            try:
                config = json.loads(path.read_bytes()[: 4 << 20])
            except ValueError as exc:
                raise BadRequest(f"config.json is not valid JSON: {exc}") from exc
            if isinstance(config, dict) and (
                config.get("quantization") or config.get("quantization_config")
            ):
                raise refused


def _has_gguf(files: dict[str, str] | None) -> bool:
    return any(name.lower().endswith(".gguf") for name in files or {})


def _derived_source(source: str, quant: Any, adapter_dir: Path | None) -> str:
    steps = (["adapter"] if adapter_dir is not None else []) + ([quant.name] if quant else [])
    return f"{source} +{'+'.join(steps)}"


def _resolve_base(registry: Registry, base: str) -> LocalModel:
    try:
        return registry.resolve(base)
    except InvalidModelName:
        raise BadRequest(f'invalid base model name "{base}"') from None
    except ModelNotFound:
        raise ModelNotFound(base, f'model "{base}" not found, try pulling it first') from None


def _digest(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
