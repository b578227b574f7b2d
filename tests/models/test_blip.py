"""BLIP pieces: offline tokenizer, save/load round trip, preprocessing, generation, ITM scores, losses."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from models import blip as B
from curation.errors import ModelLoadError

CAPTIONS = [f"{n} {c} {s} on a {bg} background" for n in ("one", "two", "three") for c in ("red", "blue", "green")
            for s in ("circles", "squares") for bg in ("white", "grey")]


def _img(colour, size=(50, 40)) -> Image.Image:
    return Image.new("RGB", size, colour)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An untrained tiny captioner and filter saved with their processor (what curate train exports)."""
    from transformers import BlipForConditionalGeneration, BlipForImageTextRetrieval

    d = tmp_path_factory.mktemp("blip")
    torch.manual_seed(0)
    tok = B.build_tokenizer(CAPTIONS, d / "tok", vocab_size=300)
    cfg = B.tiny_blip_config(tok, "tiny", image_size=32)
    proc = B.make_processor(tok, 32)
    cap = B.save_blip(BlipForConditionalGeneration(cfg), proc, d / "captioner", {"role": "captioner", "prompt": "a picture of "})
    fil = B.save_blip(BlipForImageTextRetrieval(cfg), proc, d / "filter", {"role": "filter", "itm_first_token": "enc"})
    return tok, cap, fil


def test_tokenizer_has_blip_special_tokens_and_no_unknown_words(tiny, tmp_path):
    tok, _, _ = tiny
    again = B.build_tokenizer(reversed(CAPTIONS), tmp_path, vocab_size=300)
    assert again.get_vocab() == tok.get_vocab()  # deterministic: a rerun or a resume gets the same ids
    assert tok.pad_token_id == 0 and tok.cls_token_id == 2 and tok.sep_token_id == 3
    assert tok.bos_token == "[DEC]" and tok.bos_token_id == len(tok) - 2
    assert B.enc_token_id(tok) == len(tok) - 1
    ids = tok("A zebra quickly jumped over 7 lazy dogs!").input_ids
    assert tok.unk_token_id not in ids  # unseen words fall back to characters
    assert tok.decode(ids, skip_special_tokens=True) == "a zebra quickly jumped over 7 lazy dogs!"


def test_save_and_from_pretrained_round_trip(tiny):
    from transformers import AutoProcessor, BlipForImageTextRetrieval

    tok, _, fil = tiny
    bundle = B.load_filter(fil, device="cpu")
    again = BlipForImageTextRetrieval.from_pretrained(fil)
    sa, sb = bundle.model.state_dict(), again.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    proc = AutoProcessor.from_pretrained(fil)
    assert proc.tokenizer("two red circles").input_ids == tok("two red circles").input_ids
    assert proc.tokenizer.bos_token_id == tok.bos_token_id
    assert bundle.itm_first_token == "enc"  # what vlc_blip.json records
    assert B.load_filter(fil, device="cpu", itm_first_token="cls").itm_first_token == "cls"


def test_pixel_transform_matches_the_blip_processor(tiny):
    _, cap, _ = tiny
    bundle = B.load_captioner(cap, device="cpu")
    ims = [_img((200, 30, 30), (64, 48)), Image.effect_noise((80, 60), 64).convert("RGB")]
    ours = bundle.pixels(ims)
    theirs = bundle.processor(images=ims, return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape == (2, 3, 32, 32)
    assert float((ours - theirs).abs().mean()) < 0.02


def test_generate_captions_batched_sampled_and_beam(tiny):
    _, cap, _ = tiny
    bundle = B.load_captioner(cap, device="cpu")
    bad = b"not an image"
    buf = io.BytesIO()
    _img((0, 0, 200)).save(buf, format="PNG")
    ims = [_img((200, 0, 0)), bad, buf.getvalue()]
    out = B.generate_captions(bundle, ims, num_captions=2, max_length=12, min_length=3, seed=1)
    assert out[1] is None and len(out[0]) == 2 and len(out[2]) == 2
    assert all(isinstance(c, str) and not c.startswith("a picture of") for c in out[0] + out[2])
    assert out == B.generate_captions(bundle, ims, num_captions=2, max_length=12, min_length=3, seed=1)
    beams = B.generate_captions(bundle, ims, sample=False, num_beams=2, max_length=10, min_length=2)
    assert beams[1] is None and len(beams[0]) == 1


def test_itm_scores_share_image_encodings_and_honour_the_first_token(tiny):
    _, _, fil = tiny
    bundle = B.load_filter(fil, device="cpu")
    ims = [_img((200, 0, 0)), _img((0, 200, 0))]
    texts = ["a red square", "a green square", "a red circle"]
    by_index = B.itm_scores(bundle, ims, texts, image_index=[0, 1, 0])
    explicit = B.itm_scores(bundle, [ims[0], ims[1], ims[0]], texts)
    assert np.allclose(by_index, explicit, atol=1e-6)
    assert ((by_index >= 0) & (by_index <= 1)).all()
    cls_first = B.itm_scores(bundle, ims, texts, image_index=[0, 1, 0], first_token="cls")
    assert not np.allclose(by_index, cls_first)
    with_bad = B.itm_scores(bundle, [b"broken", ims[1]], texts[:2])
    assert np.isnan(with_bad[0]) and not np.isnan(with_bad[1])
    img, txt = B.itc_image_embeddings(bundle, ims), B.itc_text_embeddings(bundle, texts)
    assert img.shape == (2, 64) and np.allclose(np.linalg.norm(txt, axis=1), 1, atol=1e-5)


def test_itc_itm_loss_trains_cross_attention_and_survives_one_picture_batches(tiny):
    tok, _, fil = tiny
    bundle = B.load_filter(fil, device="cpu")
    model = bundle.model.train()
    px = bundle.pixels([_img((200, 0, 0)), _img((0, 200, 0)), _img((0, 0, 200)), _img((200, 0, 0))])
    enc = tok(["a red square", "a green square", "a blue square", "red"], return_tensors="pt", padding=True)
    temp = torch.nn.Parameter(torch.tensor(0.07))
    emb = model.vision_model(pixel_values=px).last_hidden_state
    ids = torch.tensor([1, 2, 3, 1])  # images 0 and 3 are the same picture: positives of each other
    itc, itm, acc = B.itc_itm_loss(model, emb, enc.input_ids, enc.attention_mask, ids, temp, B.enc_token_id(tok), 0.5)
    (itc + itm).backward()
    grad = model.text_encoder.encoder.layer[0].crossattention.self.query.weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0 and temp.grad is not None
    same = torch.tensor([5, 5, 5, 5])
    emb = model.vision_model(pixel_values=px).last_hidden_state
    itc, itm, _ = B.itc_itm_loss(model, emb, enc.input_ids, enc.attention_mask, same, temp)
    assert torch.isfinite(itc) and torch.isfinite(itm)


def test_missing_or_unreachable_models_fail_with_a_hint(tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="not found"):
        B.load_captioner(str(tmp_path / "nope"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network retries in the test
    with pytest.raises(ModelLoadError, match="Offline"):
        B.load_filter("Salesforce/blip-itm-base-coco-not-cached")
