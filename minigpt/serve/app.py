"""The ASGI app: routes, authentication, streaming, and errors that are always OpenAI-shaped.

Routes: `GET /` the chat page, `GET /v1/models` (and `/v1/models/{id}`), `POST /v1/chat/completions`,
`POST /v1/completions`, `POST /v1/minigpt/inspect` (one token's probabilities and attention, for the page).
With an API key every /v1 route wants `Authorization: Bearer KEY` (401 otherwise; the page asks for the key
once and keeps it in the browser). Every error, a bad body, an unknown route (404), a wrong method (405),
a full queue (503) or a bug (500, logged), answers `{"error": {"message", "type", "param", "code"}}`.

Streams are server-sent events (`data: {chunk}` ... `data: [DONE]`). `EventStream` listens for the client's
disconnect while it sends, whatever ASGI version the server speaks, and cancels the job: the worker closes the
engine stream at the next token, so an abandoned reply costs at most one more token. A non-streamed request
watches for the disconnect the same way while it waits.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..common import MinigptError
from . import openai as api
from .inspect import parse_inspect, token_view
from .replies import Reply
from .served import Served
from .worker import Job, QueueFull, ShuttingDown

log = logging.getLogger("minigpt.serve")


# ---------------------------------------------------------------------------------------------- plumbing


def error_response(e: api.ApiError) -> JSONResponse:
    headers = {401: {"www-authenticate": "Bearer"}, 503: {"retry-after": "1"}}.get(e.status)
    return JSONResponse(e.body(), status_code=e.status, headers=headers)


def _authorize(request: Request, key: str | None) -> None:
    if key is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
        raise api.ApiError("missing or wrong API key; send the header Authorization: Bearer KEY", status=401,
                           code="invalid_api_key")


Handler = Callable[[Request, Served], Awaitable[Response]]


def endpoint(handler: Handler, served: Served, auth: bool = True) -> Callable[[Request], Awaitable[Response]]:
    """A route: the key checked, every failure turned into an OpenAI-shaped error."""
    async def run(request: Request) -> Response:
        try:
            if auth:
                _authorize(request, served.api_key)
            return await handler(request, served)
        except api.ApiError as e:
            return error_response(e)
        except ShuttingDown as e:
            return error_response(_shutting_down(e))
        except MinigptError as e:  # a check deeper down (the engine, the tokenizer): still the caller's input
            return error_response(api.ApiError(str(e)))
        except Exception as e:  # noqa: BLE001 - a bug; say so in the API's shape, keep the server up
            log.exception("error while answering %s %s", request.method, request.url.path)
            return error_response(api.ApiError(f"internal error: {type(e).__name__}: {e}", status=500,
                                               type="server_error"))
    return run


def _shutting_down(e: ShuttingDown) -> api.ApiError:
    return api.ApiError(f"{e}; retry in a moment", status=503, type="server_error", code="shutting_down")


async def _cancel_on_disconnect(receive: Receive, job: Job) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    job.cancel()


class EventStream(Response):
    """Server-sent events from an async iterator of chunks; a client that goes away cancels the job."""

    media_type = "text/event-stream"

    def __init__(self, chunks: AsyncIterator[bytes], job: Job):
        self.chunks, self.job, self.status_code, self.background = chunks, job, 200, None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watcher = asyncio.create_task(_cancel_on_disconnect(receive, self.job))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away (servers of ASGI spec 2.4 say so by raising)
            pass
        finally:
            self.job.cancel()  # no effect on a finished job; stops one whose client left
            watcher.cancel()


def _sse(data: Any) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


async def _stream(job: Job, reply: Reply) -> AsyncIterator[bytes]:
    for chunk in reply.first_chunks():
        yield _sse(chunk)
    try:
        async for ev in job.events():
            reply.seed = job.seed
            for chunk in reply.chunks(ev):
                yield _sse(chunk)
    except ShuttingDown as e:  # the status line is sent: report in the stream, as OpenAI does
        yield _sse(_shutting_down(e).body())
        return
    except Exception as e:  # noqa: BLE001 - the same, for a check deeper down or a bug
        caller = isinstance(e, MinigptError)
        message = str(e) if caller else f"internal error: {type(e).__name__}: {e}"
        yield _sse(api.ApiError(message, type="invalid_request_error" if caller else "server_error").body())
        return
    if reply.request.include_usage:
        yield _sse(reply.usage_chunk())
    yield b"data: [DONE]\n\n"


async def answer(request: Request, served: Served, req: api.Completion) -> Response:
    """Queue the generation; stream its chunks, or wait (watching for a disconnect) and send the whole reply."""
    job = Job(asyncio.get_running_loop(), prompt_ids=req.prompt_ids, config=req.config, n=req.n,
              stop_ids=req.stop_ids)
    try:
        served.worker.submit(job)
    except QueueFull as e:
        raise api.ApiError(f"the server is busy ({e}); retry in a moment", status=503, type="server_error",
                           code="overloaded") from None
    reply = Reply(req, served.model_id, served.tokenizer)
    if req.stream:
        return EventStream(_stream(job, reply), job)
    watcher = asyncio.create_task(_cancel_on_disconnect(request.receive, job))
    try:
        async for ev in job.events():
            reply.add(ev)
    finally:
        watcher.cancel()
    reply.seed = job.seed
    return JSONResponse(reply.response())


# ---------------------------------------------------------------------------------------------- routes


async def chat_completions(request: Request, served: Served) -> Response:
    body = api.parse_body(await request.body())
    prompt = served.chat_prompt(api.chat_messages(body))
    config = api.fit_context(api.sampling(body, served.defaults), prompt, served.engine.context_limit, "messages")
    req = api.Completion(True, prompt, config, served.session.stop_ids(), **api.options(body, chat=True))
    return await answer(request, served, req)


async def completions(request: Request, served: Served) -> Response:
    body = api.parse_body(await request.body())
    prompt = api.completion_prompt(body, served.tokenizer, served.engine.vocab_size)
    config = api.fit_context(api.sampling(body, served.defaults), prompt, served.engine.context_limit, "prompt")
    req = api.Completion(False, prompt, config, served.engine.default_stop_ids(), **api.options(body, chat=False))
    return await answer(request, served, req)


async def models(request: Request, served: Served) -> Response:
    return JSONResponse({"object": "list", "data": [served.model_card()]})


async def model(request: Request, served: Served) -> Response:
    name = request.path_params["name"]
    if name != served.model_id:
        raise api.ApiError(f"the model {name!r} does not exist; this server serves {served.model_id!r}",
                           status=404, param="model", code="model_not_found")
    return JSONResponse(served.model_card())


async def inspect_token(request: Request, served: Served) -> Response:
    body = api.parse_body(await request.body())
    if "messages" in body:
        prompt = served.chat_prompt(api.chat_messages(body))
    else:
        prompt = api.completion_prompt(body, served.tokenizer, served.engine.vocab_size)
    reply, index, top = parse_inspect(body, served.engine.vocab_size)
    m, tok = served.engine.model, served.tokenizer
    data = await served.worker.call(lambda: token_view(m, tok, prompt, reply, index, top, served.attention))
    return JSONResponse(data)


async def page(request: Request, served: Served) -> Response:
    from .page import render_page

    return HTMLResponse(render_page(served))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    message = (f"{request.method} {request.url.path}: no such endpoint; try GET /v1/models, POST "
               "/v1/chat/completions or POST /v1/completions" if exc.status_code == 404 else
               f"{request.method} {request.url.path}: {exc.detail}")
    return error_response(api.ApiError(message, status=exc.status_code, code=code))


def create_app(served: Served) -> Starlette:
    """The Starlette app; its lifespan starts and stops the worker thread (`Server` stops it sooner)."""
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        served.worker.start()
        try:
            yield
        finally:
            served.worker.stop()

    routes = [Route("/", endpoint(page, served, auth=False), methods=["GET"]),
              Route("/v1/models", endpoint(models, served), methods=["GET"]),
              Route("/v1/models/{name:path}", endpoint(model, served), methods=["GET"]),
              Route("/v1/chat/completions", endpoint(chat_completions, served), methods=["POST"]),
              Route("/v1/completions", endpoint(completions, served), methods=["POST"]),
              Route("/v1/minigpt/inspect", endpoint(inspect_token, served), methods=["POST"])]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
    app.state.served = served
    return app


class Server(uvicorn.Server):
    """uvicorn's server, which on Ctrl-C or SIGTERM first cancels the model's jobs: their requests end at once
    with a 503 `shutting_down` instead of running on until the graceful-shutdown timeout cancels them
    mid-response (a plain-text 500 and a traceback per request)."""

    def __init__(self, config: uvicorn.Config, served: Served):
        super().__init__(config)
        self.served, self.stopped_by = served, None

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.stopped_by = sig  # the exit status says so even where uvicorn does not raise the signal again
        # a signal handler runs between two bytecodes of the loop's thread, which may hold the worker's lock:
        # cancel from another thread
        threading.Thread(target=self.served.worker.begin_stop, daemon=True).start()
        super().handle_exit(sig, frame)
