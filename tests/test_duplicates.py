"""Near-duplicates: copies of one picture fold into one search result ("+N similar") unless
asked to show them, the APIs list the folded ids, and staff find every group across the
library (a scan that runs as a job) and keep one copy of each."""

import re
from pathlib import Path

import numpy as np
import pytest
from django.urls import reverse

from gallery.indexing import encoding
from gallery.library import duplicates, perceptual_hash
from gallery.library.ingest import ingest_image
from gallery.models import Embedding, Image
from gallery.offline.duplicate_images import encoded, photo_like, variant

pytestmark = pytest.mark.django_db(transaction=True)

KINDS = ("resized", "jpeg40", "crop5", "brighter15", "darker15", "rotated3")


@pytest.fixture
def people(django_user_model):
    make = django_user_model.objects.create_user
    return {
        "member": make("member", password="member-long-password-1"),
        "staff": make("staff", password="staff-long-password-3", is_staff=True),
    }


@pytest.fixture
def copies(media_root, settings):
    """Three originals with three edited copies each, and four distinct images, indexed.

    Returns (the true groups as sets of ids, the ids of the distinct images)."""
    # The test model's random weights put every image at cosine ~0.99 to every other, so its
    # nearest neighbours are no guide to copies (bench_duplicates): ask for all of them here.
    settings.NEAR_DUPLICATE_NEIGHBOURS = 20
    settings.NEAR_DUPLICATE_SIMILARITY = 0.9  # the shipped value (tests/settings.py turns it off)
    groups, alone = [], []

    def add(name, picture) -> int:
        return ingest_image(data=encoded(picture), filename=name, enqueue=False).image.pk

    for number in range(3):
        original = photo_like(1000 + number)
        kinds = KINDS[number : number + 3]
        group = [add(f"original{number}.jpg", original)]
        group += [add(f"original{number}-{kind}.jpg", variant(original, kind)) for kind in kinds]
        groups.append(set(group))
    for number in range(4):
        alone.append(add(f"distinct{number}.jpg", photo_like(2000 + number)))
    encoding.encode_images([pk for group in groups for pk in group] + alone)
    return groups, alone


def tiles(page: str) -> list[int]:
    """The result tiles of a search page, in order (folded copies are not tiles)."""
    return [int(pk) for pk in re.findall(r'<li class="card[^"]*" data-image="(\d+)"', page)]


def files_of(image) -> list[Path]:
    names = [image.file.name, image.thumbnail.name] + (
        [image.preview.name] if image.preview else []
    )
    return [Path(image.file.storage.path(name)) for name in names]


# -- the groups --------------------------------------------------------------------------------


def test_the_groups_found_are_exactly_the_originals_with_their_copies(copies):
    groups, alone = copies
    scan = duplicates.find_duplicate_groups()
    assert {frozenset(group.ids) for group in scan.groups} == {frozenset(g) for g in groups}
    assert not {pk for group in scan.groups for pk in group.ids} & set(alone)
    # The copy most worth keeping comes first: the most pixels (the resized copy has fewer).
    for group in scan.groups:
        pixels = [image.width * image.height for image in group.images]
        assert pixels[0] == max(pixels)


def test_copies_outside_each_others_nearest_neighbours_are_found_by_their_hash_bands(
    copies, settings
):
    groups, alone = copies
    # One neighbour each: with random weights an image's nearest vector is rarely its copy's,
    # so the index alone leaves most copies out; the hash bands propose them.
    settings.NEAR_DUPLICATE_NEIGHBOURS = 1
    scan = duplicates.find_duplicate_groups()
    assert {frozenset(group.ids) for group in scan.groups} == {frozenset(g) for g in groups}
    assert scan.hash_pairs >= sum(len(g) - 1 for g in groups)


def test_images_stored_before_the_hash_column_get_theirs_from_the_thumbnail(copies):
    groups, _ = copies
    stored = dict(Image.objects.values_list("pk", "phash"))
    assert None not in stored.values()  # ingest stores it
    Image.objects.update(phash=None)
    scan = duplicates.find_duplicate_groups()
    assert scan.hashes_filled == len(stored)
    assert dict(Image.objects.values_list("pk", "phash")) == stored  # the same hash, from the file
    assert {frozenset(group.ids) for group in scan.groups} == {frozenset(g) for g in groups}


