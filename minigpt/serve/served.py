"""`Served`: one model behind the API, what every route and the page read (engine, worker, template, defaults)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..chat.session import CHAT_STAGES, ChatSession
from ..infer.engine import Engine
from ..infer.sampling import SamplingConfig
from ..lens.attention import has_attention
from .worker import Worker


@dataclass
class Served:
    """One model behind the API: the engine on its worker, the chat template, the defaults, the key."""

    engine: Engine
    model_id: str
    stage: str
    defaults: SamplingConfig = field(default_factory=SamplingConfig)
    api_key: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # extra facts for /v1/models (checkpoint, ...)
    queue_size: int = 64

    def __post_init__(self) -> None:
        self.tokenizer = self.engine.tokenizer
        self.mode = "chat" if self.stage in CHAT_STAGES else "continue"
        self.session = ChatSession(self.engine, mode=self.mode)  # renders prompts exactly as `minigpt chat`
        self.attention = has_attention(self.engine.model)
        self.worker = Worker(self.engine, queue_size=self.queue_size)

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        return self.session.render(messages)

    def model_card(self) -> dict[str, Any]:
        e = self.engine
        return {"id": self.model_id, "object": "model", "created": int(self.info.get("created", 0)),
                "owned_by": "minigpt",
                "minigpt": {"stage": self.stage, "chat": "template" if self.mode == "chat" else "continuation",
                            "kind": getattr(e.model.config, "kind", "?"), "parameters": e.params,
                            "context_length": e.context_limit, "attention": self.attention,
                            **{k: v for k, v in self.info.items() if k != "created"}}}
