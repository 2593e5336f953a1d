from __future__ import annotations

import base64
import collections
import math
import secrets

import pytest

from typed_session_sql import ids


def test_ids_are_unique_well_formed_and_256_bits() -> None:
    drawn = [ids.new_cookie_value() for _ in range(100_000)]
    assert len(set(drawn)) == len(drawn)
    for value in drawn:
        assert ids.is_well_formed(value)
        assert len(base64.urlsafe_b64decode(value + "=")) == 32


def test_ids_use_the_whole_alphabet_evenly() -> None:
    # 100k ids x 42 free characters: each of the 64 symbols should show up ~65,625 times.
    counts = collections.Counter("".join(ids.new_cookie_value()[:42] for _ in range(100_000)))
    assert len(counts) == 64
    expected = 100_000 * 42 / 64
    spread = 6 * math.sqrt(expected)  # six sigma: a biased generator fails, a fair one never
    assert all(abs(count - expected) < spread for count in counts.values())


def test_ids_come_from_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "token_urlsafe", lambda n: "A" * 43)
    assert ids.new_cookie_value() == "A" * 43


def test_hash_is_blake3_and_keyed_by_the_secret() -> None:
    value = ids.new_cookie_value()
    plain = ids.IdHasher()(value)
    assert len(plain) == 32
    assert ids.IdHasher()(value) == plain
    keyed = ids.IdHasher(b"s" * 32)(value)
    assert keyed not in (plain, ids.IdHasher(b"t" * 32)(value))
    assert "s" * 32 not in repr(ids.IdHasher(b"s" * 32))


@pytest.mark.parametrize("key", [b"", b"short", "a string, not bytes"])
def test_weak_secret_key_is_refused(key: bytes) -> None:
    with pytest.raises(ValueError, match="secret_key"):
        ids.IdHasher(key)