def test_hash_bands_propose_every_pair_within_the_distance_and_nothing_farther():
    rng = np.random.default_rng(7)

    def flipped(value: int, bits) -> int:
        for bit in bits:
            value ^= 1 << int(bit)
        return perceptual_hash.as_stored(value & ((1 << 64) - 1))

    hashes, close, far = {}, set(), set()
    for group in range(50):
        base = int(rng.integers(0, 2**63)) * 2 + int(rng.integers(0, 2))
        hashes[group * 10] = perceptual_hash.as_stored(base)
        hashes[group * 10 + 1] = flipped(base, rng.choice(64, size=12, replace=False))
        hashes[group * 10 + 2] = flipped(base, rng.choice(64, size=20, replace=False))
        close.add((group * 10, group * 10 + 1))
        far.add((group * 10, group * 10 + 2))
    # 13 bands for a distance of 12: two hashes within it agree on a whole band (pigeonhole).
    found, skipped = duplicates.hash_candidate_pairs(hashes, max_distance=12, bands=13)
    assert close <= found
    assert not far & found
    assert all(perceptual_hash.distance(hashes[a], hashes[b]) <= 12 for a, b in found)
    assert skipped == 0
    # Buckets over the cap are skipped and counted, not compared pair by pair.
    same = {pk: perceptual_hash.as_stored(12345) for pk in range(30)}
    found, skipped = duplicates.hash_candidate_pairs(same, max_distance=0, bands=4, bucket_cap=20)
    assert (found, skipped) == (set(), 4)
    found, skipped = duplicates.hash_candidate_pairs(same, max_distance=0, bands=4)
    assert len(found) == 30 * 29 // 2 and skipped == 0


def test_the_candidate_pairs_come_from_the_index_not_all_pairs(copies):
    from django.db import connection

    from gallery.indexing import registry

    model = registry.active_model()
    sql = duplicates.neighbour_pairs_sql(model)
    with connection.cursor() as cursor:
        # As the planner costs a large library (16 rows are cheaper to sort than to look up).
        for setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
            cursor.execute(f"SET {setting} = off")
        cursor.execute("EXPLAIN " + sql, {"limit": 11, "max_distance": 0.1})
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("RESET ALL")
    assert model.index_name in plan
    assert "Limit" in plan


# -- search results --------------------------------------------------------------------------


def test_a_search_shows_copies_as_one_tile_with_a_similar_count_and_the_toggle_shows_all(
    client, people, copies
):
    client.force_login(people["member"])
    groups, alone = copies
    first = min(groups[0])  # the original
    page = client.get(reverse("search"), {"like": first}).content.decode()
    shown = tiles(page)
    assert shown.count(first) == 1
    assert not (groups[0] - {first}) & set(shown)  # its copies are folded into its tile
    assert "+3 similar" in page
    for pk in groups[0] - {first}:
        assert f'href="/images/{pk}/"' in page  # in the disclosure, linked
    assert 'id="show-duplicates"' in page

    everything = client.get(reverse("search"), {"like": first, "duplicates": "show"})
    every_tile = tiles(everything.content.decode())
    assert groups[0] <= set(every_tile)
    assert "similar</summary>" not in everything.content.decode()
    assert len(every_tile) == Image.objects.count()
    assert 'id="collapse-duplicates"' in everything.content.decode()


def test_paging_is_the_same_whether_copies_are_folded_or_shown(client, people, copies):
    client.force_login(people["member"])
    groups, _ = copies
    like = min(groups[1])
    folded = client.get(reverse("api_search"), {"like": like, "page_size": 5}).json()
    shown = client.get(
        reverse("api_search"), {"like": like, "page_size": 5, "duplicates": "show"}
    ).json()
    # The same five hits per page, folded or not; the next page starts at the same rank.
    folded_ids = [hit["id"] for hit in folded["results"]]
    folded_ids += [pk for hit in folded["results"] for pk in hit["similar_ids"]]
    assert sorted(folded_ids) == sorted(hit["id"] for hit in shown["results"])
    assert folded["has_next"] == shown["has_next"]
    assert "duplicates=show" in shown["next"]


def test_the_apis_list_the_ids_each_hit_folded_or_show_every_hit(client, people, copies):
    client.force_login(people["member"])
    groups, alone = copies
    first = min(groups[2])
    for url in (reverse("api_search"), reverse("api_v1:search")):
        answer = client.get(url, {"like": first, "page_size": 50}).json()
        assert answer["duplicates"] == "collapse"
        by_id = {hit["id"]: hit for hit in answer["results"]}
        assert set(by_id[first]["similar_ids"]) == groups[2] - {first}
        assert not (groups[2] - {first}) & set(by_id)
        for pk in alone:
            assert by_id[pk]["similar_ids"] == []
        shown = client.get(url, {"like": first, "page_size": 50, "duplicates": "show"}).json()
        assert shown["duplicates"] == "show"
        assert groups[2] <= {hit["id"] for hit in shown["results"]}
        assert all(hit["similar_ids"] == [] for hit in shown["results"])
    bad = client.get(reverse("api_v1:search"), {"like": first, "duplicates": "hide"})
    assert bad.status_code == 400
    assert bad.json()["error"]["parameter"] == "duplicates"


# -- the staff page --------------------------------------------------------------------------


