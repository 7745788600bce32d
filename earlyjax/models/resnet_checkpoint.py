"""torchvision / timm ResNet-50 checkpoints -> the variables of `earlyjax.models.resnet50`.

A checkpoint file is untrusted input, and nothing here unpickles arbitrary objects: a
`.safetensors` file is read with `safetensors.numpy`; a PyTorch file (`.pt`, `.pth`, `.bin`,
`.ckpt`) only with `torch.load(..., weights_only=True)` where torch is installed, and without
torch the error gives the one-line command that converts it to safetensors elsewhere. A
training checkpoint's state dict is taken from its "model_state", "state_dict" or "model"
entry (those of ens-for-transfer, Sadrtdinov et al. 2023) and (Distributed)DataParallel's
"module." prefix is dropped; no other prefix is (a self-supervised export with e.g.
"backbone." names is refused, naming its tensors).

Names are torchvision's `resnet50().state_dict()` names, which timm's `resnet50` shares:
`conv1`/`bn1` -> `stem/conv`, `stem/bn`; `layer{i}.{j}.conv{k}`/`bn{k}` ->
`layer{i}/block{j}/conv{k}`, `bn{k}`; `layer{i}.{j}.downsample.0`/`.1` -> `shortcut_conv`,
`shortcut_bn`; `fc` -> `head/fc`. Conv weights go OIHW -> HWIO, the fc weight is transposed,
BatchNorm `weight`/`bias` are params `scale`/`bias` and `running_mean`/`running_var` the
batch_stats `mean`/`var` (the statistics travel with the weights); `num_batches_tracked` is
skipped. Any other tensor, any tensor the model has and the file lacks and any shape that
differs is an error naming it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.core import unfreeze
from safetensors.numpy import load_file

from earlyjax.config import ConfigError
from earlyjax.models.resnet50 import ResNet50
from earlyjax.models.xlmr_checkpoint import fit_problems

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
CHECKPOINT_SUFFIXES = SAFETENSORS_SUFFIXES + TORCH_SUFFIXES
WRAPPERS = ("model_state", "state_dict", "model")  # a training checkpoint's state-dict entry
PREFIX = "module."  # (Distributed)DataParallel's
HEAD_PREFIX = "fc."
_BN = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
_STEM = {"conv": "conv1", "bn": "bn1"}
_SHORTCUT = {"shortcut_conv": "downsample.0", "shortcut_bn": "downsample.1"}


def convert_command(path: str) -> str:
    """The shell command that writes `path`'s state dict as a .safetensors file beside it."""
    out = os.path.splitext(path)[0] + ".safetensors"
    return (
        'python -c "import torch; from safetensors.torch import save_file; '
        f"sd = torch.load({path!r}, map_location='cpu', weights_only=True); "
        f"sd = next((sd[k] for k in {WRAPPERS} if k in sd), sd); "
        f'save_file({{k: v.contiguous() for k, v in sd.items()}}, {out!r})"'
    )


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """{torchvision name: array} of a .safetensors or PyTorch checkpoint (module docstring);
    ConfigError for an unknown suffix, a missing or unreadable file, or a PyTorch file without
    torch (saying how to convert it)."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in CHECKPOINT_SUFFIXES:
        raise ConfigError(
            f"ResNet-50 checkpoint {path!r} has suffix {suffix!r}: give a .safetensors file or a "
            f"PyTorch state dict ({', '.join(TORCH_SUFFIXES)})"
        )
    if not os.path.isfile(path):
        raise ConfigError(f"ResNet-50 checkpoint {path!r} is not a file: check the path")
    if suffix in SAFETENSORS_SUFFIXES:
        try:
            tensors = load_file(path)
        except Exception as e:  # safetensors raises its own error types for a corrupt file
            raise ConfigError(f"cannot read {path!r} as safetensors: {_first_line(e)}") from None
    else:
        tensors = _torch_state_dict(path)
    return {name.removeprefix(PREFIX): value for name, value in tensors.items()}


def _torch_state_dict(path: str) -> dict[str, np.ndarray]:
    """A PyTorch file's state dict through torch's weights-only unpickler."""
    try:
        import torch
    except ImportError:
        raise ConfigError(
            f"ResNet-50 checkpoint {path!r} is a PyTorch file and torch is not installed (a "
            "pickle is never loaded without torch's weights-only loader): convert it to "
            f"safetensors where torch is, with `{convert_command(path)}`, and pass the "
            ".safetensors file"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the weights-only unpickler refuses with several error types
        raise ConfigError(
            f"cannot read {path!r} with torch.load(weights_only=True): {_first_line(e)}"
        ) from None
    if isinstance(state, Mapping):
        state = next((state[k] for k in WRAPPERS if isinstance(state.get(k), Mapping)), state)
    if not isinstance(state, Mapping):
        raise ConfigError(f"{path!r} holds a {type(state).__name__}, not a state dict")
    out = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ConfigError(
                f"{path!r}: state-dict entry {name!r} is a {type(value).__name__}, not a tensor"
            )
        value = value.detach().cpu()
        out[name] = (value.float() if value.is_floating_point() else value).numpy()
    return out


def torchvision_names(variables: Any) -> dict[str, tuple[str, tuple[str, ...]]]:
    """{torchvision name: (collection, path)} of every leaf of ResNet50's `variables`."""
    names = {}
    for collection in ("params", "batch_stats"):
        for path in _leaf_paths(unfreeze(variables).get(collection, {})):
            names[_torchvision_name(path)] = (collection, path)
    return names


