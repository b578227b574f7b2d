"""Image filters: each rule keeps a good image and rejects a crafted bad one; pHash and duplicates."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from filters.config import ImageFilterConfig
from filters.image import (
    AnimatedFilter,
    AspectRatioFilter,
    FormatFilter,
    ImageView,
    PixelCountFilter,
    SideFilter,
    UrlListFilter,
    exact_duplicates,
    first_rejection,
    frame_filters,
    hamming,
    header_filters,
    near_duplicates,
    normalize_format,
    phash,
    phash_hex,
    preference_order,
    url_filters,
)
from tests.support.image_payloads import scene

CFG = ImageFilterConfig()
GOOD = ImageView("http://example.com/a.jpg", "jpeg", 400, 300)


def test_defaults_are_obelics_and_mmc4():
    assert set(CFG.formats) == {"jpeg", "png", "webp"}
    assert (CFG.min_side, CFG.max_side) == (150, 20000)
    assert (CFG.min_aspect_ratio, CFG.max_aspect_ratio) == (0.5, 2.0)
    assert CFG.phash_max_hamming == 5


@pytest.mark.parametrize("name,expected", [("JPEG", "jpeg"), ("jpg", "jpeg"), ("MPO", "jpeg"), ("PNG", "png"),
                                           ("WEBP", "webp"), ("GIF", "gif"), (None, None)])
def test_normalize_format(name, expected):
    assert normalize_format(name) == expected


def test_format_filter_accepts_jpg_alias_and_rejects_gif_svg_unknown():
    f = FormatFilter(["jpg", "png", "webp"])
    assert f.filter(GOOD) is True
    for fmt in ("gif", "svg", None, "bmp"):
        assert f.filter(ImageView("u", fmt, 400, 300)) == (False, "format")


def test_side_filter_both_sides():
    f = SideFilter(150, 20000)
    assert f.filter(ImageView("u", "png", 150, 150)) is True
    assert f.filter(ImageView("u", "png", 149, 400)) == (False, "too_small")
    assert f.filter(ImageView("u", "png", 400, 120)) == (False, "too_small")
    assert f.filter(ImageView("u", "png", 20001, 10000)) == (False, "too_big")


def test_aspect_ratio_bounds_inclusive():
    f = AspectRatioFilter(0.5, 2.0)
    assert f.filter(ImageView("u", "png", 400, 200)) is True
    assert f.filter(ImageView("u", "png", 200, 400)) is True
    assert f.filter(ImageView("u", "png", 401, 200)) == (False, "bad_aspect")
    assert f.filter(ImageView("u", "png", 200, 401)) == (False, "bad_aspect")
    assert f.filter(ImageView("u", "png", 200, 0)) == (False, "bad_aspect")


def test_pixel_count_and_animation():
    assert PixelCountFilter(100 * 100).filter(ImageView("u", "png", 100, 100)) is True
    assert PixelCountFilter(100 * 100).filter(ImageView("u", "png", 101, 100)) == (False, "decompression_bomb")
    assert AnimatedFilter().filter(ImageView("u", "webp", 300, 300, n_frames=1)) is True
    assert AnimatedFilter().filter(ImageView("u", "webp", 300, 300, n_frames=4)) == (False, "animated")


def test_rejections_carry_the_failing_value():
    assert FormatFilter(["jpeg"]).filter(ImageView("u", "gif", 400, 300)).detail == "format gif"
    assert SideFilter(150, 20000).filter(ImageView("u", "png", 400, 120)).detail == "shorter side 120 < 150"
    assert SideFilter(150, 20000).filter(ImageView("u", "png", 20001, 200)).detail == "longer side 20001 > 20000"
    assert AspectRatioFilter(0.5, 2.0).filter(ImageView("u", "png", 500, 200)).detail == "aspect ratio 2.5 > 2.0"
    assert AspectRatioFilter(0.5, 2.0).filter(ImageView("u", "png", 200, 0)).detail == "aspect ratio unknown"
    assert PixelCountFilter(100).filter(ImageView("u", "png", 20, 20)).detail == "pixels 400 > 100"
    assert AnimatedFilter().filter(ImageView("u", "gif", 300, 300, n_frames=3)).detail == "frames 3 > 1"


def test_header_filters_order_format_before_size():
    filters = header_filters(CFG)
    assert first_rejection(filters, GOOD) is None
    # a 1x1 GIF tracking pixel is a format rejection (checked first), a 1x1 PNG is too small
    assert first_rejection(filters, ImageView("u", "gif", 1, 1)) == "format"
    assert first_rejection(filters, ImageView("u", "png", 1, 1)) == "too_small"
    assert first_rejection(filters, ImageView("u", "png", 50000, 50000)) == "decompression_bomb"
    assert first_rejection(frame_filters(CFG), ImageView("u", "png", 300, 300, n_frames=2)) == "animated"


def test_url_list_filter_domains_prefixes_regexes(tmp_path):
    f = UrlListFilter(["ads.example.com", "https://cdn.example.org/private/", "re:/tracking/\\d+", "# comment"])
    assert f.match("http://ads.example.com/a.jpg")
    assert f.match("https://img.ads.example.com/b.png")  # subdomain
    assert not f.match("https://notads.example.com/b.png")
    assert f.match("https://cdn.example.org/private/x.jpg")
    assert not f.match("https://cdn.example.org/public/x.jpg")
    assert f.match("http://x.net/tracking/123.gif")
    assert f.filter(ImageView("http://ads.example.com/a.jpg")) == (False, "banned_url")
    assert UrlListFilter(["example.net"], "opted_out").filter(ImageView("https://www.example.net/a")) == (False, "opted_out")
    banlist = tmp_path / "ban.txt"
    banlist.write_text("# banned\nbad.example\n\n")
    filters = url_filters(ImageFilterConfig(url_banlist_file=str(banlist)))
    assert first_rejection(filters, ImageView("http://bad.example/x.jpg")) == "banned_url"
    assert first_rejection(filters, ImageView("http://good.example/x.jpg")) is None
    assert url_filters(CFG) == []


def test_phash_equals_imagehash():
    imagehash = pytest.importorskip("imagehash")
    images = [scene(300, 240, seed=s) for s in range(12)]
    images += [Image.new("RGB", (200, 200), (30, 60, 90)), Image.new("L", (1, 1), 255), scene(200, 500, 3).convert("L")]
    for im in images:
        assert phash_hex(phash(im)) == str(imagehash.phash(im))


def test_phash_is_robust_to_resize_and_recompression():
    import io

    im = scene(400, 300, seed=5)
    small = im.resize((200, 150), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=40)
    recompressed = Image.open(io.BytesIO(buf.getvalue()))
    h = phash(im)
    assert hamming(h, phash(small)) <= 5
    assert hamming(h, phash(recompressed)) <= 5
    assert hamming(h, phash(scene(400, 300, seed=6))) > 5


def test_phash_of_16bit_scales_instead_of_clipping():
    ramp = np.linspace(0, 65535, 256 * 256).reshape(256, 256).astype(np.uint16)
    h16 = phash(Image.fromarray(ramp))  # mode I;16
    h8 = phash(Image.fromarray((ramp // 257).astype(np.uint8)))
    assert hamming(h16, h8) <= 2


def test_preference_order_most_pixels_then_smallest_url():
    assert preference_order([100, 400, 400, 50], ["d", "c", "b", "a"]) == [2, 1, 0, 3]


def test_exact_duplicates_keep_first_in_order():
    digests = ["x", "y", "x", "x"]
    out = exact_duplicates(digests, order=[2, 0, 1, 3])
    assert out.tolist() == [2, -1, -1, 2]


def test_near_duplicates_no_chaining_and_deterministic():
    a = 0
    b = 0b111  # distance 3 from a
    c = 0b111111  # distance 3 from b, 6 from a
    out = near_duplicates(np.array([a, b, c], dtype=np.uint64), order=[0, 1, 2], max_distance=5)
    # b is a near duplicate of a; c is not within 5 of the kept a, so it stays (no a~b~c chain)
    assert out.tolist() == [-1, 0, -1]
    assert near_duplicates(np.array([a, b, c], dtype=np.uint64), order=[1, 0, 2], max_distance=5).tolist() == [1, -1, 1]


def test_near_duplicates_band_index_equals_brute_force():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, size=60, dtype=np.uint64)
    flips = [np.uint64(1) << np.uint64(b) for b in rng.integers(0, 64, size=200)]
    hashes = [base[i % 60] ^ flips[i] ^ (flips[(i * 7) % 200] if i % 3 == 0 else np.uint64(0)) for i in range(200)]
    hashes = np.array(list(base) + hashes, dtype=np.uint64)
    order = list(rng.permutation(len(hashes)))
    for k in (0, 3, 5, 20):
        fast = near_duplicates(hashes, order, k)
        kept: list[int] = []
        brute = np.full(len(hashes), -1)
        rank = {v: r for r, v in enumerate(order)}
        for i in order:
            d = [int(hamming(hashes[j], hashes[i])) for j in kept]
            close = [(dd, rank[j], j) for dd, j in zip(d, kept) if dd <= k]
            if close:
                brute[i] = min(close)[2]
            else:
                kept.append(i)
        assert fast.tolist() == brute.tolist(), k


def test_config_validation():
    from curation.config import PipelineConfig
    from curation.errors import ConfigError

    with pytest.raises(ConfigError, match="phash_max_hamming"):
        PipelineConfig.load(None, {"image_filters.phash_max_hamming": 65})
    with pytest.raises(ConfigError, match="min_side"):
        PipelineConfig.load(None, {"image_filters.min_side": 30000})
    assert PipelineConfig.load(None, {"image_filters.phash_max_hamming": -1}).image_filters.phash_max_hamming == -1
