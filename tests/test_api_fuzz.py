"""The API fuzzed against its own OpenAPI document by schemathesis, as a new user's tools would:
the site under `up`, private, called with an API token. Every check must pass (no server
error, every status and body as documented, schema-violating input refused) except the two
that tests/schemathesis.toml turns off, and says why, where they cannot hold."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.test_site_up import running_up

CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
CREATE_TOKEN = (
    "from django.contrib.auth.models import User; from gallery.accounts import tokens; "
    "user = User.objects.create_user('fuzzer', password='a-long-fuzzing-password'); "
    "print('TOKEN', tokens.create_api_token(user=user, name='fuzzer')[1])"
)


def fuzz(site, seconds: int) -> subprocess.CompletedProcess:
    created = run_cli("shell", "-c", CREATE_TOKEN, env=site.env)
    (secret,) = [
        line.split()[1] for line in created.stdout.splitlines() if line.startswith("TOKEN")
    ]
    return subprocess.run(
        [
            SCHEMATHESIS,
            "--config-file",
            str(CONFIG),
            "run",
            site.base_url + "api/v1/openapi.json",
            "--header",
            f"Authorization: Bearer {secret}",
            "--max-time",
            str(seconds),
            "--request-timeout",
            "30",
            "--no-color",
            "--seed",
            "2026",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 240,
        cwd=site.data_dir.parent,  # where it keeps its cache (.schemathesis/)
    )


def test_schemathesis_finds_nothing_with_every_check(tmp_path):
    with running_up(tmp_path, SITE_ACCESS="private", QUERY_IMAGE_RATE_LIMIT="") as site:
        run = fuzz(site, seconds=60)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "generated" in run.stdout


def test_with_rate_limits_on_the_only_refusals_are_documented_429s(tmp_path):
    with running_up(
        tmp_path, SITE_ACCESS="private", SEARCH_RATE_LIMIT="20/m", QUERY_IMAGE_RATE_LIMIT="5/m"
    ) as site:
        run = fuzz(site, seconds=30)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]


@pytest.fixture(autouse=True)
def schemathesis_installed():
    assert Path(SCHEMATHESIS).exists(), "schemathesis is a dev dependency (pyproject.toml)"
