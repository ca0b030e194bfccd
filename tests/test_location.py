"""Store locations: URIs shown without credentials, whatever their secrets hold."""

from __future__ import annotations

import random
import string
from urllib.parse import quote

import pytest

from shillelagh_amplitude.store.location import StoreError, StoreLocation, redact, scrub

#: Secrets as people type them into URIs: AWS secret keys hold '/' and '+', passwords anything.
SECRETS = [
    "wJalr/S3CRET+key",
    "123/defS3CRET",  # urllib took "123" for a port and the rest for the path
    "abc/defS3CRET",  # urllib raised "Port could not be cast to integer value"
    "p@ss:S3CRET",
    "S3CRET%2Fslash",
    "sec ret S3CRET",
    "why?S3CRET",
    "a/b@c:d?e f%2FS3CRET",
]


@pytest.mark.parametrize("secret", SECRETS)
def test_user_info_is_never_shown(secret):
    uri = f"s3://AKIAEXAMPLE:{secret}@bucket/prefix?region=us-east-1"
    shown = redact(uri)
    assert shown == "s3://bucket/prefix?region=us-east-1"
    assert "S3CRET" not in shown and "AKIAEXAMPLE" not in shown


@pytest.mark.parametrize("secret", SECRETS)
def test_credential_parameters_are_never_shown(secret):
    uri = (f"s3://bucket/prefix?access_key=AKIAEXAMPLE&secret_key={secret}&session_token=S3CRET-token"
           "&endpoint_override=127.0.0.1:9000&scheme=http")
    assert redact(uri) == ("s3://bucket/prefix?access_key=***&secret_key=***&session_token=***"
                           "&endpoint_override=127.0.0.1:9000&scheme=http")


def test_plain_uris_are_shown_as_given():
    for uri in ("s3://bucket/prefix?endpoint_override=127.0.0.1:9000&scheme=http&region=us-east-1",
                "gs://bucket/a/b", "s3://bucket"):
        assert redact(uri) == uri
    assert redact("s3://user@bucket/p?") == "s3://bucket/p"


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("encode", [False, True], ids=["typed", "percent-encoded"])
def test_an_unopenable_uri_is_named_without_its_credentials(secret, encode):
    """pyarrow's own messages quote the URI; the store's message never does."""
    typed = quote(secret, safe="") if encode else secret
    for uri in (f"s3://AKIAEXAMPLE:{typed}@bucket/prefix?region=us-east-1&bogus=1",
                f"s3://bucket/prefix?access_key=AKIAEXAMPLE&secret_key={typed}&bogus=1"):
        with pytest.raises(StoreError) as failure:
            StoreLocation.open(uri)
        message = str(failure.value)
        assert message.startswith(f"The hour store {redact(uri)} cannot be opened: ")
        assert message.endswith(("Unexpected query parameter in S3 URI: 'bogus'",
                                 "it is not a valid URI; percent-encode any '/', '@', ':', '?', '%' or space in its "
                                 "credentials (e.g. '/' as %2F)"))
        assert "S3CRET" not in message and "AKIAEXAMPLE" not in message and typed not in message


def test_an_unparsable_uri_gets_a_readable_reason():
    with pytest.raises(StoreError) as failure:
        StoreLocation.open("s3://AKIAEXAMPLE:sec ret@bucket/p?bogus=1")
    assert str(failure.value) == (
        "The hour store s3://bucket/p?bogus=1 cannot be opened: it is not a valid URI; percent-encode any '/', '@', "
        "':', '?', '%' or space in its credentials (e.g. '/' as %2F)"
    )


def test_other_reasons_keep_their_text_with_the_uri_redacted():
    with pytest.raises(StoreError) as failure:
        StoreLocation.open("gs://AKIAEXAMPLE:S3CRET@bucket/p")
    assert str(failure.value) == ('The hour store gs://bucket/p cannot be opened: '
                                  'GCS URIs do not accept username except "anonymous".')


def test_scrub_hides_the_uri_and_each_credential_in_any_form():
    uri = "s3://AKIAEXAMPLE:abc%2FS3CRET@bucket/p?secret_key=tok%40S3CRET&region=x"
    text = (f"failed: '{uri}'; user AKIAEXAMPLE, password abc/S3CRET (abc%2FS3CRET), token tok@S3CRET; "
            "bucket 'bucket'")
    assert scrub(text, uri) == ("failed: 's3://bucket/p?secret_key=***&region=x'; user ***, password *** (***), "
                                "token ***; bucket 'bucket'")


def test_redact_never_fails_nor_shows_a_secret_whatever_it_holds():
    """Secrets of random characters, '/', '@', ':', '?', '%', '+' and spaces included (seeded: repeatable)."""
    chance = random.Random(5150)
    alphabet = "/@:?% +" + string.ascii_letters + string.digits
    for _ in range(2000):
        secret = "".join(chance.choices(alphabet, k=chance.randint(1, 20)))
        marker = f"{secret[:10]}S3CRET{secret[10:]}"
        uri = f"s3://AKIAEXAMPLE:{marker}@bucket/prefix?region=us-east-1"
        assert redact(uri) == "s3://bucket/prefix?region=us-east-1", uri
