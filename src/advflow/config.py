"""Config checks with messages a user can act on, and the per-model settings the rules depend on.

The JSON schema (``schemas/config.schema.yaml``) is the single statement of what is allowed;
this module turns its violations into one message per problem that names the key, what was
found, and what is allowed. Imports nothing heavy (the Snakefile calls it while parsing).
"""

from __future__ import annotations

import copy
import functools
import math
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from advflow.attacks import registry as attack_registry
from advflow.defenses import registry as detector_registry
from advflow.workflow.catalog import DATASETS, MODELS, ROLES, is_user_model, roles
from advflow.workflow.errors import ConfigError  # noqa: F401 (advflow.config.ConfigError is public)

_TYPE_NAMES = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
               "object": "a mapping", "array": "a list", "null": "null"}

#: Keys a model's own section can set that also have a run-wide default under ``training``.
TRAIN_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "lr_schedule", "train_size", "init", "channels_last", "log_every",
              "patience")
#: Defaults used when neither ``training`` nor the model's section sets a key.
TRAIN_DEFAULTS = {"epochs": 1, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.0, "lr_schedule": "onecycle",
                  "train_size": None,
                  "init": "lsuv", "channels_last": True, "log_every": 20, "val_size": 1000, "patience": None}
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "distilled": {"temperature": 40.0, "teacher_epochs": None},
    "compressed": {"target_ratio": 890411 / 1071542, "step": 0.05, "min_keep": 0.5, "max_rounds": 20,
                   "finetune_epochs": 1, "finetune_size": None},
    "ensemble": {"members": ["good_init", "deep_conv", "vgg_like"]},
}


def canonical(value: Any) -> Any:
    """``value`` with every mapping's keys sorted. Snakemake compares ``params`` as written, so a rule's
    settings are passed in this form: reordering keys in a YAML file then reruns nothing."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def load_schema(path: str | Path) -> dict[str, Any]:
    """The config's JSON schema with the registries' names filled in: each attack's ``attacks.<name>`` block (of
    the ``$defs`` shape its entry names) and the names ``attack_sets`` may list, the defense sweep's attack names
    and blocks, and the detector names. The file itself lists none of them, so one registry entry adds a name."""
    with open(path) as fh:
        schema = yaml.safe_load(fh)
    schema["$defs"]["attack_list"]["items"] = {"enum": list(attack_registry.names())}
    block = schema["properties"]["attacks"]
    block["properties"].update({n: {"$ref": f"#/$defs/{attack_registry.get(n).settings}"}
                                for n in attack_registry.configurable()})
    block["additionalProperties"] = False
    defense = schema["properties"]["defense"]["properties"]
    defense["attacks"]["items"] = {"enum": list(attack_registry.sweep_attacks())}
    defense.update({n: {"type": "object"} for n in attack_registry.sweep_attacks()})
    for key in ("detectors", "compared"):
        defense[key]["items"] = {"enum": list(detector_registry.names())}
    return schema


#: The config's JSON schema: the one home of every run-wide default (its ``default:`` entries).
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


@functools.lru_cache(maxsize=None)
def _schema_at(path: str) -> dict[str, Any]:
    return load_schema(path)


def _fill_defaults(validator: Any, properties: Mapping[str, Any], instance: Any, schema: Any) -> Any:
    """JSON Schema's ``properties``, which first sets each left-out property that has a ``default`` (as Snakemake's
    ``validate`` does; a copy of it, and a section set to null counts as left out)."""
    if isinstance(instance, dict):
        for key, subschema in properties.items():
            if "default" in subschema and instance.get(key) is None:
                instance[key] = copy.deepcopy(subschema["default"])
    yield from jsonschema.Draft202012Validator.VALIDATORS["properties"](validator, properties, instance, schema)


_DefaultFiller = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"properties": _fill_defaults})


def with_defaults(config: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``config`` with every default of the schema (:data:`SCHEMA_PATH`, or ``schema`` as
    :func:`load_schema` returns it) filled in where the config leaves the key out, nested ones included: the
    config the workflow's rules read, since Snakemake's ``validate`` fills the same defaults into it. For code
    that may get a config nobody validated (the report, tests), so that no default is written twice. Nothing is
    checked here (:func:`check_config` does).

    >>> with_defaults({"seed": 0})["aggregate"]
    {'grid_step': 0.05}
    """
    filled = copy.deepcopy(dict(config))
    for _ in _DefaultFiller(schema if schema is not None else _schema_at(str(SCHEMA_PATH))).iter_errors(filled):
        pass
    return filled


