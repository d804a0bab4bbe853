"""The frame of every page (issue 14, point 9): the product's configured name in the header and
the tab title, the agency's emblem when one is configured, a favicon served and linked from
every page, and the 404 page's contact of the issuing office, as configured."""

from __future__ import annotations

import re

from tests.fixtures.routes import is_api, route_urls

PRODUCT = "Văn thư điện tử Cục THH"
CONTACT = {
    "DISPATCH_CONTACT_NAME": "Văn phòng Cục Tin học hoá",
    "DISPATCH_CONTACT_EMAIL": "van-phong@thh.example",
    "DISPATCH_CONTACT_PHONE": "024 3943 7215",
}


def _pages(app, route_arguments, role_clients):
    """(who, url, html) of every page a browser gets for a GET, for every role."""
    browsers = {role.value: client for role, client in role_clients.items()}
    browsers[""] = app.test_client()
    for rule, url in route_urls(app, route_arguments, "GET"):
        if is_api(rule) or rule.endpoint == "static":
            continue
        for who, client in browsers.items():
            response = client.get(url)
            response.close()
            shown = not 300 <= response.status_code < 400  # a page, not a redirect
            if shown and response.mimetype == "text/html" and b"<html" in response.data:
                yield who, url, response.get_data(as_text=True)


def test_every_page_names_the_product_and_links_the_favicon(app, route_arguments, role_clients):
    app.config["DISPATCH_PRODUCT_NAME"] = PRODUCT
    app.config["DISPATCH_EMBLEM"] = "img/quoc-huy.svg"
    favicon = app.test_client().get("/static/favicon.svg")
    assert favicon.status_code == 200 and favicon.mimetype == "image/svg+xml"
    assert b"<svg" in favicon.data
    favicon.close()

    seen, framed = 0, 0
    for who, url, html in _pages(app, route_arguments, role_clients):
        seen += 1
        where = f"{url} as {who or 'anonymous'}"
        assert re.search(r'<link rel="icon" href="/static/favicon\.svg"', html), where
        title = re.search(r"<title>(.*?)</title>", html, re.S).group(1)
        assert PRODUCT in title and "Dispatch" not in title, (where, title)
        if 'class="site-name"' in html:  # the pages with the site's header
            framed += 1
            header = re.search(r'<p class="site-name">(.*?)</p>', html, re.S).group(1)
            assert PRODUCT in header and "Dispatch" not in header, where
            assert '<img class="emblem" src="/static/img/quoc-huy.svg"' in header, where
    assert seen > 30 and framed > 20, (seen, framed)


def test_no_emblem_configured_shows_none(client, db_app):
    db_app.config["DISPATCH_EMBLEM"] = ""
    html = client.get("/login").get_data(as_text=True)
    assert 'class="site-name"' in html and "emblem" not in html


def test_the_404_page_gives_the_configured_contact(app, client, db_app, clerk_client):
    app.config.update(CONTACT)
    for who, browser in (("anonymous", client), ("clerk", clerk_client)):
        for url in ("/khong-co-trang-nay", "/r/khong-co-lien-ket-nay"):
            response = browser.get(url)
            assert response.status_code == 404, (who, url)
            html = response.get_data(as_text=True)
            assert "Liên hệ nơi ban hành" in html, (who, url)
            assert CONTACT["DISPATCH_CONTACT_NAME"] in html
            assert 'href="mailto:van-phong@thh.example"' in html
            assert 'href="tel:02439437215">024 3943 7215</a>' in html

    # Without an e-mail of its own, the contact is the sender of the letters.
    app.config.update(DISPATCH_CONTACT_EMAIL="", DISPATCH_CONTACT_PHONE="")
    app.config["MAIL_DEFAULT_SENDER"] = "van-thu@thh.example"
    html = client.get("/khong-co-trang-nay").get_data(as_text=True)
    assert 'href="mailto:van-thu@thh.example"' in html and "tel:" not in html


def test_the_preview_not_ready_yet_is_a_page_of_the_site(desk):
    """Opened on its own (from the issue page's link), it fits a phone and has the favicon."""
    from tests.fixtures.clerks import draft_id_from, post_form, valid_fields

    response = post_form(
        desk.clerk, "/dispatches/new", valid_fields(body=""), token_from="/dispatches/new"
    )
    preview = desk.clerk.get(f"/dispatches/{draft_id_from(response)}/preview.pdf")
    assert preview.status_code == 422
    html = preview.get_data(as_text=True)
    assert '<link rel="icon" href="/static/favicon.svg"' in html
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
