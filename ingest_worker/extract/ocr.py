"""OCR: text from pixels, for scanned and image-only PDF pages and pictures in DOCX and PPTX.

An :class:`OcrEngine` reads one image; :class:`Ocr` is what the extractors call: an engine with a
time budget, so OCR of a long scan stops (leaving the rest of its pages with the reason ``time``)
before the extraction's own time limit kills the child and loses every page.

Two engines, one interface:

- :class:`LocalOcr` (the default): RapidOCR on onnxruntime, with the PP-OCRv6 small detection and
  recognition models that ship inside the ``rapidocr`` wheel; nothing is downloaded at run time.
  The models are loaded on the first image, in the extraction child that uses them.
- :class:`AzureReadOcr`: Azure AI Document Intelligence's ``prebuilt-read`` model over HTTPS.

Both run inside the extraction child (:mod:`ingest_worker.extract.isolation`), under its time and
memory limits.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, SecretStr

if TYPE_CHECKING:
    import httpx

    from parley.settings import Settings

Pixels = npt.NDArray[np.uint8]
"""An image as height x width x 3 (RGB) bytes."""

OcrBackend = Literal["local", "azure"]

#: Pages are rendered at this scale (144 dpi), at most :data:`MAX_PIXELS` pixels.
RENDER_SCALE = 2.0
MAX_PIXELS = 6_000_000
#: Pictures smaller than this on either side are icons, bullets or rules: not worth reading.
MIN_PICTURE_SIDE = 24
#: Lines the recogniser is less sure of than this are dropped (debris, textures).
MIN_LINE_SCORE = 0.5

log = logging.getLogger(__name__)


class OcrOptions(BaseModel):
    """How the extraction child does OCR; travels in the child's request as JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: OcrBackend = "local"
    #: Seconds OCR may take in one document (the caller leaves room under its time limit).
    budget: float = Field(default=240.0, gt=0)
    #: onnxruntime threads of the local engine; 0 = one per core.
    threads: int = Field(default=0, ge=0)
    #: Pictures read per DOCX/PPTX at most (a deck of 500 photos is not 500 OCR runs).
    max_pictures: int = Field(default=100, ge=0)
    azure_endpoint: str | None = None
    azure_key: SecretStr | None = None
    azure_api_version: str = "2024-11-30"


@dataclass(frozen=True)
class OcrText:
    """What OCR read in one image: its lines in reading order and their mean confidence."""

    lines: tuple[str, ...]
    confidence: float

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class OcrEngine(Protocol):
    """Reads the text in one image. Raises :class:`OcrError` when the engine itself fails."""

    name: str

    def read(self, image: Pixels) -> OcrText: ...


class OcrError(Exception):
    """The engine could not read an image (not: the image holds no text)."""


class OcrTimeUp(Exception):
    """The OCR budget of this document is spent."""


@dataclass
class Ocr:
    """An engine with the document's time budget, counted from its creation (when the document's
    extraction starts). :meth:`read` refuses (:class:`OcrTimeUp`) when what is left of the budget
    is less than the slowest image so far took, so the document ends with the pages read so far
    instead of being killed at its time limit."""

    engine: OcrEngine
    budget: float
    clock: Callable[[], float] = time.monotonic
    images: int = 0
    _started: float = field(default=0.0, init=False)
    _slowest: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._started = self.clock()

    def read(self, image: Pixels) -> OcrText:
        now = self.clock()
        left = self.budget - (now - self._started)
        if left <= 0 or left < self._slowest:
            raise OcrTimeUp(f"the OCR time budget ({self.budget:g} s) is spent")
        result = self.engine.read(image)
        self._slowest = max(self._slowest, self.clock() - now)
        self.images += 1
        return result

    def read_picture(self, data: bytes) -> OcrText | None:
        """OCR of an encoded picture (PNG, JPEG, GIF, BMP, TIFF ...); ``None`` for pictures that
        cannot be decoded or are too small to hold text."""
        pixels = decode_picture(data)
        return None if pixels is None else self.read(pixels)


