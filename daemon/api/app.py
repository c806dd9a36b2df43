"""The front door: assembles the routers (OpenAI chat and Responses, Anthropic, Ollama,
llama.cpp, control) behind the guard.

Cheap endpoints (/v1/models, /health, /status) never touch the generation queue, so they answer
while a long generation runs.
"""

from __future__ import annotations

from fastapi import FastAPI

from assistantd.api import (
    anthropic_routes,
    control_routes,
    errors,
    llamacpp_routes,
    ollama_routes,
    openai_routes,
    openapi,
    responses_routes,
)
from assistantd.api.security import Guard
from assistantd.control.state import DaemonState


def create_app(state: DaemonState) -> FastAPI:
    app = FastAPI(title="assistantd", version="0.1.0", docs_url=None, redoc_url=None)
    app.state.daemon = state
    settings = state.settings
    app.add_middleware(
        Guard,
        bind_host=settings.host,
        keys=state.keys,
        allowed_hosts=settings.allowed_hosts,
        allowed_origins=settings.allowed_origins,
    )
    errors.install(app)
    openapi.install(app)
    app.include_router(openai_routes.router)
    app.include_router(anthropic_routes.router)
    app.include_router(responses_routes.router)
    app.include_router(ollama_routes.router)
    app.include_router(llamacpp_routes.router)
    app.include_router(control_routes.router)
    # llama-server answers its OpenAI routes without /v1 too; scripts written for it use them.
    app.add_api_route("/chat/completions", openai_routes.chat_completions, methods=["POST"],
                      include_in_schema=False)  # fmt: skip
    app.add_api_route("/chat/completions/input_tokens", openai_routes.chat_input_tokens,
                      methods=["POST"], include_in_schema=False)  # fmt: skip
    app.add_api_route(
        "/models", openai_routes.list_models, methods=["GET"], include_in_schema=False
    )
    return app
