import json
import os
import stat

import pytest

from copyseek.errors import CopyseekError
from copyseek.service.keys import KEYS_FILE, KeyStore, hash_token


def test_a_key_is_stored_only_as_its_hash(tmp_path):
    token = KeyStore(tmp_path).add("read", "alice")
    text = (tmp_path / KEYS_FILE).read_text()
    assert token not in text
    assert hash_token(token) in text
    assert json.loads(text)["keys"][0]["name"] == "alice"
    assert stat.S_IMODE(os.stat(tmp_path / KEYS_FILE).st_mode) == 0o600


def test_tokens_are_found_again_after_reopening_and_wrong_ones_are_not(tmp_path):
    read = KeyStore(tmp_path).add("read")
    write = KeyStore(tmp_path).add("write")
    store = KeyStore(tmp_path)
    assert len(store) == 2
    assert store.find(read).scope == "read"
    assert store.find(write).scope == "write"
    assert store.find(read + "x") is None
    assert store.find("") is None


def test_write_keys_may_read_and_read_keys_may_not_write(tmp_path):
    store = KeyStore(tmp_path)
    read, write = store.find(store.add("read")), store.find(store.add("write"))
    assert read.allows("read") and not read.allows("write")
    assert write.allows("read") and write.allows("write")


def test_removing_a_key_revokes_it(tmp_path):
    store = KeyStore(tmp_path)
    token = store.add("write", "ci")
    store.remove("ci")
    assert KeyStore(tmp_path).find(token) is None
    with pytest.raises(CopyseekError, match="no key named 'ci'"):
        store.remove("ci")


@pytest.mark.parametrize(
    "scope, name, message",
    [("admin", None, "unknown key scope 'admin'"), ("read", "a b", "key name 'a b'"), ("read", "", None)],
)
def test_bad_scopes_and_names_are_refused(tmp_path, scope, name, message):
    store = KeyStore(tmp_path)
    if message is None:  # an empty name means the default name
        assert store.find(store.add(scope, name)).name == "read-1"
        return
    with pytest.raises(CopyseekError, match=message):
        store.add(scope, name)


def test_a_duplicate_name_and_a_damaged_file_are_clear_errors(tmp_path):
    store = KeyStore(tmp_path)
    store.add("read", "bob")
    with pytest.raises(CopyseekError, match="already exists"):
        store.add("write", "bob")
    (tmp_path / KEYS_FILE).write_text("{not json")
    with pytest.raises(CopyseekError, match="cannot read the API keys"):
        KeyStore(tmp_path)


def test_keys_added_by_another_process_are_seen_without_a_restart(tmp_path):
    serving = KeyStore(tmp_path)
    token = KeyStore(tmp_path).add("read")  # e.g. `copyseek serve keys add` while the service runs
    assert serving.find(token) is not None
