"""build_embedder and open_blob_store pick the adapter the settings name, and say what to set when
they cannot."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import pytest
from pydantic import SecretStr

from backends.azure_blob import AzureBlobStore
from backends.azure_embedder import AzureOpenAIEmbedder
from backends.factory import build_embedder, graph_cache, open_blob_store
from parley.blobstore import BlobStore
from parley.blobstore.local import LocalBlobStore
from parley.embedder.local import LocalEmbedder
from parley.errors import ConfigError
from parley.settings import Settings
from tests.peers.azure_openai import FakeAzureOpenAI

HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.mark.parametrize("device", ["cpu", "auto"])
async def test_the_default_is_the_local_cpu_embedder(device: str) -> None:
    if device == "auto" and HAS_TORCH:
        pytest.skip("torch is installed: auto may pick the GPU embedder")
    embedder = build_embedder(Settings(embed_device=device, embed_threads=1))
    try:
        assert isinstance(embedder, LocalEmbedder)
        assert embedder.config.threads == 1
        assert embedder.config.cache is not None and embedder.config.cache == graph_cache()
        assert len((await embedder.embed(["hello"]))[0]) == 384
    finally:
        await embedder.close()


async def test_azure_openai_with_an_api_key() -> None:
    with FakeAzureOpenAI(dimensions=16) as fake:
        settings = Settings(
            embedder="azure-openai",
            azure_openai_endpoint=fake.url,
            azure_openai_api_key=SecretStr(fake.api_key),
            azure_openai_embedding_deployment="emb-small",
            azure_openai_embedding_dimensions=16,
            azure_openai_embedding_max_inputs=2,
        )
        embedder = build_embedder(settings)
        try:
            assert isinstance(embedder, AzureOpenAIEmbedder)
            assert len(await embedder.embed(["a", "b", "c"])) == 3
        finally:
            await embedder.close()
        assert [(r.deployment, len(r.inputs)) for r in fake.requests] == [
            ("emb-small", 2),
            ("emb-small", 1),
        ]


def test_azure_openai_without_an_endpoint_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match="PARLEY_AZURE_OPENAI_ENDPOINT"):
        build_embedder(Settings(embedder="azure-openai", azure_openai_endpoint=None))


def test_an_unknown_device_says_what_to_set() -> None:
    with pytest.raises(ConfigError, match="PARLEY_EMBED_DEVICE"):
        build_embedder(Settings(embed_device="tpu"))


@pytest.mark.skipif(HAS_TORCH, reason="torch is installed here")
def test_cuda_without_the_gpu_extra_says_how_to_install_it() -> None:
    with pytest.raises(ConfigError, match=r"parley\[gpu\]"):
        build_embedder(Settings(embed_device="cuda"))


@pytest.mark.parametrize("graph", ["int8", "fp32", "packaged"])
async def test_model_id_of_names_the_graphs_vector_space_without_loading_it(graph: str) -> None:
    from backends.factory import model_id_of
    from parley.embedder.local import FP32_MODEL_ID, MODEL_ID

    settings = Settings(embed_device="cpu", embed_graph=graph)
    assert await model_id_of(settings) == (MODEL_ID if graph == "int8" else FP32_MODEL_ID)
    embedder = build_embedder(settings)
    try:
        assert isinstance(embedder, LocalEmbedder)
        assert embedder.model_id == await model_id_of(settings)
    finally:
        await embedder.close()


def test_build_tokenizer_counts_like_the_embedder_it_stands_for() -> None:
    from backends.azure_embedder import ApproxCl100kTokenizer
    from backends.factory import build_tokenizer
    from parley.embedder.local import MiniLMTokenizer

    text = "Net sales of iPhone rose 8% year over year."
    local = build_tokenizer(Settings(embed_device="cpu"))
    assert isinstance(local, MiniLMTokenizer)
    assert local.count(text) == MiniLMTokenizer().count(text)
    azure = build_tokenizer(Settings(embedder="azure-openai", azure_openai_endpoint="https://x"))
    assert isinstance(azure, ApproxCl100kTokenizer)
    assert azure.count(text) == ApproxCl100kTokenizer().count(text)


async def test_blob_store_local(tmp_path: Path) -> None:
    store = open_blob_store(Settings(blob_dir=tmp_path, blob_container="docs-a"))
    assert isinstance(store, LocalBlobStore) and isinstance(store, BlobStore)
    await store.put("x.txt", b"x")
    assert (tmp_path / "docs-a" / "x.txt").read_bytes() == b"x"
    await store.close()


async def test_blob_store_azure_connection_string(azurite_connection_string: str) -> None:
    settings = Settings(
        blob_backend="azure", blob_container="factory-made",
        blob_connection_string=SecretStr(azurite_connection_string), blob_create_container=True,
    )
    store = open_blob_store(settings)
    assert isinstance(store, AzureBlobStore) and isinstance(store, BlobStore)
    try:
        await store.put("x.txt", b"x")
        assert (await store.get("x.txt"))[0] == b"x"
    finally:
        await store.close()


async def test_blob_store_azure_account_url_uses_entra_id() -> None:
    settings = Settings(
        blob_backend="azure", blob_account_url="https://example.blob.core.windows.net"
    )
    store = open_blob_store(settings)
    assert isinstance(store, AzureBlobStore)
    await store.close()  # closes the DefaultAzureCredential it made, no network needed


def test_blob_store_azure_without_address() -> None:
    with pytest.raises(ConfigError, match="PARLEY_BLOB_ACCOUNT_URL"):
        open_blob_store(Settings(blob_backend="azure"))


@pytest.mark.parametrize("spin", [False, True])
async def test_the_spin_setting_reaches_onnxruntime(spin: bool) -> None:
    embedder = build_embedder(Settings(embed_device="cpu", embed_threads=1, embed_spin=spin))
    try:
        assert isinstance(embedder, LocalEmbedder)
        options = embedder._session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == (
            "1" if spin else "0")
        assert len((await embedder.embed(["hello"]))[0]) == 384
    finally:
        await embedder.close()


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX owners")
def test_the_graph_cache_is_a_folder_of_this_user_and_never_another_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    mine = graph_cache()
    assert mine == tmp_path / f"parley-{os.getuid()}"
    # A folder of that name owned by someone else (here: made by this user for another uid).
    other = os.getuid() + 1
    (tmp_path / f"parley-{other}").mkdir()
    monkeypatch.setattr(os, "getuid", lambda: other)
    assert graph_cache() is None