def _key(path: Any) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    key = _key(error.absolute_path)
    found = error.instance
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(k for k in found if k not in allowed)
        where = f"under '{key}'" if error.absolute_path else "at the top level"
        return (f"unknown config key {', '.join(repr(u) for u in unknown)} {where}; "
                f"allowed: {', '.join(allowed)}")
    if error.validator == "enum":
        return f"config key '{key}' is {found!r}; allowed: {', '.join(repr(v) for v in error.validator_value)}"
    if error.validator == "type":
        expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        wanted = " or ".join(_TYPE_NAMES.get(t, t) for t in expected)
        return f"config key '{key}' must be {wanted}; got {type(found).__name__} {found!r}"
    if error.validator in ("maximum", "minimum", "exclusiveMaximum", "exclusiveMinimum"):
        relation = {"maximum": "at most", "minimum": "at least", "exclusiveMaximum": "below",
                    "exclusiveMinimum": "above"}[error.validator]
        meaning = error.schema.get("description")
        return (f"config key '{key}' is {found!r}; it must be {relation} {error.validator_value}"
                + (f" ({meaning})" if meaning else ""))
    if error.validator == "not":
        meaning = error.schema.get("description")
        return f"config key '{key}' is {found!r}, which is not allowed" + (f" ({meaning})" if meaning else "")
    if error.validator == "required":
        return f"config is missing the key {error.message.split(' ')[0]} {'under ' + repr(key) if error.absolute_path else 'at the top level'}"
    return f"config key '{key}': {error.message}"


def _non_finite(value: Any, path: tuple[Any, ...] = ()) -> list[str]:
    """A message for every NaN or infinity anywhere in ``value`` (JSON Schema's bounds let NaN through)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [f"config key '{_key(path)}' is {value}; it must be a finite number"]
    if isinstance(value, dict):
        return [m for k, v in value.items() for m in _non_finite(v, (*path, k))]
    if isinstance(value, list):
        return [m for i, v in enumerate(value) for m in _non_finite(v, (*path, i))]
    return []


def config_errors(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """One readable message per NaN or infinity and per schema violation, then the cross-key rules the schema
    cannot state."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    named = name_errors(config)
    if named:  # a built-in name with a module, a name the workflow cannot use: said plainly, not as the schema's
        errors = [e for e in errors if list(e.absolute_path)[:1] not in (["models"], ["datasets"], ["attack_sets"])]
    messages = _non_finite(config) + named + [_describe(e) for e in errors]
    if messages:
        return messages
    from advflow.workflow.catalog import trajectories_wanted

    filled = with_defaults(config, schema)
    wanted, inputs = filled["trajectories"]["n"], int(filled["inputs"]["n"])
    attack_sets = {t: list(a) for t, a in (config.get("attack_sets") or {}).items() if a}
    if trajectories_wanted(attack_sets, wanted) and wanted > inputs:
        messages.append(f"trajectories.n is {wanted} but the trajectories' seeds are drawn from "
                        f"the {inputs} attack seeds (inputs.n); lower trajectories.n to at most "
                        f"{inputs}")
    models = config["models"]
    if "compressed" in models and "good_init" not in models:
        messages.append("models.compressed is Network Trimming of good_init: add 'good_init' under 'models'")
    messages += role_errors(config)
    messages += dataset_errors(config)
    for target in config.get("attack_sets") or {}:
        if target not in models:
            messages.append(f"attack_sets.{target} names a model that is not under 'models'; add it there")
    for group in config.get("transfer_groups") or []:
        for name in group:
            if name not in models:
                messages.append(f"transfer_groups names {name!r}, which is not under 'models'; add it there")
    members = model_settings(config, "ensemble")["members"] if "ensemble" in models else []
    missing = [m for m in members if m not in models]
    if missing:
        messages.append(f"models.ensemble.members names {', '.join(missing)}, which are not under 'models'; "
                        f"add them or remove them from the members")
    return messages


