"""Loading neurorvq models safely: bundled names resolve locally, missing folders fail at once, wrong weights raise.

- `register_bundled(name, folder)`: make a `neurorvq/...` name resolve to a model folder shipped inside a package.
  Each package registers its own models when it is imported (`neurorvq.tokenizer`: `neurorvq/tokenizer-small`, in
  `modeling_neurorvq.py`); `BUNDLED` is the registry.
- `resolve_model_path(name)`: a bundled name (`neurorvq/tokenizer-small`, `neurorvq/lbm-small`) -> its folder
  inside the package; an existing folder -> itself; a name that looks like a local path (or any name when
  `HF_HUB_OFFLINE` is set, or an unknown `neurorvq/...` name) -> `FileNotFoundError` "no such folder" at once,
  instead of a Hub lookup; other `owner/name` ids go to the Hub unchanged.
- `check_model_folder(folder, model_type)`: the folder's `config.json` names the expected model type (an LBM
  folder is not a tokenizer), and its `model.safetensors` is complete (a truncated file is reported by name).
- `load_pretrained(super_from_pretrained, name, model_type, ...)`: both checks, then `from_pretrained` with
  `output_loading_info=True`; any missing, unexpected or mismatched weight is a `ValueError`. Our classes'
  `from_pretrained` call it, so bundled names work there without touching transformers.
- `install_bundled_name_resolution()` / `uninstall_bundled_name_resolution()`: bundled names in transformers' own
  entry points too (`AutoConfig` / `AutoModel` / `AutoModelForCausalLM` / `AutoFeatureExtractor.from_pretrained`,
  `pipeline(model=NAME)`), which have no hook for a local name registry: installing wraps those five callables
  process-wide (only the exact bundled names are translated, every other argument passes through). Importing
  `neurorvq.tokenizer` installs it unless the environment sets `NEURORVQ_NO_PATCH=1`; uninstalling restores
  transformers' originals.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

_NAMESPACE = "neurorvq/"
NO_PATCH_ENV = "NEURORVQ_NO_PATCH"  # "1": importing neurorvq leaves transformers' Auto classes and pipeline() alone

# Models shipped inside the packages, loadable offline by name: name -> folder (see `register_bundled`).
BUNDLED: dict[str, Path] = {}


def register_bundled(name: str, folder: str | os.PathLike) -> Path:
    """Make the bundled name `name` (`neurorvq/...`) resolve to `folder` (a model folder inside a package)
    wherever a model name is accepted. Registering a name again with the same folder is a no-op; another folder
    is a `ValueError`. Returns the folder."""
    if not str(name).startswith(_NAMESPACE) or str(name).count("/") != 1:
        raise ValueError(f"bundled names look like {_NAMESPACE}NAME, got {name!r}")
    folder = Path(folder)
    if BUNDLED.get(name, folder) != folder:
        raise ValueError(f"the bundled name {name} already names {BUNDLED[name]}, not {folder}")
    BUNDLED[name] = folder
    return folder


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def looks_like_path(name: str) -> bool:
    """A name meant as a local folder rather than a Hub id `owner/name` (or `name`)."""
    text = str(name)
    if os.path.isabs(text) or text.startswith(("./", "../", "~", ".\\")) or "\\" in text or text in (".", ".."):
        return True
    parts = [p for p in text.replace(os.sep, "/").split("/")]
    if len(parts) > 2 or text.endswith("/") or "" in parts:
        return True
    return len(parts) == 2 and Path(parts[0]).is_dir()  # runs/tok where runs/ exists: a local path


def resolve_model_path(name_or_path, bundled: dict | None = None):
    """Folder for a bundled name or an existing folder; `FileNotFoundError` at once for a missing local path."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        return name_or_path
    bundled = BUNDLED if bundled is None else bundled
    text = os.fspath(name_or_path)
    folder = bundled.get(text) or BUNDLED.get(text)
    if folder is not None:
        folder = Path(folder)
        if not (folder / "model.safetensors").is_file():
            raise FileNotFoundError(f"the bundled model {text} is missing from {folder}: reinstall neurorvq")
        return folder
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise FileNotFoundError(f"{text} is a file, not a model folder: pass the folder that holds config.json "
                                "and model.safetensors")
    known = ", ".join(sorted(BUNDLED))
    if text.startswith(_NAMESPACE):
        raise FileNotFoundError(f"unknown bundled model {text!r}: the bundled models are {known}")
    if looks_like_path(text) or _offline():
        raise FileNotFoundError(f"no such folder: {text} (pass a model folder written by save_pretrained or "
                                f"neurorvq training, or a bundled name: {known})")
    return name_or_path  # a Hub id


