"""Face counts and boxes per image with OpenCV's bundled Haar cascade (no download, CPU only).

Why this detector: its weights ship inside the ``opencv-python-headless`` wheel
(``cv2.data.haarcascades``), which img2dataset already pulls in, so it works offline with the
pinned torch and adds no model download. It finds frontal and near-frontal faces; profiles,
faces looking down and very small faces are missed more often than by the CNN detectors
MMC4 (RetinaFace) and DataComp used, so the ``is_fewer_faces`` flag is a lower bound on
faces, not a privacy guarantee (docs/safety.md has the measured recall and precision on labelled COCO photos,
on a tuning split and a held-out one).

Shapes follow MMC4's ``image_info[].face_detections``: ``None`` when no face was found (what
every image of MMC4's "fewer faces" release carries), else a list of boxes
``[x0, y0, x1, y1]`` in pixels of the original image. MMC4's fewer-faces rule (allenai/mmc4
README: mmc4-ff keeps 375M of 571M images but 77.7M of 101.2M documents): images with a
detected face are removed and a document stays while it has an image left, so

- a pair / an image is fewer-faces when it has no detected face;
- a document is fewer-faces when at least one of its images has none (:func:`document_is_fewer_faces`).

Detection works on a grey copy decoded at most ``max_side`` pixels wide (JPEG draft mode: the
decoder scales by 1/2, 1/4, 1/8 itself), in a thread pool: OpenCV releases the GIL.
"""
from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np

CASCADE = "haarcascade_frontalface_alt2.xml"  # fewest false faces of the bundled frontal cascades on labelled COCO photos


@dataclass(frozen=True)
class FaceSettings:
    """detectMultiScale's settings, chosen on the ``tune`` split of tests/models/fixtures/face_labels.json
    (48 labelled COCO photos; the 32 of ``report`` were not looked at while choosing).

    Rule: the most photos with faces found, then the fewest false ones, at <= 10% of the score stage's
    CPU per image (bench/safety.py). The old settings (400 px, scale 1.1, 3 neighbours, 16 px) cost
    ~74 ms of CPU per image; these ~19 ms, with the same recall on ``tune`` (6 of 14) and no false
    face there (the old ones: 3). Coarser scale steps are what makes it cheap (the cascade scans
    the picture once per scale); one neighbour keeps the recall the coarser steps would lose.
    Numbers per split: docs/safety.md.
    """

    max_side: int = 440  # longer side of the grey copy the cascade scans
    scale_factor: float = 1.35
    min_neighbors: int = 1
    min_size: int = 28  # px in the scanned copy (6% of its longer side: smaller faces are not looked for)
    threads: int = 2


_local = threading.local()


def _cascade(name: str = CASCADE):
    """This thread's classifier: one CascadeClassifier is not safe to share between threads."""
    det = getattr(_local, "cascade", None)
    if det is None:
        det = _local.cascade = _load_cascade(name)
    return det


def _load_cascade(name: str):
    import cv2

    det = cv2.CascadeClassifier(cv2.data.haarcascades + name)
    if det.empty():  # the wheel without its data folder: say where it looked
        from curation.errors import ModelLoadError

        raise ModelLoadError(f"OpenCV face cascade not found at {cv2.data.haarcascades + name}; "
                             "reinstall opencv-python-headless (it ships the cascades) or set safety.faces: false")
    return det


def _grey(blob: bytes, max_side: int) -> tuple[np.ndarray, float] | None:
    """A grey uint8 copy with its longer side <= max_side, and the factor back to original pixels."""
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(blob))
        w, h = im.size
        if im.format == "JPEG":
            im.draft("L", (max_side, max_side))
        im = im.convert("L")
        if max(im.size) > max_side:
            im.thumbnail((max_side, max_side))
        return np.asarray(im), w / im.size[0]
    except Exception:  # undecodable bytes: the score stage already names the reason; no faces here
        return None


def detect_one(blob: bytes | None, settings: FaceSettings = FaceSettings()) -> list[list[int]] | None:
    """MMC4's ``face_detections`` of one encoded image: None (no face, or not decodable) or boxes."""
    if not blob:
        return None
    g = _grey(blob, settings.max_side)
    if g is None:
        return None
    import cv2

    grey, scale = g
    cv2.setNumThreads(1)  # parallelism comes from the pool, one image per thread
    found = _cascade().detectMultiScale(cv2.equalizeHist(grey), scaleFactor=settings.scale_factor,
                                        minNeighbors=settings.min_neighbors, minSize=(settings.min_size, settings.min_size))
    if len(found) == 0:
        return None
    boxes = sorted([round(x * scale), round(y * scale), round((x + w) * scale), round((y + h) * scale)]
                   for x, y, w, h in np.asarray(found).tolist())
    return boxes


def detect_faces(blobs: Sequence[bytes | None], settings: FaceSettings = FaceSettings()) -> list[list[list[int]] | None]:
    """``face_detections`` of each image, in order, decoded and scanned in ``settings.threads`` threads."""
    if settings.threads <= 1 or len(blobs) <= 1:
        return [detect_one(b, settings) for b in blobs]
    import cv2  # noqa: F401  (imported once here: a first import racing in several threads is half-initialised)

    with ThreadPoolExecutor(settings.threads, thread_name_prefix="faces") as pool:
        return list(pool.map(lambda b: detect_one(b, settings), blobs))


