"""Which modules of a model are its conv layers, the paper's way (docs/method.md, "Information flow"), for any
``torch.nn.Module``: what :func:`default_layers` returns, and what the API measures when not given ``layers=``.

The rule:

- **A conv layer** is a convolution (``nn.Conv2d``) together with the normalization (BatchNorm, GroupNorm,
  LayerNorm, InstanceNorm, ...), activation (ReLU, LeakyReLU, GELU, SiLU, ELU, Tanh, Sigmoid, ...) and
  (non-adaptive) pooling modules that directly follow it, each taking the previous one's output and nothing else
  taking it. The layer's maps are the output of the **last** module of that run.
- **A residual block** (a module that adds a skip to what its convolutions compute: ``out + identity`` or
  ``out += self.downsample(x)`` in its ``forward``, with every convolution of the module between its input and
  that addition) is **one** layer: its output (after the addition and whatever activation the block applies), then
  any normalization, activation or pooling module that directly follows it. Its inner convolutions, and the
  1x1 projection of its shortcut, are not layers. Where blocks nest, the outermost one is the layer.
- A 1x1 convolution that branches off beside another path and whose output goes (through its normalization) into
  an addition outside a block is a projection shortcut, never a layer.
- The layers are in the order the forward pass runs them; the last one is the deepest, the OIP's target.
- A global (adaptive) pooling belongs to the classifier head, as for the paper's models.
- An advflow :class:`~advflow.models.architectures.ConvNet` (``blocks`` whose items have ``output_maps``) keeps its
  own names ``conv1``, ``conv2``, ... for its blocks (conv, ReLU, pool), as the workflow stores them.

How it is found: one forward pass of one example input (the model in eval mode, its mode restored) with hooks on
every module, under autograd. The autograd graph sees every operation, also those a ``forward`` does without a
module (``F.relu``, ``+``, ``torch.cat``), and its sequence numbers tell which module call ran each one, so the
rule knows which tensor flows from which module into which, and which module adds a skip.

When it cannot tell, it says so with a :class:`LayerChoiceWarning` naming the modules (``layers=`` overrides the
choice): a layer whose output goes through an activation, normalization or pooling its model applies as a function
(the maps are before it), into an addition outside a block module, into another operation done in a ``forward``
or into an unknown custom module; a module that runs more than once in a forward pass (its maps are ambiguous: an
earlier module of its run is measured, or none); a model whose forward pass cannot be traced (then every
``nn.Conv2d`` is measured, as before the rule).

This module imports only torch and the standard library, so the workflow can use the same rule.
"""

from __future__ import annotations

import bisect
import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["LayerChoice", "LayerChoiceWarning", "default_layers"]

_OVERRIDE = "pass layers= the names (as in model.named_modules()) of the modules to measure"


class LayerChoiceWarning(UserWarning):
    """The default choice of conv layers could not tell which module's output is a layer's maps."""


@dataclass(frozen=True)
class LayerChoice:
    """The conv layers of a model: ``names`` (the layer names the API reports: the module names, or ``conv1``,
    ``conv2``, ... for an advflow ConvNet), ``module_names`` (as in ``model.named_modules()``), ``modules``, one
    ``reasons`` line per layer (why that module), and the ``warnings`` the choice gave. The last layer is the
    target of the OIP."""

    names: list[str]
    module_names: list[str]
    modules: list[nn.Module] = field(repr=False)
    reasons: list[str]
    warnings: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        """The last (deepest) layer: the target maps of the OIP."""
        return self.names[-1]

    def pairs(self) -> list[tuple[str, nn.Module]]:
        return list(zip(self.names, self.modules))

    def describe(self) -> str:
        """The choice as text: one line per layer (the last is the target), then the warnings."""
        lines = [f"{len(self.names)} conv layer(s), in forward order:"]
        for k, (name, reason) in enumerate(zip(self.names, self.reasons), start=1):
            lines.append(f"  {k}. {name}: {reason}" + ("  [target]" if k == len(self.names) else ""))
        lines += [f"  warning: {text}" for text in self.warnings]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# Kinds of modules and of operations