_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def name_errors(config: dict[str, Any]) -> list[str]:
    """The names under ``models``, ``datasets`` and ``attack_sets`` the workflow cannot use: a built-in model given a
    ``module`` (or a built-in dataset a ``format``), a name that is not letters, digits and underscores."""
    messages = []
    for section, builtins, key in (("models", MODELS, "module"), ("datasets", DATASETS, "format")):
        block = config.get(section)
        if not isinstance(block, dict):
            continue
        for name, entry in block.items():
            if name in builtins and isinstance(entry, dict) and key in entry:
                messages.append(f"{section}.{name}: {name!r} is advflow's own {section[:-1]}; give yours another name "
                                f"(e.g. my_{name})")
            elif not isinstance(name, str) or not _NAME.match(name):
                messages.append(f"{section}.{name}: a {section[:-1]}'s name is letters, digits and underscores, "
                                "starting with a letter (it becomes part of file names)")
            elif name not in builtins and section == "models" and not is_user_model(entry):
                messages.append(f"models.{name}: unknown model; advflow's are {', '.join(MODELS)}, and a model of "
                                f"your own names its 'module' ('package.module:factory'; README, \"Your own model "
                                "and data\")")
            elif name not in builtins and section == "datasets" and not (isinstance(entry, dict) and "format" in entry):
                messages.append(f"datasets.{name}: unknown dataset; advflow's are {', '.join(DATASETS)}, and "
                                "a dataset of your own names its 'format' (npz or folder) and 'path'")
    return messages


def dataset_errors(config: dict[str, Any]) -> list[str]:
    """The run's dataset: advflow's or one of the user's under ``datasets`` (its files checked cheaply:
    :func:`advflow.workflow.catalog.custom_dataset_problems`)."""
    from advflow.workflow.catalog import custom_dataset_problems, is_custom

    name, block = config.get("dataset"), config.get("datasets") or {}
    if name in DATASETS:
        return []
    settings = block.get(name)
    if not is_custom(settings):
        return [f"dataset is {name!r}, which is neither advflow's ({', '.join(DATASETS)}) nor one of yours "
                f"under 'datasets' (datasets.{name}: {{format: npz or folder, path: ...}}; README, \"Your own model "
                "and data\")"]
    return custom_dataset_problems(name, settings)


def role_errors(config: dict[str, Any]) -> list[str]:
    """What the ``study`` roles ask that cannot be done: a role naming a model that is not under ``models``, an
    ensemble role that is not advflow's ensemble, Network Trimming of a model that is not good_init, the distilled
    role's adaptive JSMA without a temperature."""
    study = config.get("study") or {}
    models = config.get("models") or {}
    messages = []
    for role, model in study.items():
        if role in ROLES and model is not None and model not in models:
            messages.append(f"study.{role} names {model!r}, which is not under 'models'; add it there, or set "
                            f"study.{role}: null (its questions then say they cannot be checked)")
    chosen = roles(config)
    if chosen["ensemble"] not in (None, "ensemble"):
        messages.append(f"study.ensemble is {chosen['ensemble']!r}; the ensemble role is advflow's logit average of "
                        "models.ensemble.members (which may be models of your own): set study.ensemble: ensemble "
                        "or null")
    if chosen["base"] is not None and chosen["base"] == chosen["compressed"]:
        messages.append(f"study.base and study.compressed are both {chosen['base']!r}; Q3 compares a model with its "
                        "compressed version: name another model for one of them, or set study.compressed: null")
    if chosen["compressed"] == "compressed" and chosen["base"] not in (None, "good_init"):
        messages.append(f"study.compressed is advflow's 'compressed' (Network Trimming of good_init), but study.base "
                        f"is {chosen['base']!r}; Network Trimming applies only to advflow's ConvNets, so it cannot "
                        f"compress {chosen['base']!r}: give a pruned checkpoint of it as a model of your own for the "
                        "compressed role, or set study.compressed: null")
    distilled = chosen["distilled"]
    attacks = (config.get("attack_sets") or {}).get(distilled) or [] if distilled else []
    if distilled and is_user_model(models.get(distilled)) and "jsma_adaptive" in attacks \
            and (models[distilled] or {}).get("temperature") is None:
        messages.append(f"models.{distilled}: the adaptive JSMA (attack_sets.{distilled}) attacks the softmax at "
                        f"the temperature {distilled!r} was distilled at: set models.{distilled}.temperature")
    return messages


