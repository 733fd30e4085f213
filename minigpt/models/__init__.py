"""Model registry: `kind` -> (ConfigClass, ModelClass). `build_model(config)` and `config_from_dict(d)`.

Adding a model family is one line in `_REGISTRY` plus a module implementing `models.base.LanguageModel`.
"""
from __future__ import annotations

import importlib
from typing import Any

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


__all__ = ["LanguageModel", "lm_loss", "kinds", "classes", "config_from_dict", "build_model"]
