"""The merchandiser's web app in a real browser (Debian's Chromium, driven by Playwright) against a live
``clothes-search serve`` over the sample catalog (Fashion-MNIST garments, `make-sample-data`).

The consumer photo is a real photo of a person (OpenCV's sample ``messi5.jpg``) wearing the sample
catalog's blue coat: the coat's garment, cut from its shop photo, pasted where the default detectors
(MediaPipe pose) put the person's top. Set ``CLOTHES_SEARCH_SCREENSHOTS=docs`` to write the
screenshots the README shows.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from live_server import TEST_ADMIN_KEY, ServeProcess, clothes_search_env, run_cli
from PIL import Image

from clothes_search.sample_data import build_sample_set

pytestmark = pytest.mark.slow
REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PERSON = Path("/usr/share/doc/opencv-doc/examples/data/messi5.jpg")
TOP_OF_PERSON = (154, 112, 313, 249)  # where the pose detectors put messi5's top (measured)
BROKEN = "broken-item"


@dataclass
class Site:
    url: str
    sample: Path
    photo: Path  # the consumer photo: the person wearing the coat
    coat_skus: set[str]
    missing_image: Path  # the broken item's image, absent until a test puts it there


def consumer_photo(sample: Path, out: Path) -> tuple[Path, set[str]]:
    """The person wearing the sample catalog's first coat, and that coat's skus (one per shop photo)."""
    rows = [json.loads(line) for line in (sample / "validation" / "catalog.jsonl").read_text().splitlines()]
    coat = next(row for row in rows if row["title"].endswith(" coat"))
    skus = {row["sku"] for row in rows if row["attributes"]["item_id"] == coat["attributes"]["item_id"]}
    shop = Image.open(coat["image_path"]).convert("RGB")
    annotation = json.loads(
        (sample / "validation" / "annos" / f"{Path(coat['image_path']).stem}.json").read_text()
    )
    garment = shop.crop(annotation["item1"]["bounding_box"])
    photo = Image.open(PERSON).convert("RGB")
    x1, y1, x2, y2 = TOP_OF_PERSON
    photo.paste(garment.resize((x2 - x1, y2 - y1)), (x1, y1))
    photo.save(out, quality=92)
    return out, skus


@pytest.fixture(scope="module")
def site(tmp_path_factory, models_dir) -> Iterator[Site]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed (scripts/system-deps.sh installs it)", pytrace=False)
    root = tmp_path_factory.mktemp("web")
    sample = root / "sample"
    build_sample_set(sample, validation_items=20, unseen_items=2, train_items=2)
    photo, coat_skus = consumer_photo(sample, root / "coat-on-person.jpg")
    broken_feed = sample / "validation" / "broken.jsonl"
    missing = sample / "validation" / "image" / "late-upload.jpg"
    broken_feed.write_text(
        json.dumps({"sku": BROKEN, "image_path": str(missing), "title": "Late upload"}) + "\n"
    )
    env = clothes_search_env(
        data_dir=root / "data",
        models_dir=models_dir,
        api={"bootstrap_admin_key": TEST_ADMIN_KEY},
    )
    for command in (("db", "upgrade"), ("ingest", str(sample / "validation" / "catalog.jsonl"))):
        done = run_cli(*command, env=env, cwd=REPO_ROOT)
        assert done.returncode == 0, done.stdout + done.stderr
    failed = run_cli("ingest", str(broken_feed), env=env, cwd=REPO_ROOT)
    assert "1 failed" in failed.stdout, failed.stdout + failed.stderr
    with ServeProcess(env, cwd=REPO_ROOT, log_path=root / "serve.log", workers=1) as server:
        yield Site(server.url(""), sample, photo, coat_skus, missing)


@pytest.fixture(scope="module")
def browser_context(site) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(60_000)
        yield context
        context.close()


@pytest.fixture
def page(browser_context) -> Iterator[object]:
    page = browser_context.new_page()
    yield page
    page.close()


def screenshot(page, name: str) -> None:
    folder = os.environ.get("CLOTHES_SEARCH_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def upload(page, site: Site, path: Path) -> None:
    page.goto(site.url + "/")
    page.set_input_files("#file-input", str(path))


def result_skus(page) -> list[str]:
    return page.locator("#results .result").evaluate_all("cards => cards.map(c => c.dataset.sku)")


def test_an_uploaded_photo_shows_its_garments_and_the_coat_first(page, site):
    from playwright.sync_api import expect

    upload(page, site, site.photo)
    boxes = page.locator("#boxes .garment-box")
    expect(boxes.first).to_be_visible()
    categories = boxes.evaluate_all("bs => bs.map(b => b.dataset.category)")
    assert "top" in categories and len(categories) >= 2, categories
    expect(page.locator("#results .result").first).to_be_visible()
    first_results_ms = page.evaluate("window.clothesSearch.firstResultsMs")
    page.locator('#boxes .garment-box[data-category="top"]').click()
    expect(page.locator('#boxes .garment-box[data-category="top"]')).to_have_attribute("aria-pressed", "true")
    first = page.locator("#results .result").first
    assert first.get_attribute("data-sku") in site.coat_skus, result_skus(page)
    thumbnail = first.locator(".thumb img")
    expect(thumbnail).to_be_visible()
    assert thumbnail.evaluate(
        "img => img.complete && img.naturalWidth > 0"
    )  # served by GET /items/<sku>/image
    assert first.locator(".crop-outline").count() == 1
    assert "ms" in page.locator("#timings").inner_text()
    print(f"upload to first results in the browser: {first_results_ms:.0f} ms")
    screenshot(page, "web-search.png")
    # the keyboard reaches the garments: Enter on another box shows its results
    other = page.locator('#boxes .garment-box:not([data-category="top"])').first
    other.focus()
    page.keyboard.press("Enter")
    expect(other).to_have_attribute("aria-pressed", "true")


def test_a_brand_filter_leaves_only_that_brand(page, site):
    from playwright.sync_api import expect

    upload(page, site, site.photo)
    expect(page.locator("#results .result").first).to_be_visible()
    brands = page.locator("#results .result .brand").all_inner_texts()
    wanted = brands[-1]
    page.locator(f'#facet-brand input[value="{wanted}"]').check()
    expect(page.locator("#results .result .brand").first).to_have_text(wanted)
    only = "b => [...document.querySelectorAll('#results .result .brand')].every(e => e.textContent === b)"
    page.wait_for_function(only, arg=wanted)
    assert set(page.locator("#results .result .brand").all_inner_texts()) == {wanted}


def test_drawing_a_box_searches_that_region(page, site):
    from playwright.sync_api import expect

    upload(page, site, site.photo)
    expect(page.locator("#results .result").first).to_be_visible()
    photo = page.locator("#photo").bounding_box()
    scale = photo["width"] / Image.open(site.photo).width
    x1, y1, x2, y2 = (v * scale for v in TOP_OF_PERSON)
    page.mouse.move(photo["x"] + x1 + 4, photo["y"] + y1 + 4)
    page.mouse.down()
    page.mouse.move(photo["x"] + (x1 + x2) / 2, photo["y"] + (y1 + y2) / 2, steps=5)
    page.mouse.move(photo["x"] + x2 - 4, photo["y"] + y2 - 4, steps=5)
    page.mouse.up()
    expect(page.locator("#boxes .garment-box.drawn")).to_have_count(1)
    expect(page.locator("#status")).to_contain_text("region you drew")
    assert result_skus(page)[0] in site.coat_skus


def test_a_file_that_is_not_an_image_shows_the_error(page, site):
    from playwright.sync_api import expect

    page.goto(site.url + "/")
    not_an_image = {"name": "holiday.jpg", "mimeType": "image/jpeg", "buffer": b"%PDF-1.4 a document"}
    page.set_input_files("#file-input", not_an_image)
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text("Not a supported image")
    expect(page.locator("#results .result")).to_have_count(0)


def test_a_phone_sized_screen_needs_no_sideways_scrolling(browser_context, site):
    page = browser_context.new_page()
    try:
        page.set_viewport_size({"width": 390, "height": 844})
        upload(page, site, site.photo)
        page.locator("#results .result").first.wait_for()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        page.close()


def test_the_catalog_page_lists_a_failed_item_and_retrying_it_works(page, site):
    from playwright.sync_api import expect

    page.goto(site.url + "/catalog")
    expect(page).to_have_url(re.compile(r"/login\?next=(/|%2F)catalog$"))
    page.fill("#key", "cs_bogus00001_" + "x" * 43)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_be_visible()
    page.fill("#key", TEST_ADMIN_KEY)
    page.click("#login-form button[type=submit]")
    expect(page).to_have_url(f"{site.url}/catalog")
    row = page.locator(f'#failed-items tr[data-sku="{BROKEN}"]')
    expect(row).to_be_visible()
    assert "not found" in row.locator(".reason").inner_text().lower()
    expect(page.locator('#versions tr[data-state="live"]')).to_have_count(1)
    screenshot(page, "web-catalog.png")
    # the image appears at its source: a retry now indexes the item
    site.missing_image.write_bytes(Path(site.photo).read_bytes())
    row.get_by_role("button", name=f"Retry {BROKEN}").click()
    expect(page.locator(".flash")).to_contain_text("queued again")
    for _ in range(60):
        page.reload()
        if page.locator(f'#failed-items tr[data-sku="{BROKEN}"]').count() == 0:
            break
        page.wait_for_timeout(1000)
    expect(page.locator(f'#failed-items tr[data-sku="{BROKEN}"]')).to_have_count(0)
    expect(page.locator("#jobs tr[data-job]").first.locator(".state")).to_have_text("finished")


def test_a_form_that_changes_state_refuses_a_request_without_its_csrf_token(browser_context, site):
    page = browser_context.new_page()
    try:
        page.goto(site.url + "/login")
        page.fill("#key", TEST_ADMIN_KEY)
        page.click("#login-form button[type=submit]")
        page.wait_for_url(site.url + "/")
        # the session cookie goes with it, the CSRF token does not
        refused = browser_context.request.post(f"{site.url}/catalog/versions/anything/activate", form={})
        assert refused.status == 400 and "did not come from a page of this site" in refused.text()
        forged = browser_context.request.post(f"{site.url}/logout", form={"csrf_token": "forged"})
        assert forged.status == 400
        page.goto(site.url + "/catalog")
        assert page.url == f"{site.url}/catalog"  # still signed in: nothing changed
    finally:
        page.close()


def test_more_like_this_searches_with_a_results_own_picture(page, site):
    from playwright.sync_api import expect

    upload(page, site, site.photo)
    second = page.locator("#results .result").nth(1)
    expect(second).to_be_visible()
    sku = second.get_attribute("data-sku")
    second.get_by_role("button", name=re.compile("^More like")).click()
    expect(page.locator("#boxes .garment-box.drawn")).to_have_count(1)  # its matched crop, as a region
    expect(page.locator("#results .result").first).to_have_attribute("data-sku", sku)
