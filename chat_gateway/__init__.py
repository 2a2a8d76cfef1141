"""The chat gateway: websocket chat with streamed, cited answers; the OpenAI-compatible face;
health and readiness. ``python -m chat_gateway`` serves it (see docs/chat-protocol.md)."""
