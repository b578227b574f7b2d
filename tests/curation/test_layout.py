"""Cutting positions and paragraphs out of a document: the three lists stay aligned, neighbours join."""
from __future__ import annotations

import json

from curation.layout import PARAGRAPH_SEP, WHOLE_POSITION, cut_positions, drop_images, load_metadata


def test_paragraphs_and_positions_cut_bytes_kept_undecoded():
    """Dedup's case: texts as bytes (never decoded), paragraphs and whole positions dropped."""
    texts = [b"intro\n\nboiler\n\nmore", None, b"caf\xe9 not utf-8\n\nboiler", None, b"tail"]
    images = [None, "a.jpg", None, "b.jpg", None]
    meta = [None, {"src": "a.jpg"}, None, {"src": "b.jpg"}, None]
    t, i, m = cut_positions(texts, images, meta, {0: {1}, 2: {1}, 3: {WHOLE_POSITION}})
    assert t == [b"intro\n\nmore", None, b"caf\xe9 not utf-8\n\ntail"]  # b.jpg gone: texts around it joined
    assert i == [None, "a.jpg", None] and m == [None, {"src": "a.jpg"}, None]
    t, i, m = cut_positions([b"only boiler", None], [None, "a.jpg"], "not a list", {0: {0}})
    assert (t, i, m) == ([None], ["a.jpg"], [{"src": "a.jpg"}])  # empty position dropped, metadata rebuilt


def test_images_not_kept_are_cut_and_texts_rejoined():
    """The images stage's case: str texts, every image position not kept goes."""
    texts = ["a", None, "b", None, None, "c"]
    images = [None, "u1", None, "u2", "u3", None]
    meta = [None, {"src": "u1", "alt_text": "x"}, None, {"src": "u2"}, {"src": "u3"}, None]
    drop = drop_images(images, keep={1, 4})
    assert drop == {3: {WHOLE_POSITION}}
    t, i, m = cut_positions(texts, images, meta, drop)
    assert t == ["a", None, "b", None, "c"] and i == [None, "u1", None, "u3", None]
    assert m == [None, {"src": "u1", "alt_text": "x"}, None, {"src": "u3"}, None]
    t, i, m = cut_positions(texts, images, meta, drop_images(images, keep=set()))
    assert t == ["a" + PARAGRAPH_SEP + "b" + PARAGRAPH_SEP + "c"] and i == [None] and m == [None]


def test_nothing_dropped_is_the_identity_and_metadata_is_rebuilt_when_unusable():
    texts, images = ["a", None, "b"], [None, "u", None]
    meta = [None, {"src": "u", "alt_text": "alt"}, None]
    assert cut_positions(texts, images, meta, {}) == (texts, images, meta)
    rebuilt = [None, {"src": "u"}, None]
    assert cut_positions(texts, images, meta[:2], {})[2] == rebuilt  # wrong length
    assert cut_positions(texts, images, {"src": "u"}, {})[2] == rebuilt  # not a list
    assert cut_positions(texts, images, None, {})[2] == rebuilt


def test_load_metadata():
    assert load_metadata(None) is None
    assert load_metadata("not json") is None
    assert load_metadata(json.dumps([None, {"src": "u"}])) == [None, {"src": "u"}]


def test_the_text_filters_use_the_one_separator():
    from filters.text_pipeline import PARAGRAPH_SEPARATOR

    assert PARAGRAPH_SEPARATOR is PARAGRAPH_SEP