_NORMS = tuple(getattr(nn, n) for n in ("GroupNorm", "LayerNorm", "LocalResponseNorm", "RMSNorm") if hasattr(nn, n)) \
    + (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
_ACTIVATIONS = tuple(getattr(nn, n) for n in (
    "ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "CELU", "SELU", "GELU", "SiLU", "Mish", "Hardswish",
    "Hardsigmoid", "Hardtanh", "Tanh", "Sigmoid", "Softplus", "Softsign", "LogSigmoid", "Tanhshrink", "Threshold",
    "Hardshrink", "Softshrink") if hasattr(nn, n))
_POOLS = tuple(getattr(nn, n) for n in ("MaxPool2d", "AvgPool2d", "LPPool2d", "FractionalMaxPool2d") if hasattr(nn, n))
#: Modules a conv layer's maps may go into without a doubt: the next layer, the head.
_KNOWN = (nn.modules.conv._ConvNd, nn.Linear, nn.Flatten, nn.Unflatten, nn.Identity, nn.modules.dropout._DropoutNd,
          nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd, nn.Upsample, nn.Softmax,
          nn.LogSoftmax, nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d, nn.ReplicationPad2d, nn.PixelShuffle,
          *_NORMS, *_ACTIVATIONS, *_POOLS)
#: Autograd operations a forward may apply to a layer's maps without the rule missing a part of the layer: reading
#: the head (flatten, global pooling), casting, copying.
_QUIET_OPS = ("View", "Reshape", "UnsafeView", "AsStrided", "Mean", "Amax", "Max", "Sum", "Squeeze", "Unsqueeze",
              "Clone", "ToCopy", "Alias", "Expand", "Permute", "Transpose", "Select", "Slice")
_ACTIVATION_OPS = ("Relu", "Gelu", "Silu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Hardtanh", "Hardswish",
                   "Hardsigmoid", "Softplus", "Mish", "Prelu", "Rrelu", "Threshold", "Clamp", "LogSigmoid")
_NORM_OPS = ("BatchNorm", "GroupNorm", "LayerNorm", "InstanceNorm")
_POOL_OPS = ("MaxPool2D", "AvgPool2D", "MaxPool2d", "AvgPool2d")
_MERGES = ("AddBackward0", "SubBackward0")


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Conv2d):
        return "conv"
    if isinstance(module, _NORMS):
        return "norm"
    if isinstance(module, _ACTIVATIONS):
        return "activation"
    if isinstance(module, _POOLS):
        return "pool"
    return "other"


def _op(node: Any) -> str:
    return type(node).__name__


def _is_merge(node: Any) -> bool:
    """An addition of two computed tensors (a skip joining its branch), not of a tensor and a constant or parameter."""
    if _op(node) not in _MERGES:
        return False
    inputs = [n for n, _ in node.next_functions[:2]]
    return len(inputs) == 2 and all(n is not None and _op(n) != "AccumulateGrad" for n in inputs)


def _op_said(node: Any) -> str | None:
    """What an operation done without a module means for the maps it reads; None when it is harmless."""
    name = _op(node).removesuffix("Backward0").removesuffix("Backward1").removesuffix("Backward")
    if name.startswith("Adaptive"):
        return None
    if any(p in name for p in _POOL_OPS):
        return f"a pooling ({name}) applied in forward without a module: the maps are before it"
    if any(n in name for n in _NORM_OPS):
        return f"a normalization ({name}) applied in forward without a module: the maps are before it"
    if any(a in name for a in _ACTIVATION_OPS):
        return f"an activation ({name}) applied in forward without a module: the maps are before it"
    if _is_merge(node):
        return "an addition done in forward outside a block module (a skip the rule cannot assign to a block)"
    if any(name.startswith(q) for q in _QUIET_OPS):
        return None
    return f"an operation ({name}) done in forward without a module"


# ---------------------------------------------------------------------------------------------------------
# One traced forward pass


@dataclass(eq=False)
class _Call:
    """One run of one module: its place in the call tree, the autograd clock at entry and exit, the graph nodes of
    its tensor inputs and of its output, and its output's shape."""

    index: int
    name: str
    module: nn.Module
    parent: _Call | None
    start: int
    inputs: list[Any]
    end: int = -1
    output: Any = None
    shape: tuple[int, ...] = ()
    children: list[_Call] = field(default_factory=list)

    @property
    def leaf(self) -> bool:
        return not self.children

    def ancestors(self) -> Iterator[_Call]:
        call = self.parent
        while call is not None:
            yield call
            call = call.parent

    def subtree(self) -> Iterator[_Call]:
        yield self
        for child in self.children:
            yield from child.subtree()


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


