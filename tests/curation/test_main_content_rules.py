"""Main-content mode, the block rules added to close the recall gap to trafilatura (issue 14), each on small HTML.

Every rule here was chosen on the dev split of bench/extract_quality.py (per-page differences against
trafilatura); docs/extraction.md lists them with what each one changed on dev.
"""
from __future__ import annotations

from curation.html_extract import extract_page

PROSE = ("The committee met on Tuesday to discuss the new bridge, and after a long debate it agreed that "
         "the old one should stay open until the work is done. ")
MORE = ("Residents who spoke at the meeting said the detour had doubled their commute, and the council "
        "promised a shuttle bus for the months of the closure. ")


def _text(html: str) -> str:
    page = extract_page(html, "http://a/", mode="main_content")
    return "\n".join(p for it in page.items if isinstance(it, list) for p in it)


def test_credit_line_under_an_image_is_its_caption_not_article_text():
    html = (f"<html><body><article><p>{PROSE}</p><img src='/a.jpg'><div>Roman Prymula, photo: Archives</div>"
            f"<p>{MORE}</p><img src='/b.jpg'><p>The mayor, in 2019 | © AFP</p><p>{PROSE}</p></article></body></html>")
    text = _text(html)
    assert "Archives" not in text and "AFP" not in text
    assert text.count("committee") == 2 and "Residents" in text
    # A caption line followed by its credit line goes with the image too; stock-agency names are credits.
    html = (f"<html><body><article><p>{PROSE}</p><img src='/a.jpg'><div>The project area on the river</div>"
            f"<div>© E. Schwinge</div><p>{MORE}</p><img src='/b.jpg'><p>The ermine in winter (mlharing / iStock.com)</p>"
            f"<p>{PROSE}</p></article></body></html>")
    text = _text(html)
    assert "project area" not in text and "Schwinge" not in text and "ermine" not in text and "Residents" in text
    # The same kind of line that does not sit under an image is text.
    assert "Archives of the council, photo: ours" in _text(
        f"<html><body><article><p>{PROSE}</p><p>Archives of the council, photo: ours</p><p>{MORE}</p></article></body></html>")


def test_short_signoff_after_the_article_is_kept_inside_a_root():
    html = (f"<html><body><div class='entry-content'><p>{PROSE}</p><p>{MORE}</p><p>x Franzi</p>"
            f"<img src='/me.jpg'></div><div class='footer-links'><a href='/i'>Impressum</a></div></body></html>")
    assert _text(html).endswith("x Franzi")
    # A short line that ends with a colon introduces what follows (a link list): it goes with it.
    html = (f"<html><body><div class='entry-content'><p>{PROSE}</p><p>{MORE}</p><p>Read also:</p>"
            f"<p><a href='/1'>Another story about bridges</a></p></div></body></html>")
    assert "Read also" not in _text(html)


def test_numbers_in_a_table_cell_are_data_not_counters():
    rows = "".join(f"<tr><td>Consumption in litres</td><td>{v}</td></tr>" for v in ("1,6", "37", "4.2"))
    html = f"<html><body><article><p>{PROSE}</p><table>{rows}</table><p>{MORE}</p></article></body></html>"
    text = _text(html)
    assert "1,6" in text and "37" in text and "4.2" in text
    # Outside a table a line without letters is still a counter or a page number.
    assert "2/17" not in _text(f"<html><body><p>{PROSE}</p><div>2/17</div><p>{MORE}</p></body></html>")


def test_a_heading_with_a_navigation_id_is_a_heading():
    html = (f"<html><body><article><p>{PROSE}</p><h3 id='nav_only_the_foil_is_left'>Only the foil is left</h3>"
            f"<p>{MORE}</p><div id='nav-footer'><a href='/x'>Contact</a></div></article></body></html>")
    text = _text(html)
    assert "Only the foil is left" in text and "Contact" not in text


def test_article_body_root_widens_to_its_article_for_the_lead():
    lead = "Kaum zu fassen, dass diese Geschichte wirklich passiert ist: ein Hund im Beton."
    html = (f"<html><body><div class='menu'><a href='/'>Start</a></div><article class='node'>"
            f"<div class='field-name-field-intro-text'><p>{lead}</p></div>"
            f"<div class='field-name-body'><p>{PROSE}</p><p>{MORE}</p><p>{PROSE}</p></div></article>"
            f"<div class='teasers'><p>{MORE}{MORE}{MORE}{MORE}{MORE}</p></div></body></html>")
    text = _text(html)
    assert text.startswith(lead) and "Start" not in text
    # An <article> holding much more than its body field (a listing around it) is not taken.
    listing = "".join(f"<h2><a href='/{i}'>Story {i}</a></h2><p>{MORE}</p>" for i in range(6))
    html = (f"<html><body><article><h2>{lead}</h2>{listing}<div class='entry-content'><p>{PROSE}</p><p>{PROSE}</p></div>"
            f"</article></body></html>")
    assert lead not in _text(html)