def check_safetensors(path: Path) -> None:
    """`ValueError` naming the file when a safetensors file is truncated or its header is unreadable."""
    size = path.stat().st_size
    problem = None
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            problem = f"{size} bytes, shorter than a header"
        else:
            (length,) = struct.unpack("<Q", head)
            if length > size - 8:
                problem = f"its header announces {length} bytes but the file has {size}"
            else:
                try:
                    header = json.loads(handle.read(length))
                    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
                except (ValueError, KeyError, TypeError) as error:
                    problem = f"unreadable header ({error})"
                else:
                    if 8 + length + end > size:
                        problem = f"truncated: {size} bytes of {8 + length + end}"
    if problem:
        raise ValueError(f"the weights file {path} is damaged ({problem}): copy, download or save the model again")


def check_model_folder(folder, model_type: str | None = None) -> None:
    """The folder holds a model of `model_type` (from its config.json) with complete safetensors weights."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder} has no config.json: it is not a saved model folder")
    try:
        found = json.loads(config_path.read_text()).get("model_type")
    except ValueError as error:
        raise ValueError(f"{config_path} is not valid JSON: {error}") from error
    if model_type is not None and found != model_type:
        kinds = {"neurorvq": "a NeuroRVQ tokenizer (load it with NeuroRVQTokenizer)",
                 "neurorvq-lbm": "a large brainwave model (load it with LBMForCausalLM)"}
        raise ValueError(f"{folder} holds {kinds.get(found, f'a model of type {found!r}')}, not a model of type "
                         f"{model_type!r}")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"{folder} has no model.safetensors weights")
    for path in weights:
        check_safetensors(path)


def check_loading_info(info: dict, folder) -> None:
    """Missing, unexpected or mismatched weights are an error for neurorvq models."""
    problems = []
    for key, label in (("missing_keys", "missing"), ("unexpected_keys", "unexpected"), ("mismatched_keys", "mismatched")):
        names = sorted(str(k if isinstance(k, str) else k[0]) for k in (info.get(key) or []))
        if names:
            problems.append(f"{len(names)} {label} ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})")
    if info.get("error_msgs"):
        problems.append("; ".join(map(str, info["error_msgs"]))[:300])
    if problems:
        raise ValueError(f"the weights in {folder} do not match its config: {'; '.join(problems)}. The folder holds "
                         "another model's weights or a config edited after saving: use the folder as saved")


def load_pretrained(super_from_pretrained, name_or_path, model_type: str | None = None, *args, **kwargs):
    """`from_pretrained` through `super_from_pretrained` with the checks above (the hook of both model classes)."""
    folder = resolve_model_path(name_or_path)
    local = isinstance(folder, Path)
    if local:
        check_model_folder(folder, model_type)
    want_info = kwargs.pop("output_loading_info", False)
    if "dtype" not in kwargs and "torch_dtype" not in kwargs:
        import torch

        # weights may be stored in bfloat16 (half the size of a bundle): compute in float32 unless asked otherwise
        kwargs["dtype"] = torch.float32
    try:
        model, info = super_from_pretrained(folder, *args, output_loading_info=True, **kwargs)
    except OSError as error:
        if local:
            raise
        raise FileNotFoundError(f"{name_or_path} is neither a local folder nor a bundled model "
                                f"({', '.join(sorted(BUNDLED))}), and the Hugging Face Hub could not provide it: "
                                f"{error}") from error
    check_loading_info(info, folder)
    return (model, info) if want_info else model


# ----------------------------------------------------------------------------------------------------
# Bundled names through transformers' Auto classes and pipeline() (opt-out: NEURORVQ_NO_PATCH=1)
# ----------------------------------------------------------------------------------------------------

_AUTO_CLASSES = ("AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoFeatureExtractor")
_ORIGINALS: dict[str, object] = {}  # what install replaced: "AutoConfig" ... and "pipeline" -> the original


def _bundled_folder(name):
    """The folder (as a str) of an exact bundled name, else the argument unchanged."""
    if isinstance(name, (str, os.PathLike)) and os.fspath(name) in BUNDLED:
        return str(resolve_model_path(name))
    return name


def _bundled_first(function):
    """Wrap a `from_pretrained`-like callable so that a bundled name becomes its folder."""
    def wrapper(*args, **kwargs):
        if args:
            args = (_bundled_folder(args[0]), *args[1:])
        elif "pretrained_model_name_or_path" in kwargs:
            kwargs["pretrained_model_name_or_path"] = _bundled_folder(kwargs["pretrained_model_name_or_path"])
        return function(*args, **kwargs)

    wrapper.__wrapped__ = function
    wrapper.__doc__ = function.__doc__
    wrapper._neurorvq_bundled = True
    return wrapper


def patch_disabled() -> bool:
    """True when the environment asks neurorvq not to patch transformers (`NEURORVQ_NO_PATCH=1`)."""
    return os.environ.get(NO_PATCH_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def bundled_name_resolution_installed() -> bool:
    return bool(_ORIGINALS)


def install_bundled_name_resolution() -> None:
    """Make the bundled names work offline in `Auto*.from_pretrained` and `transformers.pipeline(model=NAME)`.

    Wraps `transformers.AutoConfig` / `AutoModel` / `AutoModelForCausalLM` / `AutoFeatureExtractor.from_pretrained`
    and `transformers.pipeline` (process-wide; transformers has no hook for local names). Only the exact bundled
    names are translated (to their folders); every other name passes through unchanged. Idempotent; undone by
    `uninstall_bundled_name_resolution()`. `neurorvq.tokenizer` calls it on import unless `NEURORVQ_NO_PATCH=1`;
    `NeuroRVQTokenizer.from_pretrained` and `LBMForCausalLM.from_pretrained` resolve bundled names either way.
    """
    if _ORIGINALS:
        return
    import transformers
    import transformers.pipelines as pipelines_module

    for class_name in _AUTO_CLASSES:
        cls = getattr(transformers, class_name)
        if not getattr(cls.from_pretrained, "_neurorvq_bundled", False):
            # the class's own attribute (None: inherited from transformers' base Auto class), to put back as it was
            _ORIGINALS[class_name] = cls.__dict__.get("from_pretrained")
            cls.from_pretrained = staticmethod(_bundled_first(cls.from_pretrained))

    original_pipeline = pipelines_module.pipeline
    if not getattr(original_pipeline, "_neurorvq_bundled", False):
        def pipeline(task=None, model=None, *args, **kwargs):
            return original_pipeline(task, _bundled_folder(model), *args, **kwargs)

        pipeline.__doc__ = original_pipeline.__doc__
        pipeline.__wrapped__ = original_pipeline
        pipeline._neurorvq_bundled = True
        _ORIGINALS["pipeline"] = original_pipeline
        pipelines_module.pipeline = pipeline
        transformers.pipeline = pipeline


def uninstall_bundled_name_resolution() -> None:
    """Restore transformers' own `Auto*.from_pretrained` and `pipeline` (a `pipeline` bound with `from
    transformers import pipeline` while installed keeps the wrapper). Bundled names then work only through our
    classes' `from_pretrained` (and folders everywhere)."""
    import transformers
    import transformers.pipelines as pipelines_module

    for class_name in _AUTO_CLASSES:
        if class_name in _ORIGINALS:
            cls, original = getattr(transformers, class_name), _ORIGINALS.pop(class_name)
            if original is None:
                del cls.from_pretrained  # inherited again
            else:
                cls.from_pretrained = original
    if "pipeline" in _ORIGINALS:
        original = _ORIGINALS.pop("pipeline")
        pipelines_module.pipeline = original
        transformers.pipeline = original


def load_model(model_class, name_or_path, **kwargs):
    """`model_class.from_pretrained` with every check of this module, whether or not the class has the hook."""
    parent_from_pretrained = super(model_class, model_class).from_pretrained
    return load_pretrained(parent_from_pretrained, name_or_path, model_class.config_class.model_type, **kwargs)


__all__ = ["BUNDLED", "NO_PATCH_ENV", "bundled_name_resolution_installed", "check_loading_info", "check_model_folder",
           "check_safetensors", "install_bundled_name_resolution", "load_model", "load_pretrained", "looks_like_path",
           "patch_disabled", "register_bundled", "resolve_model_path", "uninstall_bundled_name_resolution"]