def user_model_errors(config: dict[str, Any], prepared: str | Path | None = None) -> list[str]:
    """Build and check every model of the user's as a job will (:func:`advflow.models.user.check_user_model`): the
    import, the factory, the checkpoint's keys, one forward pass on a blank batch of the dataset's image shape, the
    layers. One message per model that fails; [] when there is none (then nothing heavy is imported)."""
    users = {n: s for n, s in (config.get("models") or {}).items() if is_user_model(s)}
    if not users:
        return []
    from advflow.workflow.catalog import image_shape

    dataset = config.get("dataset")
    shape = image_shape(dataset, (config.get("datasets") or {}).get(dataset), prepared)
    if shape is None:
        return [f"dataset {dataset!r}: its image shape cannot be read, so models {', '.join(users)} cannot be "
                "checked; fix the dataset first"]
    from advflow.defenses.dropout import dropout_layers
    from advflow.defenses.settings import uses_dropout_vote
    from advflow.models.user import UserModelError, check_user_model

    defense = _defense(config)
    vote = uses_dropout_vote(defense)
    messages = []
    for name in users:
        try:
            model, _ = check_user_model(name, model_settings(config, name), shape[:3], shape[3])
        except UserModelError as error:
            messages.append(str(error))
            continue
        if vote and defense["classifier"] == name and defense["dropout_vote"]["rate"] is None \
                and not dropout_layers(model):
            messages.append(f"defense.dropout_vote.rate: the dropout vote runs the classifier {name!r} with its own "
                            "dropout layers, and it has none; set a rate (e.g. 0.25: dropout after each hidden "
                            "layer), or leave dropout_vote out of defense.compared")
    return messages


def check_user_models(config: dict[str, Any], prepared: str | Path | None = None) -> None:
    """Raise :class:`ConfigError` listing :func:`user_model_errors`."""
    _raise(user_model_errors(config, prepared))


def check_config(config: dict[str, Any], schema_path: str | Path) -> None:
    """Raise :class:`ConfigError` listing every problem of ``config``."""
    _raise(config_errors(config, load_schema(schema_path)))


def _raise(messages: list[str]) -> None:
    """One :class:`ConfigError` listing ``messages``, if there are any."""
    if messages:
        lines = "\n".join(f"  - {m}" for m in messages)
        raise ConfigError(f"invalid config ({len(messages)} problem{'s' if len(messages) > 1 else ''}):\n{lines}\n"
                          "See README.md, 'Config keys', for every key and its meaning.")


def _inputs_n(config: dict[str, Any]) -> int:
    return int(with_defaults(config)["inputs"]["n"])