def test_elements_between_the_body_container_and_its_article_are_never_furniture():
    html = (f"<html><body><article class='article sticky-sidebar-parent'><h1>A bridge</h1>"
            f"<div class='article-content sticky-sidebar-relative'><div class='the-content'><p>{PROSE}</p><p>{MORE}</p>"
            f"</div></div><div class='sidebar'><a href='/1'>Most read</a></div></article>"
            + f"<div class='comment'><p>{MORE * 2}</p></div>" * 3 + "</body></html>")
    text = _text(html)
    assert "committee" in text and "Residents" in text and "Most read" not in text


def test_text_is_nfc_whichever_way_the_page_spells_a_letter():
    decomposed = "Besonders bei Babyschalen sollte gepru\u0308ft werden, ob die Gurtla\u0308nge ausreicht."
    text = _text(f"<html><body><article><p>{PROSE}</p><p>{decomposed}</p></article></body></html>")
    assert "geprüft" in text and "Gurtlänge" in text and "\u0308" not in text


def test_a_short_cjk_sentence_counts_as_a_sentence():
    zh = ("越是到疫情防控最为吃劲的时候，越是需要汇聚信心与力量。武汉封城二十七天后，湖北以外地区新冠肺炎每日确诊病例迎来十五连降，"
          "湖北神农架林区确诊病例全部治愈。疫情虽在持续，但希望就在继续。")
    last = "正是有了英勇的你们，才有这座英雄的城！（评论员 罗博 萧海川）"
    html = (f"<html><body><div><a href='/1'>首页</a> <a href='/2'>新闻</a></div><div><p>{zh}</p><p>{zh}</p><p>{last}</p></div>"
            f"<div><a href='/3'>图集</a></div></body></html>")
    assert _text(html).endswith(last)  # ends with a full-width bracket: a sentence
    unpunctuated = "评论员罗博萧海川认为英雄的城市值得我们每一个人尊敬和学习"  # 28 characters, 84 weighted
    assert _text(html.replace(last, unpunctuated)).endswith(unpunctuated)


def test_ad_names_furniture_only_at_the_start_of_a_class():
    from curation.main_content import is_furniture_container

    assert is_furniture_container({"class": "ad-slot"}) and is_furniture_container({"class": "ads"})
    assert is_furniture_container({"id": "ads-top"})
    assert not is_furniture_container({"class": "cuerpo-ad"})  # the article body, with ads in it
    # An ad slot named this way is not skipped by its class; it holds no prose, so the blocks drop it.
    assert not is_furniture_container({"class": "header-ad"})


def test_author_boxes_are_furniture():
    from curation.main_content import is_furniture_container

    assert is_furniture_container({"class": "author-description"}) and is_furniture_container({"id": "post-author"})
    bio = "Jake is the co-founder of a consultancy and writes about systems programming; follow him online."
    html = (f"<html><body><article><p>{PROSE}</p><p>{MORE}</p><div class='td-author-box'><p>{bio}</p></div></article>"
            f"</body></html>")
    assert "co-founder" not in _text(html)


def test_a_large_data_table_is_classified_in_linear_time():
    import time

    rows = "".join(f"<tr><td>{i}</td><td>{i * 3}</td><td>x</td></tr>" for i in range(20_000))
    html = f"<html><body><article><p>{PROSE}</p><table>{rows}</table><p>{MORE}</p></article></body></html>"
    start = time.perf_counter()
    _text(html)
    # Scanning for each undecided block to its nearest decided ones was quadratic in a run of them (60,000
    # cells here: about 1.8e9 steps).
    assert time.perf_counter() - start < 10


def test_numbered_furniture_names_are_furniture():
    from curation.main_content import is_furniture_container

    assert is_furniture_container({"id": "footer2"}) and is_furniture_container({"class": "sidebar-1 col"})
    assert not is_furniture_container({"class": "h2 col-12"})


def test_donation_boxes_are_furniture():
    from curation.main_content import is_furniture_container

    assert is_furniture_container({"id": "donation", "class": "mollie-donation-form-holder"})
    assert is_furniture_container({"class": "donate-box"})


def test_without_a_root_prose_outside_the_densest_element_is_dropped():
    cookie = ("Wir verwenden Cookies, um Inhalte und Anzeigen zu personalisieren und die Zugriffe auf unsere "
              "Website zu analysieren. Mit der weiteren Nutzung stimmen Sie dem zu.")
    html = (f"<html><body><div class='x1'><div class='x2'><p>{PROSE}</p><p>{MORE}</p><p>{PROSE}</p><p>{MORE}</p>"
            f"<p>{PROSE}</p></div></div><div class='x3'><p>{cookie}</p></div></body></html>")
    text = _text(html)
    assert "Cookies" not in text and text.count("committee") == 3
    # Prose in two sibling containers, neither holding most of it: both kept.
    html = (f"<html><body><div class='x1'><p>{PROSE}</p><p>{MORE}</p></div><div class='x3'><p>{PROSE}</p>"
            f"<p>{cookie}</p></div></body></html>")
    assert "Cookies" in _text(html)