def _torchvision_name(path: tuple[str, ...]) -> str:
    *modules, leaf = path
    if modules[0] == "head":
        return f"fc.{'weight' if leaf == 'kernel' else leaf}"
    if modules[0] == "stem":
        prefix = _STEM[modules[1]]
    else:  # layer{i}, block{j}, conv{k} | bn{k} | shortcut_*
        layer, block, part = modules
        prefix = f"{layer}.{block.removeprefix('block')}.{_SHORTCUT.get(part, part)}"
    return f"{prefix}.{'weight' if leaf == 'kernel' else _BN[leaf]}"


def load_resnet50(
    checkpoint: str | Mapping[str, np.ndarray],
    model: ResNet50,
    variables: Any,
    *,
    load_head: bool = False,
) -> dict:
    """`variables` (from `model.init`) with the backbone's params and BatchNorm statistics
    (and with `load_head` the fc head's params) from `checkpoint`: a file (`read_state_dict`)
    or {torchvision name: array}. float32 arrays; ConfigError naming every unknown, missing
    or misshapen tensor (the module docstring)."""
    tensors = read_state_dict(checkpoint) if isinstance(checkpoint, str) else checkpoint
    where = checkpoint if isinstance(checkpoint, str) else "state dict"
    out = jax.tree.map(np.array, unfreeze(variables))  # nested dicts of writable copies
    names = torchvision_names(out)
    counters = {n.rsplit(".", 1)[0] + ".num_batches_tracked" for n in names if "running" in n}
    unexpected, mismatched, loaded = [], [], set()
    for name, value in tensors.items():
        if name in counters or (name.startswith(HEAD_PREFIX) and not load_head):
            continue
        if name not in names:
            unexpected.append(name)
            continue
        collection, path = names[name]
        parent = out[collection]
        for key in path[:-1]:
            parent = parent[key]
        raw, want = np.asarray(value), parent[path[-1]].shape
        value = _to_ours(raw, len(want))
        if value.shape != want:
            mismatched.append(f"{name} {raw.shape}, expected {_to_torch_shape(want)}")
            continue
        parent[path[-1]] = value.astype(np.float32)
        loaded.add(name)
    needed = [n for n in names if load_head or not n.startswith(HEAD_PREFIX)]
    missing = [n for n in needed if n not in loaded and n not in tensors]
    problems = fit_problems(
        ("missing tensors", missing),
        ("unexpected tensors", unexpected),
        ("shape mismatches", mismatched),
    )
    if problems:
        hint = _width_hint(tensors, model)
        raise ConfigError(
            f"ResNet-50 checkpoint {where} does not fit ResNet50(width={model.width}, "
            f"num_classes={model.num_classes}): {'; '.join(problems)}{hint}"
        )
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), out)


def _to_ours(value: np.ndarray, ndim: int) -> np.ndarray:
    """A torch conv weight OIHW -> HWIO, a Linear weight [out, in] -> [in, out]."""
    if ndim == 4 and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if ndim == 2 and value.ndim == 2:
        return value.T
    return value


def _to_torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) == 4:
        h, w, i, o = shape
        return (o, i, h, w)
    return tuple(reversed(shape)) if len(shape) == 2 else tuple(shape)


def _width_hint(tensors: Mapping[str, np.ndarray], model: ResNet50) -> str:
    stem = tensors.get("conv1.weight")
    if stem is None or np.ndim(stem) != 4 or stem.shape[0] == model.width:
        return ""
    return f" (its conv1 has {stem.shape[0]} channels: set --config.model.width={stem.shape[0]})"


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _leaf_paths(tree: dict, prefix: tuple[str, ...] = ()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaf_paths(value, (*prefix, key))
        else:
            yield (*prefix, key)
