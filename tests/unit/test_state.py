"""Unit tests of cocin.state's name index, on a temporary state root (no root needed)."""

from __future__ import annotations

import os
import time

import pytest

from cocin import state


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("COCIN_ROOT", str(tmp_path))
    return tmp_path


def record(cid: str, name: str) -> state.Container:
    """A container record on disk, as create() leaves it."""
    os.makedirs(state.container_dir(cid), exist_ok=True)
    rec = state.Container(id=cid, name=name, image="busybox", argv=["true"], created=time.time())
    state.save(rec)
    return rec


def test_claim_then_find_by_name(root):
    with state.locked():
        assert state.claim_name("web", "a" * 64)
    record("a" * 64, "web")
    assert state.name_taken("web")
    assert state.find("web").id == "a" * 64
    with state.locked():
        assert not state.claim_name("web", "b" * 64)
        assert state.claim_name("web", "a" * 64)  # its own name: fine


def test_a_name_whose_record_is_gone_is_free(root):
    """A crash between claim and record (or after the record's removal)
    leaves a stale file, which does not hold the name."""
    with state.locked():
        assert state.claim_name("web", "a" * 64)  # no record follows
    assert not state.name_taken("web")
    with state.locked():
        assert state.claim_name("web", "b" * 64)
    record("b" * 64, "web")
    assert state.find("web").id == "b" * 64


def test_a_record_renamed_elsewhere_frees_the_old_file(root):
    with state.locked():
        state.claim_name("old", "a" * 64)
    rec = record("a" * 64, "old")
    rec.name = "new"
    state.save(rec)  # the index still says old -> a...; the record disagrees
    assert not state.name_taken("old")


def test_release_only_by_the_owner(root):
    with state.locked():
        state.claim_name("web", "a" * 64)
        state.release_name("web", "b" * 64)
    record("a" * 64, "web")
    assert state.name_taken("web")
    with state.locked():
        state.release_name("web", "a" * 64)
    assert not os.path.exists(root / "names" / "web")


def test_index_built_from_records_of_an_older_cocin(root):
    """A state root made before the index existed: names still count."""
    record("a" * 64, "legacy")
    assert not (root / "names").exists()
    assert state.name_taken("legacy")  # the records answer, the index is not made here
    assert state.find("legacy").id == "a" * 64
    with state.locked():
        assert not state.claim_name("legacy", "b" * 64)  # builds the index first
    assert (root / "names" / "legacy").read_text() == "a" * 64


def test_a_legacy_name_too_long_for_a_file_is_found_by_scanning(root):
    long_name = "c" * 250  # made by a cocin without the index (and its limit)
    record("a" * 64, long_name)
    with state.locked():
        assert state.claim_name("web", "b" * 64)  # the index is built, skipping it
    assert sorted(os.listdir(root / "names")) == ["web"]
    assert state.name_taken(long_name) and state.find(long_name).id == "a" * 64
    assert not [p for p in os.listdir(root) if p.startswith("names.tmp")]


def test_a_torn_index_file_falls_back_to_the_records(root):
    """After a power cut a name's file may be empty: the records decide."""
    with state.locked():
        state.claim_name("web", "a" * 64)
    record("a" * 64, "web")
    (root / "names" / "web").write_text("")
    assert state.name_taken("web")
    with state.locked():
        assert not state.claim_name("web", "b" * 64)
