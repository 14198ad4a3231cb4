"""Logins to the admin: failed attempts throttled (django-axes), sessions that end after a working day."""

import pytest
from django.contrib.auth.models import User
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _static(plain_static):
    """The login form renders without collectstatic."""


def log_in(client: Client, username: str, password: str):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password})


def test_failed_logins_lock_that_user_from_that_address_and_no_other(client):
    User.objects.create_user("op", password="the-right-one", is_staff=True)
    User.objects.create_user("colleague", password="another-one", is_staff=True)
    limit = 5  # MQIC_LOGIN_FAILURE_LIMIT's default
    for _ in range(limit - 1):
        assert log_in(client, "op", "a guess").status_code == 200  # the form again, with its error
    assert log_in(client, "op", "a guess").status_code == 429, "the last failure allowed locks"
    locked = log_in(client, "op", "the-right-one")
    assert locked.status_code == 429, "even the right password is refused while locked"
    assert "_auth_user_id" not in client.session
    assert log_in(Client(), "colleague", "another-one").status_code == 302, "others log in as usual"


def test_a_session_lasts_a_working_day(client, settings):
    User.objects.create_user("op", password="the-right-one", is_staff=True)
    answer = log_in(client, "op", "the-right-one")
    assert answer.status_code == 302
    assert settings.SESSION_COOKIE_AGE == 12 * 3600
    assert answer.cookies["sessionid"]["max-age"] == 12 * 3600
