"""Models of the user's own in the workflow (README, "Your own model and data"; docs/method.md, "Models").

A config entry ``models: NAME: {module: "package.module:factory", kwargs: {...}, checkpoint: PATH or null,
input: {range: [0, 1], mean: [...], std: [...]}, layers: null or [module names]}`` names a factory (a function or
class) that returns an ``nn.Module`` mapping images ``(N, C, H, W)`` to logits ``(N, K)``. The module is imported
from the run's working directory or the environment.

* **Input convention.** The workflow's inputs live in its model space, [-1, 1] (budgets, controls and attacks are
  stated there for every model). :class:`UserModel` maps them to the user's convention before the user's network
  sees them: ``r = lo + (x + 1) / 2 * (hi - lo)`` for ``range: [lo, hi]``, then ``(r - mean) / std`` per channel
  (defaults: range [0, 1], mean 0, std 1).
* **Layers.** The maps recorded are the outputs of the modules named in ``layers`` (as in the user network's
  ``named_modules()``), else those of :func:`advflow.models.layers.default_layers`'s rule for any model (a
  convolution with what directly follows it; a residual block's output). The choice is resolved once, when the
  model is checked, and stored in the checkpoint's architecture, so every stage measures the same modules.
* **Weights.** With a checkpoint the model is loaded (``torch.load(weights_only=True)``: a file that would run code
  is refused), not trained; without one it is trained with the workflow's recipe.

Everything a job would trip over is checked when the config is (:func:`check_user_model`): the import, the factory,
the checkpoint's keys, one forward pass on a blank batch of the dataset's shape, the layer names.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import os
import pickle
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advflow.workflow.user_source import UserModelError, _working_directory_importable, split_path

#: The keys of a user model's config entry that describe the model (the training keys may sit beside them).
USER_KEYS = ("module", "kwargs", "checkpoint", "input", "layers", "temperature")
#: The input convention when the config gives none: pixels in [0, 1], no normalization.
DEFAULT_INPUT = {"range": [0.0, 1.0], "mean": None, "std": None}
_SHOWN = 12  # names listed in a message before "..."


def _listing(names: list[str]) -> str:
    shown = ", ".join(map(repr, names[:_SHOWN]))
    return shown + (f", ... ({len(names)} in all)" if len(names) > _SHOWN else "")


def import_factory(path: str, where: str = "models.?") -> Callable[..., Any]:
    """The callable ``package.module:factory`` names, imported (the working directory first on ``sys.path``)."""
    module, attribute = split_path(path, where)
    with _working_directory_importable():
        try:
            loaded = importlib.import_module(module)
        except Exception as err:  # any error the user's module raises while importing
            raise UserModelError(f"{where}.module: importing {module!r} failed ({type(err).__name__}: {err}); fix "
                                 f"the module, or make it importable from the run's working directory "
                                 f"({os.getcwd()}) or the environment") from None
    factory = getattr(loaded, attribute, None)
    if factory is None:
        names = sorted(n for n in vars(loaded) if not n.startswith("_"))
        raise UserModelError(f"{where}.module: module {module!r} has no {attribute!r}; it defines {_listing(names)}")
    if not callable(factory):
        raise UserModelError(f"{where}.module: {path!r} is a {type(factory).__name__}, not callable; name a function "
                             "or class that returns your nn.Module")
    return factory


def make_network(arch: Mapping[str, Any]) -> nn.Module:
    """The user's network (unwrapped), built by its factory with its kwargs."""
    where = f"models.{arch['name']}"
    factory = import_factory(arch["module"], where)
    try:
        net = factory(**(arch.get("kwargs") or {}))
    except Exception as err:
        raise UserModelError(f"{where}: {arch['module']}(**kwargs) raised {type(err).__name__}: {err}; fix the "
                             f"factory or {where}.kwargs") from None
    if not isinstance(net, nn.Module):
        raise UserModelError(f"{where}: {arch['module']} returned a {type(net).__name__}, not a torch.nn.Module; the "
                             "factory must return the network")
    return net


