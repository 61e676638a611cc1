"""`faceedit download`: the registry's sha256, else trust on first use (known_hashes.json), never silent."""
import hashlib
import json

import pytest
from click.testing import CliRunner

from faceedit.checkpoints.native import CheckpointError


@pytest.fixture
def remote(tmp_path, monkeypatch):
    from faceedit.checkpoints.registry import REGISTRY, ModelEntry

    monkeypatch.setenv("FACEEDIT_HOME", str(tmp_path / "cache"))
    payload = tmp_path / "remote.pkl"
    payload.write_bytes(b"first weights")
    monkeypatch.setitem(REGISTRY, "t", ModelEntry("t", 16, ("w",), "test", payload.as_uri(), "t.pkl"))
    return payload


def test_first_download_is_recorded_and_said(remote, tmp_path, caplog):
    from faceedit.checkpoints.download import download_model, known_hashes

    digest = hashlib.sha256(b"first weights").hexdigest()
    with caplog.at_level("WARNING"):
        path = download_model("t")
    assert path.read_bytes() == b"first weights"
    assert digest in caplog.text and "known_hashes.json" in caplog.text
    rec = known_hashes()["t"]
    assert rec["sha256"] == digest and rec["url"] == remote.as_uri() and rec["file"] == "t.pkl"
    assert json.loads((tmp_path / "cache" / "known_hashes.json").read_text())["t"]["sha256"] == digest


def test_next_download_is_verified_against_the_record(remote, tmp_path, caplog):
    from faceedit.checkpoints.download import download_model

    download_model("t")
    download_model("t", force=True)  # same bytes: accepted
    remote.write_bytes(b"changed weights")
    with pytest.raises(CheckpointError, match=r"known_hashes\.json expects .*remove the entry 't'"):
        download_model("t", force=True)
    assert not (tmp_path / "cache" / "t.pkl").exists()  # the mismatching download was deleted
    # a file swapped in the cache is caught too (and left for the user to look at)
    (tmp_path / "cache" / "t.pkl").write_bytes(b"swapped")
    with pytest.raises(CheckpointError, match="delete it and download again"):
        download_model("t")


def test_registry_hash_wins_and_cli_shows_the_hash(remote, tmp_path, monkeypatch):
    from faceedit.checkpoints.download import download_model, known_hashes
    from faceedit.checkpoints.registry import REGISTRY, ModelEntry
    from faceedit.cli import cli

    good = hashlib.sha256(b"first weights").hexdigest()
    monkeypatch.setitem(REGISTRY, "r", ModelEntry("r", 16, ("w",), "test", remote.as_uri(), "r.pkl", sha256=good))
    download_model("r")
    assert "r" not in known_hashes()  # the registry knows it: nothing to trust on first use
    res = CliRunner().invoke(cli, ["download", "t"])
    assert res.exit_code == 0
    assert f"sha256 {good} (checked against the known_hashes.json)" in res.output
    res = CliRunner().invoke(cli, ["download", "r"])
    assert res.exit_code == 0 and f"sha256 {good} (checked against the registry)" in res.output


def test_damaged_record_is_refused_not_overwritten(remote, tmp_path):
    from faceedit.checkpoints.download import download_model

    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "known_hashes.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="damaged"):
        download_model("t")
    assert (tmp_path / "cache" / "known_hashes.json").read_text() == "{not json"
