import json

import pytest

from fedscene.cli.main import main
from fedscene.common.errors import FedsceneError
from fedscene.deploy.app_signing import (
    AppApproval,
    fab_of,
    load_public_key,
    make_signing_key,
    refusal,
    sign_fab,
)
from fedscene.deploy.credentials import make_partner_key

FAB = b"PK\x03\x04 the coordinator's app"


@pytest.fixture()
def keys(tmp_path):
    return make_signing_key(tmp_path / "coordinator")


def test_the_signed_app_passes_and_any_other_is_refused(tmp_path, keys):
    private, public = keys
    approval = sign_fab(FAB, private)
    key = load_public_key(public)
    assert refusal(FAB, [approval], key) is None
    assert "is not one the coordinator approved (1 approved)" in refusal(
        FAB + b" with a backdoor", [approval], key)


def test_an_approval_not_signed_by_the_coordinator_is_refused(tmp_path, keys):
    other_private, _ = make_signing_key(tmp_path / "someone-else")
    forged = sign_fab(FAB, other_private)
    assert "signature does not verify" in refusal(FAB, [forged], load_public_key(keys[1]))
    moved = AppApproval(forged.fab_sha256, forged.signed_at + 1, sign_fab(FAB, keys[0]).signature)
    assert "signature does not verify" in refusal(FAB, [moved], load_public_key(keys[1]))


def test_the_fab_signed_is_the_one_flwr_run_submits(tmp_path, keys):
    app = tmp_path / "app"
    app.mkdir()
    (app / "pyproject.toml").write_text(
        '[project]\nname = "tiny"\nversion = "1.0.0"\ndependencies = ["flwr"]\n'
        '[tool.flwr.app]\npublisher = "me"\n[tool.flwr.app.components]\n'
        'serverapp = "tiny:server"\nclientapp = "tiny:client"\n')
    (app / "tiny.py").write_text("server = client = None\n")
    assert fab_of(app) == fab_of(app)  # Flower zips with a fixed date: a stable digest
    approval_path = tmp_path / "approval.json"
    assert main(["deploy", "sign-app", "--key", str(keys[0]), "--app", str(app),
                 "--out", str(approval_path)]) == 0
    approval = AppApproval.read(approval_path)
    assert refusal(fab_of(app), [approval], load_public_key(keys[1])) is None
    (app / "tiny.py").write_text("server = client = 'changed'\n")
    assert refusal(fab_of(app), [approval], load_public_key(keys[1])) is not None


def test_unusable_inputs_are_named(tmp_path, keys):
    bad = tmp_path / "approval.json"
    bad.write_text(json.dumps({"fab_sha256": "ab"}))
    with pytest.raises(FedsceneError, match="approval.json: not an app approval"):
        AppApproval.read(bad)
    with pytest.raises(FedsceneError, match="not an Ed25519 public key"):
        load_public_key(make_partner_key(tmp_path / "k", "acme")[1])


def test_the_signing_key_is_private_and_never_overwritten(tmp_path, keys):
    private, _ = keys
    assert oct(private.stat().st_mode)[-3:] == "600"
    with pytest.raises(FedsceneError, match="exists; keep it"):
        make_signing_key(private.parent)
