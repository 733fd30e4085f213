"""Model registry: `kind` -> (ConfigClass, ModelClass). `build_model(config)` and `config_from_dict(d)`;
`shapes_only()` builds a model's shapes without its memory.

Adding a model family is one line in `_REGISTRY` plus a module implementing `models.base.LanguageModel`.
"""
from __future__ import annotations

import contextlib
import importlib
from typing import Any, Iterator

import torch
from torch.overrides import TorchFunctionMode

from ..common import MinigptError
from ..config import from_dict
from .base import LanguageModel, lm_loss

# kind -> "module:ConfigClass:ModelClass" (imported lazily so `minigpt --help` stays fast)
_REGISTRY: dict[str, str] = {
    "gpt": "gpt:GPTConfig:GPT",
    "bigram": "bigram:BigramConfig:Bigram",
    "mlp": "mlp:MLPConfig:MLP",
    "cnn": "cnn:CNNConfig:CNN",
    "rnn": "rnn:RNNConfig:RNN",
    "lstm": "rnn:LSTMConfig:RNN",
    "gru": "rnn:GRUConfig:RNN",
}
# Models that score sequences rather than predict tokens: loadable from checkpoints, not trainable by pretrain.
_SCORERS: dict[str, str] = {"reward": "reward:RewardConfig:RewardModel"}


def kinds() -> list[str]:
    return list(_REGISTRY)


def classes(kind: str) -> tuple[type, type]:
    spec = _REGISTRY.get(kind) or _SCORERS.get(kind)
    if spec is None:
        raise MinigptError(f"unknown model kind {kind!r}; choose one of {', '.join(_REGISTRY)}")
    module, config_cls, model_cls = spec.split(":")
    mod = importlib.import_module(f"{__name__}.{module}")
    return getattr(mod, config_cls), getattr(mod, model_cls)


def config_from_dict(values: dict[str, Any], source: str = "model config") -> Any:
    kind = values.get("kind", "gpt")
    config_cls, _ = classes(kind)
    return from_dict(config_cls, values, source=source)


def build_model(config: Any) -> LanguageModel:
    _, model_cls = classes(config.kind)
    return model_cls(config)


class _SkipInit(TorchFunctionMode):
    """Returns the tensor a `torch.nn.init` initialiser is given, untouched."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


@contextlib.contextmanager
def shapes_only() -> Iterator[None]:
    """Models built inside have every parameter on the meta device: the shapes, no memory, and no initialiser run
    (there is nothing to fill). Running them would cost more than the build: PyTorch computes `normal_` on a meta
    tensor with a Python reference op whose first call imports torch._dynamo, 1.0 s of every checkpoint load."""
    with torch.device("meta"), _SkipInit():
        yield


__all__ = ["LanguageModel", "lm_loss", "kinds", "classes", "config_from_dict", "build_model", "shapes_only"]