def size_errors(config: dict[str, Any], sizes: dict[str, Any] | None) -> list[str]:
    """The counts of ``config`` its dataset cannot supply (``sizes``: :func:`advflow.workflow.catalog.split_sizes`): the
    attack seeds, the training images held out and used, the defense's test images, the grid's images per class.
    Only what can be known before training is checked (the seeds must also be classified correctly)."""
    if not sizes:
        return []
    where, train, test = sizes["where"], sizes["train"], sizes["test"]
    messages = []
    if config.get("attack_sets") and _inputs_n(config) > test:
        messages.append(f"inputs.n is {_inputs_n(config)} but the test split has {test} images ({where}); lower "
                        f"inputs.n to at most {test}")
    for model in config.get("models") or {}:
        if model == "ensemble":
            continue
        settings = model_settings(config, model)
        val = settings["val_size"]
        if val >= train:
            messages.append(f"training.val_size (for {model}) is {val} but the training split has {train} images "
                            f"({where}); lower it below {train}")
            continue
        for key in ("train_size", "finetune_size"):
            used = settings.get(key)
            if used is not None and used > train - val:
                messages.append(f"{key} (for {model}) is {used} but {train} training images less val_size {val} leave "
                                f"{train - val} ({where}); lower it to at most {train - val}")
    defense = _defense(config)
    if defense:
        need = defense["n"] + defense["validation"] + defense["clean"]
        if need > test:
            messages.append(f"defense.n + defense.validation + defense.clean = {need} disjoint test images, but the test "
                            f"split has {test} ({where}); lower them")
    perturbations = _perturbations(config)
    per_class = sizes.get("test_per_class")
    if perturbations and per_class:
        m = perturbations["grid"]["m"]
        if m > min(per_class):
            messages.append(f"perturbations.grid.m is {m} but a class has only {min(per_class)} test images ({where}); "
                            f"lower it to at most {min(per_class)}")
    return messages


def check_sizes(config: dict[str, Any], prepared: str | Path | None = None) -> None:
    """Raise :class:`ConfigError` listing :func:`size_errors` for the config's dataset (its prepared file, when
    there is one, else what is known of it)."""
    from advflow.workflow.catalog import split_sizes

    dataset = config["dataset"]
    sizes = split_sizes(dataset, (config.get("datasets") or {}).get(dataset), prepared)
    _raise(size_errors(config, sizes))


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A config file as a mapping, or a :class:`ConfigError` giving its path and, for a YAML error, the line and
    column: an empty file and a file that is not a mapping of keys are errors too."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror or error})") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a text file (byte {error.start} is not UTF-8); a config is a YAML file "
                          f"(see README.md, 'Config keys')") from error
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(p) for p in (getattr(error, "context", None), getattr(error, "problem", None)) if p)
        raise ConfigError(f"{path}{where}: not valid YAML ({problem or error}); fix the file there") from error
    if loaded is None:
        raise ConfigError(f"{path}: empty; a config is a mapping of keys (see README.md, 'Config keys')")
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a {type(loaded).__name__} at the top level; a config is a mapping of keys "
                          f"(see README.md, 'Config keys')")
    return loaded


def model_settings(config: dict[str, Any], model: str) -> dict[str, Any]:
    """The complete settings of one model: defaults < ``training`` < ``models.<model>``.

    This dict is a rule's ``params``, so changing any value reruns that model (and what uses it)
    and nothing else.
    """
    own = (config.get("models") or {}).get(model)
    if model not in MODELS and not is_user_model(own):
        raise ConfigError(f"unknown model {model!r}; allowed: {', '.join(MODELS)} or a model of your own under "
                          "'models' (with its 'module')")
    settings = {**TRAIN_DEFAULTS, **copy.deepcopy(MODEL_DEFAULTS.get(model, {}))}
    settings.update(config.get("training") or {})
    settings.update(copy.deepcopy(own or {}))
    if is_user_model(own):  # the user's keys complete, so that a job reads them, never a default of its own
        settings = {"kwargs": {}, "checkpoint": None, "input": None, "layers": None, **settings}
        if settings.get("init", "lsuv") == "lsuv":
            settings["init"] = "own"  # LSUV is advflow's ConvNets' initialisation; a user's model keeps its own
        if "channels_last" not in own:
            # channels-last training of a network with BatchNorm crashes PyTorch 2.14 on a multi-threaded CPU
            # (segmentation fault in the optimizer step): a user's model trains channels-first unless it asks
            settings["channels_last"] = False
    if model == "distilled" and settings["teacher_epochs"] is None:
        settings["teacher_epochs"] = settings["epochs"]
    if model == "ensemble":
        return {"members": list(settings["members"])}
    return settings


def teacher_settings(config: dict[str, Any]) -> dict[str, Any]:
    """Settings of the distillation teacher: the distilled model's, with ``teacher_epochs`` as its
    epochs (so changing only the student's epochs does not retrain the teacher)."""
    settings = model_settings(config, "distilled")
    settings["epochs"] = settings.pop("teacher_epochs")
    return settings