def test_scan_again_queues_one_job_whose_groups_the_page_then_shows(
    client, people, copies, queue, run_burst_worker
):
    groups, _ = copies
    client.force_login(people["staff"])
    page = client.get(reverse("duplicates")).content.decode()
    assert 'id="no-scan"' in page and 'class="duplicate-group"' not in page  # no scan in a request
    assert client.post(reverse("duplicates_scan")).status_code == 302
    client.post(reverse("duplicates_scan"))  # pressed twice: still one job
    assert queue.job_ids == [duplicates.SCAN_JOB_ID]
    page = client.get(reverse("duplicates")).content.decode()
    assert 'id="scan-running"' in page and "Scanning" in page
    assert 'id="rescan"' not in page
    run_burst_worker()
    page = client.get(reverse("duplicates")).content.decode()
    assert 'id="scan-running"' not in page
    assert page.count('class="duplicate-group"') == len(groups)
    assert 'id="scan-age"' in page and "Scan again" in page
    shown = [
        set(map(int, re.findall(r'data-image-id="(\d+)"', section)))
        for section in page.split('class="duplicate-group"')[1:]
    ]
    assert {frozenset(ids) for ids in shown} == {frozenset(g) for g in groups}


def test_the_page_shows_the_last_scan_not_the_library_of_now(client, people, copies, media_root):
    groups, _ = copies
    duplicates.scan_and_store_duplicates()
    original = photo_like(1003)
    added = [
        ingest_image(data=encoded(picture), filename=name, enqueue=False).image.pk
        for name, picture in (
            ("later.jpg", original),
            ("later-jpeg40.jpg", variant(original, "jpeg40")),
        )
    ]
    encoding.encode_images(added)
    client.force_login(people["staff"])
    page = client.get(reverse("duplicates")).content.decode()
    assert page.count('class="duplicate-group"') == len(groups)  # until scanned again
    duplicates.scan_and_store_duplicates()
    page = client.get(reverse("duplicates")).content.decode()
    assert page.count('class="duplicate-group"') == len(groups) + 1


def test_staff_see_every_group_with_keep_buttons(client, people, copies):
    groups, _ = copies
    duplicates.scan_and_store_duplicates()
    client.force_login(people["staff"])
    page = client.get(reverse("duplicates"))
    assert page.status_code == 200
    text = page.content.decode()
    assert text.count('class="duplicate-group"') == len(groups)
    assert text.count("Keep this one, delete the others") == sum(map(len, groups))
    assert "csrfmiddlewaretoken" in text


def test_keep_this_one_deletes_the_others_with_their_files_and_keeps_the_chosen(
    client, people, copies
):
    groups, alone = copies
    group = sorted(groups[0])
    keep = group[2]  # not the suggested one: the choice is the person's
    others = [Image.objects.get(pk=pk) for pk in group if pk != keep]
    other_files = [path for image in others for path in files_of(image)]
    kept_files = files_of(Image.objects.get(pk=keep))
    assert all(path.exists() for path in other_files)
    duplicates.scan_and_store_duplicates()
    client.force_login(people["staff"])
    answer = client.post(reverse("duplicates_keep"), {"keep": keep, "images": group})
    assert answer.status_code == 302
    assert set(Image.objects.filter(pk__in=group).values_list("pk", flat=True)) == {keep}
    assert not Embedding.objects.filter(image_id__in=[image.pk for image in others]).exists()
    assert not any(path.exists() for path in other_files)
    assert all(path.exists() for path in kept_files)
    assert Image.objects.filter(pk__in=alone).count() == len(alone)
    # The group is gone from the page (the last scan, less the deleted images); the others stay.
    page = client.get(reverse("duplicates")).content.decode()
    assert page.count('class="duplicate-group"') == len(groups) - 1


def test_keep_refuses_a_choice_outside_the_group_and_a_kept_image_that_is_gone(
    client, people, copies
):
    groups, alone = copies
    group = sorted(groups[1])
    client.force_login(people["staff"])
    client.post(reverse("duplicates_keep"), {"keep": alone[0], "images": group})
    assert Image.objects.filter(pk__in=group).count() == len(group)
    Image.objects.filter(pk=group[0]).delete()
    client.post(reverse("duplicates_keep"), {"keep": group[0], "images": group})
    assert Image.objects.filter(pk__in=group).count() == len(group) - 1  # nothing more


def test_people_who_are_not_staff_get_403_on_the_page_and_the_action(client, people, copies):
    groups, _ = copies
    group = sorted(groups[0])
    client.force_login(people["member"])
    assert client.get(reverse("duplicates")).status_code == 403
    assert client.post(reverse("duplicates_scan")).status_code == 403
    answer = client.post(reverse("duplicates_keep"), {"keep": group[0], "images": group})
    assert answer.status_code == 403
    assert Image.objects.filter(pk__in=group).count() == len(group)
    client.logout()
    assert client.get(reverse("duplicates")).status_code in (302, 403)
    assert client.post(reverse("duplicates_keep"), {"keep": group[0], "images": group})
    assert Image.objects.filter(pk__in=group).count() == len(group)
