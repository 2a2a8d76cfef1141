"""Which backend the settings select, and the errors that name the variable to set. (The local
backend is built by ``LocalChatModel.from_settings``, tested with the local model.)"""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from inference_worker.backend import build_chat_model
from inference_worker.openai_backend import OpenAIChatModel
from parley.errors import ConfigError
from parley.settings import Settings


async def test_openai_compatible_backend_uses_the_base_url_and_model() -> None:
    model = build_chat_model(Settings(
        chat_backend="openai-compatible", chat_base_url="http://workspace-phi-4-mini/v1",
        chat_model="phi-4-mini-instruct",
    ))
    assert isinstance(model, OpenAIChatModel)
    assert model.name == "phi-4-mini-instruct"
    assert str(model.client.base_url) == "http://workspace-phi-4-mini/v1/"
    assert model.client.max_retries == 0  # 429s are handled by the queue, not by sleeping
    await model.close()


async def test_azure_backend_with_a_key_targets_the_deployment() -> None:
    model = build_chat_model(Settings(
        chat_backend="azure-openai", azure_openai_endpoint="https://parley.openai.azure.com",
        azure_openai_api_key=SecretStr("k"), azure_openai_chat_deployment="gpt-4o-mini",
    ))
    assert isinstance(model, OpenAIChatModel)
    assert model.name == "gpt-4o-mini"
    assert "parley.openai.azure.com" in str(model.client.base_url)
    assert model.client.max_retries == 0
    await model.close()


async def test_azure_backend_without_a_key_uses_entra_id() -> None:
    model = build_chat_model(Settings(
        chat_backend="azure-openai", azure_openai_endpoint="https://parley.openai.azure.com",
    ))
    assert isinstance(model, OpenAIChatModel)
    assert model._on_close is not None  # the DefaultAzureCredential, closed with the model
    await model.close()


@pytest.mark.parametrize(
    ("backend", "variable"),
    [("openai-compatible", "PARLEY_CHAT_BASE_URL"),
     ("azure-openai", "PARLEY_AZURE_OPENAI_ENDPOINT")],
)
def test_missing_endpoint_names_the_variable(backend: str, variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_chat_model(Settings(chat_backend=backend))
    assert variable in str(caught.value)