class PictureReader:
    """OCR of a document's pictures: each distinct picture once, at most ``limit`` of them; counts
    what was read, skipped and failed for the extraction's warnings. Without ``ocr`` it only
    counts the pictures (``seen``)."""

    def __init__(self, ocr: Ocr | None, limit: int) -> None:
        self.ocr = ocr
        self.limit = limit
        self.seen = 0
        self.found = 0
        self.out_of_time = 0
        self.failed = 0
        self._done: set[str] = set()

    def read(self, data: bytes, key: str) -> str:
        """The text OCR reads in the picture ``data`` ('' for none, a repeat, or past a limit);
        ``key`` identifies the picture (its part name or digest)."""
        self.seen += 1
        if self.ocr is None or key in self._done or len(self._done) >= self.limit:
            return ""
        self._done.add(key)
        try:
            result = self.ocr.read_picture(data)
        except OcrTimeUp:
            self.out_of_time += 1
            return ""
        except OcrError as error:
            log.info("OCR failed on a picture: %s", error)
            self.failed += 1
            return ""
        text = result.text.strip() if result is not None else ""
        self.found += bool(text)
        return text

    def warnings(self) -> list[str]:
        out = []
        if self.out_of_time:
            out.append(f"{self.out_of_time} pictures were not read: the OCR time budget was spent")
        if self.failed:
            out.append(f"OCR failed on {self.failed} pictures")
        return out


def options_from(settings: Settings) -> OcrOptions | None:
    """The OCR the settings ask for (``PARLEY_OCR``), ``None`` when it is off."""
    if settings.ocr == "off":
        return None
    return OcrOptions(
        backend="azure" if settings.ocr == "azure" else "local",
        threads=settings.ocr_threads,
        azure_endpoint=settings.azure_docintel_endpoint,
        azure_key=settings.azure_docintel_key,
    )


def make_ocr(options: OcrOptions, *, client: httpx.Client | None = None) -> Ocr:
    """The engine ``options`` name, wrapped with the document's budget."""
    engine: OcrEngine
    if options.backend == "azure":
        if not options.azure_endpoint:
            raise OcrError("OCR backend 'azure' needs PARLEY_AZURE_DOCINTEL_ENDPOINT")
        engine = AzureReadOcr(
            endpoint=options.azure_endpoint,
            key=options.azure_key.get_secret_value() if options.azure_key else None,
            api_version=options.azure_api_version,
            client=client,
        )
    else:
        engine = local_engine(options.threads)
    return Ocr(engine, budget=options.budget)


def clean_lines(lines: list[tuple[str, float]]) -> OcrText:
    """Lines above :data:`MIN_LINE_SCORE`, stripped, empty ones dropped. Pure."""
    kept = [(" ".join(text.split()), score) for text, score in lines if score >= MIN_LINE_SCORE]
    kept = [(text, score) for text, score in kept if text]
    if not kept:
        return OcrText((), 0.0)
    return OcrText(tuple(t for t, _ in kept), sum(s for _, s in kept) / len(kept))


# ----------------------------------------------------------------------------------- images


def decode_picture(data: bytes, *, max_pixels: int = MAX_PIXELS * 4) -> Pixels | None:
    """An encoded picture as RGB pixels, scaled down to :data:`MAX_PIXELS`; ``None`` when Pillow
    cannot decode it (EMF/WMF, damaged), it is a decompression bomb, or too small to hold text."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size  # from the header: nothing decoded yet
            if min(width, height) < MIN_PICTURE_SIDE or width * height > max_pixels:
                return None
            image.draft("RGB", (width, height))
            rgb = image.convert("RGB")
            if width * height > MAX_PIXELS:
                factor = (MAX_PIXELS / (width * height)) ** 0.5
                rgb = rgb.resize((max(1, int(width * factor)), max(1, int(height * factor))))
            return np.asarray(rgb, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        log.info("picture not decodable for OCR: %s", error)
        return None


def to_rgb(array: npt.NDArray[Any]) -> Pixels:
    """A grey (H x W or H x W x 1), RGB or RGBA/BGRA array as H x W x 3 bytes."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return np.ascontiguousarray(np.repeat(array[:, :, None], 3, axis=2), dtype=np.uint8)
    return np.ascontiguousarray(array[:, :, :3], dtype=np.uint8)


