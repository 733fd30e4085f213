"""`minigpt serve`: a checkpoint behind an OpenAI-compatible API (/v1/chat/completions, /v1/completions,
/v1/models) and a chat page at /, on localhost unless told otherwise."""
from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket

from ..common import MinigptError, console
from .args import add_checkpoint, add_device, load


def register(sub) -> None:
    from ..config import add_dataclass_args
    from ..infer.sampling import SamplingConfig

    p = sub.add_parser("serve", help="serve a checkpoint: an OpenAI-compatible API and a chat page",
                       description="Serve a checkpoint over HTTP: POST /v1/chat/completions and /v1/completions "
                                   "(streamed or not), GET /v1/models, and a chat page at / where any reply token "
                                   "can be clicked to see its probability and attention. Requests are queued and "
                                   "generated one at a time. Needs the serve extra: pip install 'minigpt[serve]'.")
    add_checkpoint(p)
    add_device(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine "
                   "only; 0.0.0.0 opens it to the network, so set --api-key)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    p.add_argument("--api-key", default=os.environ.get("MINIGPT_API_KEY"), help="require 'Authorization: Bearer "
                   "KEY' on /v1 routes (default: $MINIGPT_API_KEY, else no key)")
    p.add_argument("--model-name", default=None, help="the model id clients see (default: the run folder's name)")
    p.add_argument("--queue-size", type=int, default=64, help="requests that may wait; more get 503 (default: 64)")
    add_dataclass_args(p, SamplingConfig, title="default sampling (a request's own fields win)")
    p.set_defaults(func=_serve)


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, opened here so a busy port is a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise MinigptError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port or --host") from None
    sock.listen(128)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _serve(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from ..config import resolve_config
    from ..infer.sampling import SamplingConfig

    try:
        import uvicorn

        from ..serve.app import Served, Server, create_app
    except ImportError as e:
        raise MinigptError(f"minigpt serve needs the serve extra ({e.name} is missing): "
                           "pip install 'minigpt[serve]'") from None
    if args.queue_size < 1:
        raise MinigptError(f"--queue-size {args.queue_size}: give at least 1")
    if args.api_key and not (args.api_key.isascii() and args.api_key.isprintable() and " " not in args.api_key):
        raise MinigptError("--api-key: use printable ASCII without spaces (an HTTP header carries it), e.g. "
                           "--api-key \"$(openssl rand -hex 16)\"")
    defaults = resolve_config(SamplingConfig, args)
    sock = _bind(args.host, args.port)
    ckpt = load(args)
    from ..infer.engine import Engine

    served = Served(Engine(ckpt.model, ckpt.tokenizer), model_id=args.model_name or ckpt.run_dir.name,
                    stage=ckpt.config.get("stage", "pretrain"), defaults=defaults, api_key=args.api_key or None,
                    info={"checkpoint": str(ckpt.path), "created": int((ckpt.path / "config.json").stat().st_mtime)},
                    queue_size=args.queue_size)
    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    console.print(f"[bold]minigpt serve[/] · model [bold]{escape(served.model_id)}[/] (stage {served.stage}"
                  f"{', answers chat as continuation' if served.mode == 'continue' else ''}) · chat page "
                  f"{url}/ · API {url}/v1" + (" · API key required" if served.api_key else ""), soft_wrap=True)
    if not _is_loopback(host) and not served.api_key:
        console.print(f"[yellow]warning:[/] listening on {escape(host)} without --api-key: anyone who can reach "
                      "this machine can use the model", soft_wrap=True)
    config = uvicorn.Config(create_app(served), log_level="info", access_log=True, timeout_graceful_shutdown=5)
    server = Server(config, served)
    server.run(sockets=[sock])
    return 130 if server.stopped_by == signal.SIGINT else 0  # 130: stopped by Ctrl-C, as every command
