"""The upload page in a real browser: per-file progress and results, drag and drop."""

import base64

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from gallery.models import Image
from tests.browser import log_in, require_chromium, start_browser
from tests.images import image_bytes

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def browser(live_server, client, django_user_model, media_root, queue):
    require_chromium()
    driver = start_browser()
    user = django_user_model.objects.create_user("cy", password="a-long-password-2")
    log_in(driver, live_server, client, user)
    yield driver
    driver.quit()


def finished_rows(browser, count: int):
    def rows(driver):
        found = driver.find_elements(
            By.CSS_SELECTOR, "#upload-list .upload-item.ok, #upload-list .upload-item.error"
        )
        return found if len(found) >= count else False

    return WebDriverWait(browser, 30).until(rows)


def result_by_name(rows) -> dict[str, tuple[str, str]]:
    return {
        row.find_element(By.CLASS_NAME, "name").text: (
            "ok" if "ok" in row.get_attribute("class").split() else "error",
            row.find_element(By.CLASS_NAME, "message").text,
        )
        for row in rows
    }


def test_choosing_a_mixed_batch_shows_a_result_for_each_file(browser, live_server, tmp_path):
    good = tmp_path / "sunset.jpg"
    good.write_bytes(image_bytes(size=(640, 480), fmt="JPEG", pattern=31))
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"this is a text file")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")

    browser.get(live_server.url + "/upload/")
    browser.find_element(By.ID, "id_tags").send_keys("evening, sky")
    file_input = browser.find_element(By.CSS_SELECTOR, "input[type=file]")
    file_input.send_keys("\n".join(str(path) for path in (good, bad, empty)))

    results = result_by_name(finished_rows(browser, 3))
    assert results["sunset.jpg"] == ("ok", "Uploaded; indexing pending.")
    assert results["notes.jpg"][0] == "error"
    assert "not an image file" in results["notes.jpg"][1]
    assert results["empty.png"] == ("error", "The file is empty (0 bytes).")
    progress = browser.find_elements(By.CSS_SELECTOR, "#upload-list progress")
    assert [bar.get_attribute("value") for bar in progress] == ["100"] * 3
    image = Image.objects.get()
    assert sorted(tag.name for tag in image.tags.all()) == ["evening", "sky"]


def test_dropping_files_on_the_drop_zone_uploads_them(browser, live_server):
    browser.get(live_server.url + "/upload/")
    payload = base64.b64encode(image_bytes(pattern=32)).decode()
    browser.execute_script(
        """
        const bytes = Uint8Array.from(atob(arguments[0]), c => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "dropped.png", {type: "image/png"}));
        const zone = document.getElementById("drop-zone");
        zone.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true}));
        """,
        payload,
    )
    results = result_by_name(finished_rows(browser, 1))
    assert results == {"dropped.png": ("ok", "Uploaded; indexing pending.")}
    assert Image.objects.get().original_filename == "dropped.png"
    thumbnail = WebDriverWait(browser, 10).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".upload-item img"))
    )
    WebDriverWait(browser, 10).until(
        lambda driver: driver.execute_script("return arguments[0].naturalWidth", thumbnail) > 0
    )
    assert thumbnail.get_attribute("src").endswith(".webp")