def face_counts(detections: Sequence[list | None]) -> np.ndarray:
    return np.array([len(d) if d else 0 for d in detections], dtype=np.int32)


def document_is_fewer_faces(image_face_counts: Sequence[int]) -> bool:
    """MMC4's rule for a document: it keeps at least one image without a detected face."""
    return any(c == 0 for c in image_face_counts)


# --------------------------------------------------------------------------- blurring (the release stage)

_SAVE = {"JPEG": dict(quality=95), "WEBP": dict(quality=95), "PNG": {}}


def blur_boxes(blob: bytes, boxes: Sequence[Sequence[int]] | None) -> bytes:
    """``blob`` with each ``[x0, y0, x1, y1]`` box (original pixels) Gaussian-blurred, re-encoded in its format.

    As DataComp released its images: the box only, strongly enough that the face is not recognisable
    (radius a quarter of the box's longer side), the rest of the picture as it was (JPEG/WebP re-encoded at
    quality 95: pixels outside the boxes move by a few levels, not more). No box: the same bytes back.
    EXIF (orientation) is kept, since the boxes are in the pixels as stored, not as a viewer rotates them.
    """
    if not boxes:
        return blob
    from PIL import Image, ImageFilter

    im = Image.open(io.BytesIO(blob))
    fmt, exif = im.format, im.info.get("exif")
    im.load()
    if im.mode not in ("RGB", "RGBA", "L"):
        im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
    if fmt == "JPEG" and im.mode == "RGBA":
        im = im.convert("RGB")
    w, h = im.size
    for x0, y0, x1, y1 in boxes:
        x0, y0, x1, y1 = max(0, int(x0)), max(0, int(y0)), min(w, int(x1)), min(h, int(y1))
        if x1 <= x0 or y1 <= y0:
            continue
        region = im.crop((x0, y0, x1, y1))
        im.paste(region.filter(ImageFilter.GaussianBlur(max(2.0, max(x1 - x0, y1 - y0) / 4))), (x0, y0))
    out = io.BytesIO()
    fmt = fmt if fmt in _SAVE else "PNG"  # the release keeps only jpeg/png/webp; anything else as lossless PNG
    im.save(out, fmt, **_SAVE[fmt], **({"exif": exif} if exif and fmt in ("JPEG", "WEBP") else {}))
    return out.getvalue()


# --------------------------------------------------------------------------- Arrow columns for the stages

def face_arrow_type():
    """MMC4's ``face_detections``: a list of boxes ``[x0, y0, x1, y1]`` (int32 pixels), null when none."""
    import pyarrow as pa

    return pa.list_(pa.list_(pa.int32()))


@dataclass
class FaceColumns:
    """Per row: face count (-1 = not computed) and MMC4's ``face_detections`` (None = no face / not computed)."""

    count: np.ndarray
    detections: list

    @classmethod
    def empty(cls, n: int) -> "FaceColumns":
        return cls(np.full(n, -1, dtype=np.int32), [None] * n)

    def fill(self, rows: np.ndarray, blobs: Sequence[bytes | None], settings: FaceSettings = FaceSettings()) -> None:
        """Detect faces in ``blobs`` (one per index of ``rows``) and store them at those rows."""
        dets = detect_faces(blobs, settings)
        for r, d in zip(np.asarray(rows).tolist(), dets):
            self.count[r] = len(d) if d else 0
            self.detections[r] = d

    def arrays(self) -> dict:
        """``face_count``, ``face_detections``, ``is_fewer_faces`` as Arrow arrays (null where not computed)."""
        import pyarrow as pa

        known = self.count >= 0
        return {
            "face_count": pa.array(self.count, pa.int32(), mask=~known),
            "face_detections": pa.array(self.detections, face_arrow_type()),
            "is_fewer_faces": pa.array(self.count == 0, pa.bool_(), mask=~known),
        }

    def table(self):
        import pyarrow as pa

        return pa.table(self.arrays())


def gather_faces(tables: Sequence[str], file_idx: np.ndarray, row: np.ndarray) -> FaceColumns:
    """Rows ``row`` of the per-shard face tables ``tables[file_idx]`` (written by :meth:`FaceColumns.table`)."""
    import pyarrow.parquet as pq
    from fsspec.core import url_to_fs

    out = FaceColumns.empty(len(file_idx))
    for f in np.unique(file_idx[file_idx >= 0]).tolist():
        fs, p = url_to_fs(tables[f])
        if not fs.exists(p):  # faces were off when that shard ran
            continue
        with fs.open(p, "rb") as fh:
            t = pq.read_table(fh)
        sel = np.flatnonzero(file_idx == f)
        counts = t.column("face_count").fill_null(-1).to_numpy(zero_copy_only=False)
        dets = t.column("face_detections").to_pylist()
        for i in sel.tolist():
            out.count[i] = counts[row[i]]
            out.detections[i] = dets[row[i]]
    return out


def mmc4_schema_with_faces(schema):
    """MMC4's document schema with ``image_info[].face_detections`` and a document ``is_fewer_faces``."""
    import pyarrow as pa

    i = schema.get_field_index("image_info")
    info = schema.field(i).type.value_type
    fields = [info.field(k) for k in range(info.num_fields)] + [pa.field("face_detections", face_arrow_type())]
    schema = schema.set(i, pa.field("image_info", pa.list_(pa.struct(fields))))
    return schema.append(pa.field("is_fewer_faces", pa.bool_()))
