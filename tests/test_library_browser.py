"""The gallery in a real browser: select images with their checkboxes and delete them."""

import re
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from gallery.library.ingest import ingest_image
from gallery.models import Embedding, Image
from tests.browser import log_in, require_chromium, start_browser
from tests.images import image_bytes

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("dee", password="a-long-password-4")


@pytest.fixture
def browser(live_server, client, owner, media_root, queue):
    require_chromium()
    driver = start_browser()
    log_in(driver, live_server, client, owner)
    yield driver
    driver.quit()


def stored_paths(image) -> list[Path]:
    fields = [image.file, image.thumbnail] + ([image.preview] if image.preview else [])
    return [Path(field.path) for field in fields]


def test_selecting_three_images_and_deleting_them_removes_them_and_their_files(
    browser, live_server, owner, django_user_model
):
    other = django_user_model.objects.create_user("eve", password="a-long-password-5")
    images = [
        ingest_image(
            data=image_bytes(size=(640, 560) if n == 0 else (96, 64), fmt="JPEG", pattern=60 + n),
            filename=f"walk{n}.jpg",
            uploaded_by=owner,
            caption=f"walk {n}",
            enqueue=False,
        ).image
        for n in range(4)
    ]
    someone_elses = ingest_image(
        data=image_bytes(pattern=70), filename="eve.png", uploaded_by=other, enqueue=False
    ).image
    doomed, kept = images[:3], images[3]
    doomed_paths = [path for image in doomed for path in stored_paths(image)]
    assert len(doomed_paths) == 7 and all(path.exists() for path in doomed_paths)

    browser.get(live_server.url + "/")
    boxes = browser.find_elements(By.CSS_SELECTOR, "input[type=checkbox][name=images]")
    # Only her own images can be selected; Eve's has no checkbox.
    assert {int(box.get_attribute("value")) for box in boxes} == {image.pk for image in images}
    for image in doomed:
        browser.find_element(
            By.CSS_SELECTOR, f"input[type=checkbox][name=images][value='{image.pk}']"
        ).click()
    browser.find_element(By.ID, "delete-selected").click()
    WebDriverWait(browser, 5).until(expected_conditions.alert_is_present())
    alert = browser.switch_to.alert
    assert "Delete the selected images?" in alert.text
    alert.accept()

    WebDriverWait(browser, 15).until(
        expected_conditions.text_to_be_present_in_element(
            (By.CSS_SELECTOR, ".messages"), "Deleted 3 images."
        )
    )
    shown = {
        int(pk)
        for pk in re.findall(r'/images/(\d+)/"', browser.page_source)
        if int(pk) in {image.pk for image in [*images, someone_elses]}
    }
    assert shown == {kept.pk, someone_elses.pk}
    assert sorted(Image.objects.values_list("pk", flat=True)) == sorted([kept.pk, someone_elses.pk])
    assert not Embedding.objects.filter(image_id__in=[image.pk for image in doomed]).exists()
    assert [path for path in doomed_paths if path.exists()] == []
    assert all(path.exists() for path in stored_paths(kept))


def test_cancelling_the_confirmation_deletes_nothing(browser, live_server, owner):
    image = ingest_image(
        data=image_bytes(pattern=80), filename="keep.png", uploaded_by=owner, enqueue=False
    ).image
    browser.get(live_server.url + "/")
    browser.find_element(By.CSS_SELECTOR, f"input[name=images][value='{image.pk}']").click()
    browser.find_element(By.ID, "delete-selected").click()
    WebDriverWait(browser, 5).until(expected_conditions.alert_is_present())
    browser.switch_to.alert.dismiss()
    assert browser.current_url.rstrip("/") == live_server.url
    assert Image.objects.filter(pk=image.pk).exists()
    assert all(path.exists() for path in stored_paths(image))