def attack_settings(config: dict[str, Any], attack: str) -> dict[str, Any]:
    """The complete settings of one attack (its registry defaults < ``attacks.<attack>``): a rule's ``params``.

    An attack that runs with another's settings takes them (``jsma_control``: the adaptive JSMA's θ and γ), then
    its fixed settings (T = 1); one that attacks a distilled model's softmax takes that model's temperature.
    """
    try:
        spec = attack_registry.get(attack)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if spec.settings_from is not None:
        settings = attack_settings(config, spec.settings_from)
        settings.pop("temperature", None)
    else:
        settings = {**spec.defaults, **((config.get("attacks") or {}).get(attack) or {})}
    settings.update(spec.fixed)
    if spec.temperature_from is not None:  # the model of that role (Q4's distilled model)
        model = roles(config).get(spec.temperature_from) or spec.temperature_from
        temperature = model_settings(config, model).get("temperature") if model in (config.get("models") or {}) \
            else MODEL_DEFAULTS[spec.temperature_from]["temperature"]
        if temperature is None:
            raise ConfigError(f"attack {attack} attacks the softmax at the temperature the {spec.temperature_from} "
                              f"role's model {model!r} was distilled at: set models.{model}.temperature")
        settings["temperature"] = float(temperature)
    return settings


#: What the paper states (Ji & Wang, Section IV-A; docs/method.md, "Attacks", "Models"): a run that departs from
#: any of these says so in its report (:func:`paper_departures`).
PAPER_SETTINGS: dict[str, Any] = {
    "dataset": "cifar10",
    "inputs.n": 200,
    "models.distilled.temperature": 40.0,
    "models.compressed.target_ratio": 890411 / 1071542,
    "attacks.fgsm.epsilon": 0.025,
    "attacks.igsm.epsilon": 0.025,
    "attacks.igsm.alpha": 0.002,
    "attacks.jsma.theta": 0.1,
    "attacks.jsma.gamma": 0.1,
    "attacks.jsma_adaptive.theta": 0.4,
    "attacks.jsma_adaptive.gamma": 0.2,
    "attacks.deepfool.overshoot": 0.02,
    "attacks.cw.kappa": 0.0,
    "attacks.cw.c": 0.25,
}


def attacks_in_use(config: dict[str, Any]) -> list[str]:
    """Every attack some target of ``attack_sets`` lists, in the registry's order."""
    listed = {a for attacks in (config.get("attack_sets") or {}).values() for a in (attacks or [])}
    return [a for a in attack_registry.names() if a in listed]


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """Every setting a run of ``config`` uses, with the defaults of whatever it leaves out: the seed,
    device and dataset; each listed model's complete training settings (and the distillation teacher's);
    each listed attack's complete settings; the sets, transfer groups and sizes; the MI, aggregate and
    report settings. Written by the workflow to ``results/{dataset}/config.resolved.yaml``; ``departs_from_paper``
    lists :func:`paper_departures`.

    >>> resolve({"seed": 0, "dataset": "synthetic", "models": {"good_init": {}},
    ...          "attack_sets": {"good_init": ["fgsm"]}})["attacks"]
    {'fgsm': {'epsilon': 0.025}}
    """
    models = list(config.get("models") or {})
    resolved_models = {m: model_settings(config, m) for m in models}
    if "distilled" in models:
        resolved_models["distilled_teacher"] = teacher_settings(config)
    filled = with_defaults(config)
    sections = {key: filled[key] for key in ("inputs", "trajectories", "features", "mi", "aggregate", "report")}
    return canonical({
        "seed": config.get("seed"),
        "device": filled["device"],
        "dataset": config.get("dataset"),
        "datasets": {config.get("dataset"): filled["datasets"].get(config.get("dataset")) or {}},
        "models": resolved_models,
        "attacks": {a: attack_settings(config, a) for a in attacks_in_use(config)},
        "attack_sets": {t: list(a) for t, a in (config.get("attack_sets") or {}).items() if a},
        "transfer_groups": [list(g) for g in config.get("transfer_groups") or []],
        **sections,
        "defense": _defense(config),
        "perturbations": _perturbations(config),
        "departs_from_paper": paper_departures(config),
    })


