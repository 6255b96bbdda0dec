"""Loading neurorvq models safely: bundled names resolve locally, missing folders fail at once, wrong weights raise.

- `resolve_model_path(name)`: a bundled name (`neurorvq/tokenizer-small`, `neurorvq/lbm-small`) -> its folder
  inside the package; an existing folder -> itself; a name that looks like a local path (or any name when
  `HF_HUB_OFFLINE` is set, or an unknown `neurorvq/...` name) -> `FileNotFoundError` "no such folder" at once,
  instead of a Hub lookup; other `owner/name` ids go to the Hub unchanged.
- `check_model_folder(folder, model_type)`: the folder's `config.json` names the expected model type (an LBM
  folder is not a tokenizer), and its `model.safetensors` is complete (a truncated file is reported by name).
- `load_pretrained(super_from_pretrained, name, model_type, ...)`: both checks, then `from_pretrained` with
  `output_loading_info=True`; any missing, unexpected or mismatched weight is a `ValueError`.
- `install_bundled_name_resolution()`: `AutoConfig` / `AutoModel` / `AutoModelForCausalLM` /
  `AutoFeatureExtractor.from_pretrained` and `pipeline(..., model=NAME)` resolve bundled names offline.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]
# Models shipped inside the package, loadable offline by name.
BUNDLED = {
    "neurorvq/tokenizer-small": _PACKAGE / "tokenizer" / "pretrained" / "tokenizer-small",
    "neurorvq/lbm-small": _PACKAGE / "lbm" / "pretrained" / "lbm-small",
}
_NAMESPACE = "neurorvq/"


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
# Bundled names through transformers' Auto classes and pipeline()
# ----------------------------------------------------------------------------------------------------

_INSTALLED = False


def _bundled_first(function):
    """Wrap a `from_pretrained`-like callable so that a bundled name becomes its folder."""
    def wrapper(*args, **kwargs):
        if args and isinstance(args[0], (str, os.PathLike)) and os.fspath(args[0]) in BUNDLED:
            args = (str(resolve_model_path(args[0])), *args[1:])
        elif isinstance(kwargs.get("pretrained_model_name_or_path"), str) and kwargs["pretrained_model_name_or_path"] in BUNDLED:
            kwargs["pretrained_model_name_or_path"] = str(resolve_model_path(kwargs["pretrained_model_name_or_path"]))
        return function(*args, **kwargs)

    wrapper.__wrapped__ = function
    wrapper.__doc__ = function.__doc__
    wrapper._neurorvq_bundled = True
    return wrapper


def install_bundled_name_resolution() -> None:
    """Make the bundled names work offline in `Auto*.from_pretrained` and `transformers.pipeline(model=NAME)`.

    Only the exact bundled names are translated (to their folders); every other name passes through unchanged.
    """
    global _INSTALLED
    if _INSTALLED:
        return
    import transformers
    import transformers.pipelines as pipelines_module

    for class_name in ("AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoFeatureExtractor"):
        cls = getattr(transformers, class_name)
        original = cls.from_pretrained  # bound classmethod / staticmethod
        if getattr(original, "_neurorvq_bundled", False):
            continue
        cls.from_pretrained = staticmethod(_bundled_first(original))

    original_pipeline = pipelines_module.pipeline
    if not getattr(original_pipeline, "_neurorvq_bundled", False):
        def pipeline(task=None, model=None, *args, **kwargs):
            if isinstance(model, (str, os.PathLike)) and os.fspath(model) in BUNDLED:
                model = str(resolve_model_path(model))
            return original_pipeline(task, model, *args, **kwargs)

        pipeline.__doc__ = original_pipeline.__doc__
        pipeline.__wrapped__ = original_pipeline
        pipeline._neurorvq_bundled = True
        pipelines_module.pipeline = pipeline
        transformers.pipeline = pipeline
    _INSTALLED = True


__all__ = ["BUNDLED", "load_model", "check_loading_info", "check_model_folder", "check_safetensors", "install_bundled_name_resolution",
           "load_pretrained", "looks_like_path", "resolve_model_path"]


def load_model(model_class, name_or_path, **kwargs):
    """`model_class.from_pretrained` with every check of this module, whether or not the class has the hook."""
    parent_from_pretrained = super(model_class, model_class).from_pretrained
    return load_pretrained(parent_from_pretrained, name_or_path, model_class.config_class.model_type, **kwargs)