def input_convention(settings: Mapping[str, Any] | None, channels: int, where: str) -> dict[str, Any]:
    """The complete ``input`` block (range, and mean and std as one value per channel)."""
    block = {**DEFAULT_INPUT, **dict(settings or {})}
    unknown = sorted(set(block) - set(DEFAULT_INPUT))
    if unknown:
        raise UserModelError(f"{where}.input.{unknown[0]}: unknown key; allowed: range, mean, std")
    low_high = block["range"]
    if (not isinstance(low_high, (list, tuple)) or len(low_high) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in low_high)
            or not low_high[0] < low_high[1]):
        raise UserModelError(f"{where}.input.range: {low_high!r} is not [low, high] with low < high (the pixel range "
                             "your model was trained on, e.g. [0, 1] or [0, 255])")
    out = {"range": [float(low_high[0]), float(low_high[1])]}
    for key, default in (("mean", 0.0), ("std", 1.0)):
        value = block[key]
        if value is None:
            value = [default] * channels
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [float(value)] * channels
        if (not isinstance(value, (list, tuple)) or len(value) not in (1, channels)
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            raise UserModelError(f"{where}.input.{key}: {value!r} must be one number or one per channel "
                                 f"({channels} channel{'s' if channels > 1 else ''})")
        value = [float(v) for v in value] * (channels if len(value) == 1 else 1)
        if key == "std" and not all(v > 0 for v in value):
            raise UserModelError(f"{where}.input.std: {value!r} must be positive")
        out[key] = value
    return out


class UserModel(nn.Module):
    """A user's network behind the workflow's input space: :meth:`forward` takes model-space images in [-1, 1],
    maps them to the user's ``input`` convention and returns the network's logits. ``arch`` (JSON) rebuilds it:
    ``{"name", "kind": "user", "module", "kwargs", "input", "layers", "in_channels", "image_size",
    "num_classes"}``; ``layers`` are module names of the user's network."""

    def __init__(self, net: nn.Module, arch: Mapping[str, Any]) -> None:
        super().__init__()
        self.net = net
        self.arch = copy.deepcopy(dict(arch))
        convention = self.arch["input"]
        low, high = convention["range"]
        shape = (1, -1, 1, 1)
        mean = torch.tensor(convention["mean"]).view(shape)
        std = torch.tensor(convention["std"]).view(shape)
        # x in [-1, 1] -> ((low + (x + 1) / 2 * (high - low)) - mean) / std = x * scale + shift
        self.register_buffer("scale", ((high - low) / 2 / std).float(), persistent=False)
        self.register_buffer("shift", ((low + (high - low) / 2 - mean) / std).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * self.scale + self.shift)

    def layer_choice(self) -> Any:
        """The recorded layers (:class:`advflow.models.layers.LayerChoice`), named as in the user's network."""
        from advflow.models.layers import LayerChoice

        names = list(self.arch["layers"])
        modules = dict(self.net.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise UserModelError(f"models.{self.arch['name']}: the network has no module {_listing(missing)}")
        reasons = self.arch.get("layer_reasons") or [f"module {n!r} of {self.arch['module']}" for n in names]
        return LayerChoice(names, [f"net.{n}" for n in names], [modules[n] for n in names], list(reasons))


def build_user_model(arch: Mapping[str, Any]) -> UserModel:
    """A :class:`UserModel` from its architecture dict (weights as the factory initialises them)."""
    return UserModel(make_network(arch), arch)


# --------------------------------------------------------------------------- checkpoints


def read_state_dict(path: str | Path, where: str) -> dict[str, torch.Tensor]:
    """The state dict in a user's checkpoint (a state dict, or a dict holding one under ``state_dict``,
    ``model_state_dict`` or ``model``), read with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise UserModelError(f"{where}.checkpoint: no file {str(path.resolve())!r}; give the path of your saved "
                             "state dict (torch.save(model.state_dict(), path)), or null to train the model")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        said = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        what = f" ({said.group(1)})" if said else ""
        raise UserModelError(f"{where}.checkpoint: {path} would execute code when loaded: it pickles objects other "
                             f"than tensors{what}, which torch.load(weights_only=True) refuses; it is not loaded. Save "
                             "only the weights: torch.save(model.state_dict(), path)") from None
    except Exception as err:  # truncated, not a torch file, ...
        raise UserModelError(f"{where}.checkpoint: {path} cannot be read ({type(err).__name__}: "
                             f"{(str(err).strip().splitlines() or [''])[0][:200]}); the file may be truncated or not "
                             "a torch.save file: save it again") from None
    state = payload
    if isinstance(payload, Mapping) and not all(isinstance(v, torch.Tensor) for v in payload.values()):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(payload.get(key), Mapping):
                state = payload[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserModelError(f"{where}.checkpoint: {path} holds no state dict (a mapping of tensors, or a dict with "
                             "one under 'state_dict'); save it with torch.save(model.state_dict(), path)")
    return dict(state)


def load_weights(net: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Load ``state`` into the user's network; keys that do not match are listed (missing and unexpected)."""
    own = net.state_dict()
    # BatchNorm's step counter is absent from checkpoints older than PyTorch 0.4.1, which PyTorch itself loads
    missing = [k for k in own if k not in state and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_listing(unexpected)}")
        raise UserModelError(f"{where}.checkpoint: its keys do not match the network the factory builds: "
                             f"{'; '.join(parts)}. Give the checkpoint of this architecture (and the kwargs it was "
                             "built with)")
    wrong = [f"{k} {tuple(state[k].shape)} where the network has {tuple(v.shape)}" for k, v in own.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        shown = "; ".join(wrong[:4]) + (f"; ... ({len(wrong)} in all)" if len(wrong) > 4 else "")
        raise UserModelError(f"{where}.checkpoint: tensors of another shape: {shown}. Give the checkpoint of this "
                             "architecture (and the kwargs it was built with)")
    net.load_state_dict({**{k: v for k, v in own.items() if k not in state}, **state})


# --------------------------------------------------------------------------- checking a config entry


def user_arch(name: str, settings: Mapping[str, Any], shape: tuple[int, int, int], num_classes: int
              ) -> dict[str, Any]:
    """The architecture dict of user model ``name`` for images of ``shape`` (C, H, W), its layers not yet chosen."""
    where = f"models.{name}"
    channels, height, width = shape
    split_path(settings.get("module"), where)
    kwargs = settings.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise UserModelError(f"{where}.kwargs: must be a mapping of keyword arguments for the factory; got "
                             f"{type(kwargs).__name__}")
    layers = settings.get("layers")
    if layers is not None and (isinstance(layers, str) or not isinstance(layers, (list, tuple)) or not layers
                               or not all(isinstance(n, str) and n for n in layers)):
        raise UserModelError(f"{where}.layers: must be null (the default rule) or a non-empty list of module names; "
                             f"got {layers!r}")
    if layers is not None and len(set(layers)) != len(layers):
        raise UserModelError(f"{where}.layers: names repeat: {layers!r}")
    return {"name": name, "kind": "user", "module": settings["module"], "kwargs": dict(kwargs),
            "input": input_convention(settings.get("input"), channels, where),
            "layers": None if layers is None else list(layers), "in_channels": int(channels),
            "image_size": [int(height), int(width)], "num_classes": int(num_classes)}


def check_user_model(name: str, settings: Mapping[str, Any], shape: tuple[int, int, int], num_classes: int, *,
                     weights: bool = True) -> tuple[UserModel, dict[str, Any]]:
    """Build user model ``name`` as a job would and check it (raises :class:`UserModelError`): the module imports,
    the factory returns an ``nn.Module``, the checkpoint (when ``weights``) loads with matching keys, a blank batch
    of the dataset's ``shape`` gives logits ``(2, num_classes)``, the layers exist and output maps. Returns the model
    (weights loaded) and its architecture with the layers chosen."""
    from advflow.models.layers import LayerChoiceWarning, capture_maps, default_layers

    where = f"models.{name}"
    arch = user_arch(name, settings, shape, num_classes)
    net = make_network(arch)
    if weights and settings.get("checkpoint"):
        load_weights(net, read_state_dict(settings["checkpoint"], where), where)
    model = UserModel(net, {**arch, "layers": []}).eval()
    blank = torch.zeros(2, *shape)
    try:
        with torch.no_grad():
            logits = model(blank)
    except Exception as err:
        raise UserModelError(f"{where}: the model rejects a batch of the dataset's images, shape {tuple(blank.shape)} "
                             f"(N, C, H, W) ({type(err).__name__}: {(str(err).splitlines() or [''])[0][:300]}); "
                             "make the network accept images of that shape, or use a dataset of the shape it "
                             "expects") from None
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (2, num_classes):
        found = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise UserModelError(f"{where}: the model returns {found} for a batch of 2 images; expected logits (2, "
                             f"{num_classes}), one per class of the dataset")
    modules = dict(net.named_modules())
    if arch["layers"] is None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LayerChoiceWarning)
            try:
                choice = default_layers(net, blank[:1] * model.scale + model.shift)
            except ValueError as err:
                raise UserModelError(f"{where}: {err}; set {where}.layers") from None
        arch["layers"], arch["layer_reasons"] = list(choice.module_names), list(choice.reasons)
        arch["layer_warnings"] = [str(w.message) for w in caught if issubclass(w.category, LayerChoiceWarning)]
    else:
        unknown = [n for n in arch["layers"] if n not in modules]
        if unknown:
            raise UserModelError(f"{where}.layers: no module named {_listing(unknown)} in the network; its modules "
                                 f"are {_listing([n for n in modules if n])}")
    model.arch.update({k: arch[k] for k in ("layers", "layer_reasons", "layer_warnings") if k in arch})
    arch = model.arch
    try:
        capture_maps(model, blank, model.layer_choice().pairs())
    except ValueError as err:
        raise UserModelError(f"{where}.layers: {err}; name modules whose outputs are maps (N, n, H, W)") from None
    return model, arch


def describe(arch: Mapping[str, Any]) -> str:
    """One line: the model, its factory, its layers."""
    return (f"{arch['name']}: {arch['module']}({json.dumps(arch.get('kwargs') or {}, sort_keys=True)}); layers "
            f"{', '.join(arch.get('layers') or [])}")