def _defense(config: dict[str, Any]) -> dict[str, Any] | None:
    from advflow.defenses.settings import defense_settings

    return defense_settings(config)


def _perturbations(config: dict[str, Any]) -> dict[str, Any] | None:
    from advflow.perturbations.settings import perturbation_settings

    return perturbation_settings(config)


def paper_departures(config: dict[str, Any]) -> list[str]:
    """``"key = value (paper: value)"`` for each of :data:`PAPER_SETTINGS` this run sets otherwise, among
    the models and attacks it uses."""
    models = set(config.get("models") or {})
    attacks = attacks_in_use(config)
    values: dict[str, Any] = {"dataset": config.get("dataset"), "inputs.n": _inputs_n(config)}
    for model in ("distilled", "compressed"):
        if model in models:
            for key, value in model_settings(config, model).items():
                values[f"models.{model}.{key}"] = value
    for attack in attacks:
        if attack_registry.get(attack).settings is not None:  # an attack with settings of its own
            for key, value in attack_settings(config, attack).items():
                values[f"attacks.{attack}.{key}"] = value
    departures = []
    for key, paper in PAPER_SETTINGS.items():
        if key not in values:
            continue
        value = values[key]
        if isinstance(paper, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
            if abs(value - paper) > 1e-3 * abs(paper):  # 0.831 states the paper's 890,411 / 1,071,542
                departures.append(f"{key} = {value:g} (paper: {paper:g})")
        elif value != paper:
            departures.append(f"{key} = {value} (paper: {paper})")
    return departures


def write_resolved(path: str | Path, resolved: dict[str, Any]) -> Path | None:
    """Write ``resolved`` (:func:`resolve`) as YAML to ``path``. A different file already there is kept
    as ``<name>.<its modification time>.yaml`` (never overwritten); returns that path, or None."""
    path = Path(path)
    text = ("# Every setting of this run, defaults included (advflow.config.resolve); written when the run "
            "starts.\n" + yaml.safe_dump(resolved, sort_keys=True, allow_unicode=True))
    kept = None
    if path.exists():
        if path.read_text() == text:
            return None
        import datetime

        stamp = datetime.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y%m%dT%H%M%S")
        kept = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
        path.rename(kept)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return kept


def main(argv: list[str] | None = None) -> int:
    """``python -m advflow.config FILE...``: check config files as the workflow does (YAML with its line, the
    schema, the cross-key rules, the counts against ``data/{dataset}.h5`` in this folder or the dataset's known
    sizes) and print ``FILE: ok`` or every problem. Several files are merged in order, like Snakemake's
    ``--configfile A B``. Snakemake reads ``--configfile`` files itself before the workflow starts, and for a
    file that does not parse says only "Config file is not valid JSON or YAML": this says where."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m advflow.config",
        description="Check config files as the workflow does, without running anything: YAML (with the line and "
                    "column of an error), the schema, the cross-key rules, and the counts against "
                    "data/{dataset}.h5 in this folder or the dataset's known sizes. Several files are merged in "
                    "order, as snakemake --configfile A B merges them. Prints 'FILE: ok' or every problem.")
    parser.add_argument("files", nargs="+", metavar="CONFIG.yaml", help="a config file (config.yaml, configs/*.yaml)")
    files = parser.parse_args(sys.argv[1:] if argv is None else argv).files
    schema = SCHEMA_PATH
    config: dict[str, Any] = {}
    try:
        for name in files:
            _merge(config, load_config_file(name))
        check_config(config, schema)
        check_sizes(config, Path("data") / f"{config['dataset']}.h5")
        check_user_models(config, Path("data") / f"{config['dataset']}.h5")
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"{', '.join(files)}: ok")
    return 0


def _merge(config: dict[str, Any], update: dict[str, Any]) -> None:
    """Snakemake's update_config: nested mappings merged, other values replaced."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            _merge(config[key], value)
        else:
            config[key] = value


if __name__ == "__main__":
    raise SystemExit(main())
