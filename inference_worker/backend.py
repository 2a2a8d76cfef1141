"""Which chat model a worker talks to, from the settings (``PARLEY_CHAT_BACKEND``):

* ``local`` (default): the small model shipped in a PyPI package, in process (no API key);
* ``azure-openai``: ``PARLEY_AZURE_OPENAI_ENDPOINT`` + ``PARLEY_AZURE_OPENAI_CHAT_DEPLOYMENT``,
  with ``PARLEY_AZURE_OPENAI_API_KEY`` or else Entra ID (workload identity on AKS);
* ``openai-compatible``: ``PARLEY_CHAT_BASE_URL`` (vLLM, a Kaito workspace service
  ``http://workspace-<name>/v1``, a llama.cpp server) serving ``PARLEY_CHAT_MODEL``, with
  ``PARLEY_CHAT_API_KEY`` when the server wants one.
"""

from __future__ import annotations

from inference_worker.chatmodel import ChatModel
from parley.errors import ConfigError
from parley.settings import Settings


def build_chat_model(settings: Settings) -> ChatModel:
    """The configured backend, ready to stream. Raises ConfigError naming the variable to set.
    The caller closes it (``await model.close()``)."""
    backend = settings.chat_backend
    if backend == "local":
        from inference_worker.local import LocalChatModel

        return LocalChatModel.from_settings(settings)
    from inference_worker.openai_backend import OpenAIChatModel

    if backend == "azure-openai":
        if not settings.azure_openai_endpoint:
            raise ConfigError(
                "the azure-openai chat backend needs an endpoint",
                hint="set PARLEY_AZURE_OPENAI_ENDPOINT=https://<resource>.openai.azure.com",
            )
        key = settings.azure_openai_api_key
        return OpenAIChatModel.azure(
            settings.azure_openai_endpoint,
            settings.azure_openai_chat_deployment,
            api_version=settings.azure_openai_api_version,
            api_key=key.get_secret_value() if key is not None else None,
        )
    if backend == "openai-compatible":
        if not settings.chat_base_url:
            raise ConfigError(
                "the openai-compatible chat backend needs the server's URL",
                hint="set PARLEY_CHAT_BASE_URL, e.g. http://workspace-phi-4-mini/v1",
            )
        key = settings.chat_api_key
        return OpenAIChatModel.compatible(
            settings.chat_base_url,
            settings.chat_model,
            api_key=key.get_secret_value() if key is not None else None,
        )
    raise ConfigError(
        f"unknown chat backend {backend!r}",
        hint="set PARLEY_CHAT_BACKEND to local, azure-openai or openai-compatible",
    )
