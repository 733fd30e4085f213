"""`minigpt serve`: an OpenAI-compatible HTTP API and a chat page that shows the model thinking.

Stack: Starlette + uvicorn (the `serve` extra: `pip install -e ".[serve]"`). Starlette is the small ASGI
toolkit FastAPI is built on; this API is six routes whose bodies follow OpenAI's schema, which openai.py checks
by hand so that every error reads like OpenAI's and names the parameter, so FastAPI's pydantic models and
generated docs would add a dependency and a second error format for nothing. uvicorn is the standard ASGI
server, pure Python with h11 as installed here.

Modules: app.py (routes, authentication, server-sent events, OpenAI-shaped errors), openai.py (request bodies
-> checked sampling settings and prompts), replies.py (token events -> chunks and responses, usage),
worker.py (the one thread that runs the model: a FIFO of jobs; where batched decoding would plug in),
inspect.py (one token's probabilities and attention for the page), page.py + page.html (the chat page).
"""