class _Trace:
    """A forward pass of one example with every module hooked: the calls, the autograd graph behind the output and
    which call ran each of its operations (by the autograd sequence numbers, which count operations as they run)."""

    def __init__(self, model: nn.Module, example: torch.Tensor) -> None:
        names = {id(module): name for name, module in model.named_modules()}
        self.calls: list[_Call] = []
        stack: list[_Call] = []
        clock = torch.zeros((), requires_grad=True)
        keep: list[Any] = []  # the graph's nodes stay alive, so their identities stay theirs

        def now() -> int:
            with torch.enable_grad():  # also inside a forward that turns autograd off
                return clock.mul(1).grad_fn._sequence_nr()

        def enter(module: nn.Module, args: tuple, kwargs: dict) -> None:
            nodes = [t.grad_fn for t in (*_tensors(args), *_tensors(kwargs))]
            call = _Call(len(self.calls), names.get(id(module), "?"), module, stack[-1] if stack else None, now(),
                         nodes)
            if call.parent is not None:
                call.parent.children.append(call)
            self.calls.append(call)
            stack.append(call)

        def leave(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            while stack and stack[-1].module is not module:  # a module left by an exception it caught
                stack.pop().end = now()
            if not stack:
                return
            call = stack.pop()
            call.end = now()
            first = next(_tensors(output), None)
            if first is not None:
                call.output, call.shape = first.grad_fn, tuple(first.shape)
                keep.append(first.grad_fn)

        handles = []
        was_training = model.training
        try:
            for module in model.modules():
                handles.append(module.register_forward_pre_hook(enter, with_kwargs=True))
                handles.append(module.register_forward_hook(leave, with_kwargs=True))
            model.eval()
            with torch.enable_grad():
                output = model(example.detach().clone().requires_grad_(True).clone())
        finally:
            model.train(was_training)
            for handle in handles:
                handle.remove()
        roots = [t.grad_fn for t in _tensors(output) if t.grad_fn is not None]
        roots += [c.output for c in self.calls if c.output is not None]
        self.consumers: dict[Any, list[Any]] = {}
        self.nodes: list[Any] = []
        seen, todo = set(), list(roots)
        while todo:
            node = todo.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            self.nodes.append(node)
            for parent, _ in node.next_functions:
                if parent is not None:
                    self.consumers.setdefault(parent, []).append(node)
                    todo.append(parent)
        self.keep = keep
        self.count: dict[int, int] = {}
        for call in self.calls:
            self.count[id(call.module)] = self.count.get(id(call.module), 0) + 1
        self._starts = [c.start for c in self.calls]  # increasing: calls are recorded as they start

    def owner(self, node: Any) -> _Call | None:
        """The innermost module call that ran this operation (None: before the model ran, or a parameter)."""
        if node is None or _op(node) == "AccumulateGrad":
            return None
        seq = node._sequence_nr()
        i = bisect.bisect_left(self._starts, seq) - 1
        call = self.calls[i] if i >= 0 else None
        while call is not None and not (call.start < seq < call.end):
            call = call.parent
        return call

    def ancestors_within(self, node: Any, call: _Call) -> set[int]:
        """ids of the operations ``call`` ran on the way to ``node`` (``node`` included)."""
        found, todo = set(), [node]
        while todo:
            n = todo.pop()
            if n is None or id(n) in found or _op(n) == "AccumulateGrad" or not n._sequence_nr() > call.start:
                continue
            found.add(id(n))
            todo.extend(parent for parent, _ in n.next_functions)
        return found


# ---------------------------------------------------------------------------------------------------------
# The rule


def _convnet_choice(model: nn.Module) -> LayerChoice | None:
    blocks = getattr(model, "blocks", None)
    if not (isinstance(blocks, nn.ModuleList) and len(blocks) and all(hasattr(b, "output_maps") for b in blocks)):
        return None
    names = {id(m): n for n, m in model.named_modules()}
    return LayerChoice([f"conv{i + 1}" for i in range(len(blocks))], [names[id(b)] for b in blocks], list(blocks),
                       [f"advflow ConvNet block {names[id(b)]!r} (conv, ReLU, pool)" for b in blocks])


def _every_conv(model: nn.Module, why: str) -> LayerChoice:
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    _no_conv(model, convs)
    text = (f"{why}; measured every nn.Conv2d ({', '.join(n for n, _ in convs)}), whose outputs are before any "
            f"normalization and activation; {_OVERRIDE}")
    return LayerChoice([n for n, _ in convs], [n for n, _ in convs], [m for _, m in convs],
                       ["an nn.Conv2d (the model could not be traced)"] * len(convs), [text])


def _no_conv(model: nn.Module, convs: list) -> None:
    if not convs:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d that runs; {_OVERRIDE} whose outputs are the maps")


def _blocks(trace: _Trace, convs: list[_Call]) -> tuple[list[_Call], list[_Call]]:
    """(the outermost residual blocks; the other containers, the root among them, that add a skip themselves)."""
    direct: dict[int, list[Any]] = {}
    for node in trace.nodes:
        call = trace.owner(node)
        if call is not None and not call.leaf and _is_merge(node):
            direct.setdefault(id(call), []).append(node)
    blocks, loose = [], []
    conv_ids = {id(c) for c in convs}
    for call in trace.calls:
        merges = direct.get(id(call), [])
        if not merges:
            continue
        inner = [c for c in call.subtree() if id(c) in conv_ids]
        unit: set[int] = set()
        for merge in merges:
            a, b = (trace.ancestors_within(n, call) for n, _ in merge.next_functions[:2])
            unit |= (a | b) - (a & b)
        if (call.parent is not None and inner and all(id(c.output) in unit for c in inner) and call.output is not None
                and len(call.shape) == 4):
            blocks.append(call)
        else:
            loose.append(call)
    outermost = [b for b in blocks if not any(a in blocks for a in b.ancestors())]
    return outermost, loose


def _run(trace: _Trace, anchor: _Call) -> list[_Call]:
    """The anchor and the normalization, activation and pooling modules that directly follow it, in order."""
    run = [anchor]
    node = anchor.output
    while True:
        users = trace.consumers.get(node, [])
        if len(users) != 1:
            return run
        call = trace.owner(users[0])
        if (call is None or not call.leaf or _kind(call.module) not in ("norm", "activation", "pool")
                or call.output is None or not any(n is node for n in call.inputs) or len(call.shape) != 4):
            return run
        run.append(call)
        node = call.output


def _after(trace: _Trace, call: _Call, blocks: list[_Call]) -> list[str]:
    """What is doubtful about where ``call``'s output goes (empty when nothing is)."""
    doubts = []
    for user in trace.consumers.get(call.output, []):
        owner = trace.owner(user)
        if owner is not None and owner.leaf:
            if not isinstance(owner.module, _KNOWN):
                doubts.append(f"its output goes into {owner.name!r} ({type(owner.module).__name__}), a module the "
                              f"rule does not know (an activation?): the maps are before it")
            continue
        if _is_merge(user) and owner is not None and any(b is owner or b in owner.ancestors() for b in blocks):
            continue  # the skip of a block that is itself measured
        said = _op_said(user)
        if said:
            where = f"{owner.name!r}" if owner is not None and owner.name else "the model"
            doubts.append(f"its output goes into {said.replace('in forward', f'in the forward of {where}', 1)}")
    return doubts


def _describe(run: list[_Call], block: bool) -> str:
    first, last = run[0], run[-1]
    what = (f"residual block {first.name!r} ({type(first.module).__name__}): its output after the addition"
            if block else f"conv {first.name!r}")
    follow = [f"{type(c.module).__name__} {c.name!r}" for c in run[1:]]
    if follow:
        what += ", then " + ", ".join(follow)
    return what + f"; measured at {last.name!r}"


def default_layers(model: nn.Module, example: torch.Tensor | None = None, *, warn: bool = True) -> LayerChoice:
    """The conv layers of ``model`` by the rule of this module (its docstring): the modules whose outputs are the
    layers' maps, in forward order (the last is the OIP's target). ``example``: one input ``(1, C, H, W)`` (or a
    batch, whose first item is used) in the model's input space, on its device, for the one traced forward pass;
    not needed for an advflow ConvNet. Doubts are issued as :class:`LayerChoiceWarning` (``warn=False``: only
    recorded in the choice's ``warnings``)."""
    choice = _convnet_choice(model)
    if choice is not None:
        return choice
    if callable(getattr(model, "layer_choice", None)):  # a user's model in the workflow: its layers, chosen once
        return model.layer_choice()
    if example is None:
        raise ValueError(f"default_layers needs one example input of {type(model).__name__} to trace its forward "
                         f"pass; or {_OVERRIDE}")
    example = torch.as_tensor(example)
    if not example.is_floating_point():
        example = example.float()
    example = example[:1] if example.dim() == 4 else example.unsqueeze(0)
    try:
        trace = _Trace(model, example)
        ran = [c for c in trace.calls if c.leaf and _kind(c.module) == "conv"]
        if ran and all(c.output is None for c in ran):
            raise RuntimeError("its convolutions' outputs have no autograd graph (a forward under torch.no_grad, or "
                               "detached)")
    except (RuntimeError, AttributeError) as error:  # the forward cannot run under autograd, or no sequence numbers
        choice = _every_conv(model, f"the forward pass of {type(model).__name__} could not be traced ({error})")
        _issue(choice.warnings, warn)
        return choice
    choice = _choose(trace, model)
    _issue(choice.warnings, warn)
    return choice


def _issue(texts: list[str], warn: bool) -> None:
    if warn:
        for text in texts:
            warnings.warn(LayerChoiceWarning(text), stacklevel=3)


def _choose(trace: _Trace, model: nn.Module) -> LayerChoice:
    convs = [c for c in trace.calls if c.leaf and _kind(c.module) == "conv" and c.output is not None
             and len(c.shape) == 4]
    _no_conv(model, convs)
    blocks, loose = _blocks(trace, convs)
    in_block = {id(c) for b in blocks for c in b.subtree()}
    anchors = sorted([*blocks, *(c for c in convs if id(c) not in in_block)], key=lambda c: c.index)
    doubts: list[str] = []
    layers: list[tuple[_Call, str]] = []
    for anchor in anchors:
        run = _run(trace, anchor)
        is_block = anchor in blocks
        if not is_block and _projection(trace, anchor, run, loose):
            owner = trace.owner(trace.consumers[run[-1].output][0])
            where = repr(owner.name) if owner is not None and owner.name else "the model"
            doubts.append(f"conv {anchor.name!r} is a 1x1 projection shortcut added in the forward of {where} "
                          f"outside a block module: not a layer; {_OVERRIDE}")
            continue
        while run and trace.count[id(run[-1].module)] > 1:
            dropped = run.pop()
            if run:
                doubts.append(f"{dropped.name!r} runs {trace.count[id(dropped.module)]} times in one forward pass "
                              f"(a shared module), so its maps are ambiguous; measured {run[-1].name!r} before it "
                              f"instead; {_OVERRIDE}")
            else:
                doubts.append(f"{dropped.name!r} runs {trace.count[id(dropped.module)]} times in one forward pass "
                              f"(a shared module), so its maps are ambiguous: not measured; {_OVERRIDE}")
        if not run:
            continue
        if any(call is run[-1] or call.module is run[-1].module for call, _ in layers):
            continue
        for doubt in _after(trace, run[-1], blocks):
            doubts.append(f"layer {run[-1].name!r}: {doubt}; {_OVERRIDE}")
        layers.append((run[-1], _describe(run, is_block)))
    if not layers:
        _no_conv(model, [])
    names = [call.name for call, _ in layers]
    return LayerChoice(names, list(names), [call.module for call, _ in layers], [r for _, r in layers],
                       list(dict.fromkeys(doubts)))


def _projection(trace: _Trace, conv: _Call, run: list[_Call], loose: list[_Call]) -> bool:
    """A 1x1 conv beside another path whose output (after its norm) only goes into an addition outside a block."""
    if tuple(getattr(conv.module, "kernel_size", ())) != (1, 1) or not conv.inputs:
        return False
    users = trace.consumers.get(run[-1].output, [])
    if len(users) != 1 or not _is_merge(users[0]) or trace.owner(users[0]) not in loose:
        return False
    branch = conv.inputs[0]
    siblings = trace.consumers.get(branch, []) if branch is not None else []
    return len(siblings) >= 2


def capture_maps(model: nn.Module, x: torch.Tensor, chosen: list[tuple[str, nn.Module]], *,
                 grad: bool = False, with_output: bool = False) -> Any:
    """Each chosen ``(layer name, module)``'s output for the batch ``x``, captured by forward hooks in one forward
    pass without gradients (the model in eval mode, its mode restored), detached, keyed in the order the network runs
    the layers; with ``grad=True`` the maps keep the autograd graph instead (not detached, under the caller's grad
    mode: differentiable with respect to ``x``, for an adaptive attacker). A module that runs twice, one that does not
    run, or an output that is not maps ``(N, n, H, W)`` is a ValueError naming it. The API, the information-path
    detector and the detectors' layer features share it. ``with_output=True``: ``(maps, the model's output)`` of the same
    forward pass."""
    captured: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if name in captured:
                raise ValueError(f"module {name!r} runs more than once in a forward pass; its maps are ambiguous. "
                                 "Pass layers= modules that each run once")
            captured[name] = output if grad else output.detach()
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in chosen]
    was_training = model.training
    try:
        model.eval()
        with contextlib.nullcontext() if grad else torch.no_grad():
            output = model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    missing = [name for name, _ in chosen if name not in captured]
    if missing:
        raise ValueError(f"module(s) {', '.join(missing)} did not run in the forward pass")
    for name, maps in captured.items():
        if not isinstance(maps, torch.Tensor) or maps.dim() != 4:
            raise ValueError(f"module {name!r} outputs shape {tuple(getattr(maps, 'shape', ()))}; maps must be "
                             f"(N, n, H, W)")
    # hooks fire, and so insert, in the order the network runs the layers
    return (captured, output) if with_output else captured
