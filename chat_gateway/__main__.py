"""``python -m chat_gateway``: serve the gateway on settings.gateway_host:gateway_port."""

from __future__ import annotations

from chat_gateway.app import create_app
from chat_gateway.server import serve
from parley import logs
from parley.settings import Settings


def main() -> None:
    settings = Settings()
    logs.configure(settings.log_level, json=settings.log_json, component="chat-gateway")
    serve(create_app(settings))


if __name__ == "__main__":
    main()