# ------------------------------------------------------------------------------------ local


@dataclass
class LocalOcr:
    """RapidOCR with the models inside its wheel (see the module docstring). Direction
    classification is off: scans are upright far more often than the 30 % it costs."""

    threads: int = 0
    name: str = "rapidocr"
    _engine: Any = None

    def read(self, image: Pixels) -> OcrText:
        engine = self._load()
        try:
            result = engine(image)
        except Exception as error:  # the engine's own failure, not the image's lack of text
            raise OcrError(f"{type(error).__name__}: {error}") from error
        texts = result.txts or ()
        scores = result.scores or ()
        return clean_lines([(str(t), float(s)) for t, s in zip(texts, scores, strict=False)])

    def _load(self) -> Any:
        if self._engine is None:
            from rapidocr import RapidOCR

            self._engine = RapidOCR(
                params={
                    "Global.log_level": "critical",
                    "Global.use_cls": False,
                    "EngineConfig.onnxruntime.intra_op_num_threads": self.threads or -1,
                    "EngineConfig.onnxruntime.inter_op_num_threads": 1,
                }
            )
        return self._engine


_LOCAL: dict[int, LocalOcr] = {}


def local_engine(threads: int) -> LocalOcr:
    """The child's one local engine per thread count: models load once per child."""
    engine = _LOCAL.get(threads)
    if engine is None:
        engine = _LOCAL[threads] = LocalOcr(threads)
    return engine


# ------------------------------------------------------------------------------------ azure


@dataclass
class AzureReadOcr:
    """Azure AI Document Intelligence ``prebuilt-read``: POST the image, poll the operation
    until it ends, read the lines of its first page. Key auth (``Ocp-Apim-Subscription-Key``)."""

    endpoint: str
    key: str | None
    api_version: str = "2024-11-30"
    client: httpx.Client | None = None
    poll_interval: float = 0.5
    timeout: float = 60.0
    name: str = "azure-document-intelligence"
    sleep: Callable[[float], None] = time.sleep

    def read(self, image: Pixels) -> OcrText:
        import httpx

        client = self.client or httpx.Client(timeout=30.0)
        headers = {"Content-Type": "image/png"}
        if self.key:
            headers["Ocp-Apim-Subscription-Key"] = self.key
        url = (
            f"{self.endpoint.rstrip('/')}/documentintelligence/documentModels/prebuilt-read:analyze"
            f"?api-version={self.api_version}"
        )
        try:
            response = client.post(url, content=encode_png(image), headers=headers)
            if response.status_code != 202 or "operation-location" not in response.headers:
                raise OcrError(
                    f"Document Intelligence answered {response.status_code}: {response.text[:200]}"
                )
            operation = response.headers["operation-location"]
            deadline = time.monotonic() + self.timeout
            while True:
                polled = client.get(
                    operation, headers={k: v for k, v in headers.items() if k != "Content-Type"}
                )
                body = polled.json() if polled.status_code == 200 else {}
                status = body.get("status")
                if status == "succeeded":
                    return _azure_lines(body.get("analyzeResult") or {})
                if status not in ("notStarted", "running") or time.monotonic() > deadline:
                    ended = status or polled.status_code
                    raise OcrError(f"Document Intelligence operation ended {ended}")
                self.sleep(self.poll_interval)
        except httpx.HTTPError as error:
            raise OcrError(f"Document Intelligence unreachable: {error}") from error
        finally:
            if self.client is None:
                client.close()


def _azure_lines(result: dict[str, Any]) -> OcrText:
    lines: list[tuple[str, float]] = []
    for page in result.get("pages") or []:
        words = page.get("words") or []
        confidence = (
            sum(float(w.get("confidence", 1.0)) for w in words) / len(words) if words else 1.0
        )
        lines.extend((str(line.get("content", "")), confidence) for line in page.get("lines") or [])
    return clean_lines(lines)


def encode_png(image: Pixels) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()
