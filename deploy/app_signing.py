"""The coordinator's signature on the Flower app (FAB) partners may run, and its check.

Flower 1.42's own app verification (`flower-supernode --trusted-entities`) reads signatures
that only the Flower Hub attaches: a FAB submitted with `flwr run .` carries none, so a
SuperNode started with trusted entities refuses every locally submitted app, the
coordinator's included ("App verification is not supported by the connected SuperLink").
fedscene therefore signs the same thing Flower signs, in the same way: the SHA-256 digest
of the FAB that `flwr run .` builds (deterministic: Flower zips with a fixed date), behind
an 8-byte timestamp, with an Ed25519 key (`flwr.supercore.primitives.asymmetric_ed25519`).
The partner's executor (`deploy.executor`) checks it before it runs anything.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from flwr.supercore.primitives.asymmetric_ed25519 import (
    create_message_to_sign,
    decode_base64url,
    verify_signature,
)

from fedscene.common.errors import FedsceneError


@dataclass(frozen=True)
class AppApproval:
    """One signed app: its FAB's SHA-256 (hex), when it was signed (Unix seconds) and the
    Ed25519 signature (base64url) over timestamp + digest."""

    fab_sha256: str
    signed_at: int
    signature: str

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> AppApproval:
        try:
            raw = json.loads(path.read_text())
            approval = cls(str(raw["fab_sha256"]), int(raw["signed_at"]), str(raw["signature"]))
            decode_base64url(approval.signature)  # refused here, not at a task
            return approval
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise FedsceneError(f"{path}: not an app approval from `fedscene deploy sign-app` "
                                f"({error})") from None


def make_signing_key(out_dir: Path, name: str = "coordinator-app") -> tuple[Path, Path]:
    """An Ed25519 key pair in OpenSSH format: the private key signs apps and stays with
    the coordinator; the .pub goes to every partner."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key = ed25519.Ed25519PrivateKey.generate()
    private, public = out_dir / name, out_dir / f"{name}.pub"
    try:  # created readable by the owner only, and never over an existing key
        descriptor = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise FedsceneError(f"{private} exists; keep it, or remove it to make a new key "
                            f"(partners then need the new .pub)") from None
    with os.fdopen(descriptor, "wb") as file:
        file.write(key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.OpenSSH,
                                     serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH)
                       + f" {name}\n".encode())
    return private, public


def fab_of(app_dir: Path) -> bytes:
    """The FAB `flwr run <app_dir>` submits (the same bytes, so the same digest)."""
    from flwr.cli.build import build_fab_from_disk

    return build_fab_from_disk(app_dir)


def sign_fab(fab: bytes, private_key: Path, signed_at: int | None = None) -> AppApproval:
    """The coordinator's approval of `fab`, signed with its Ed25519 `private_key`."""
    key = serialization.load_ssh_private_key(private_key.read_bytes(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise FedsceneError(f"{private_key}: not an Ed25519 key; make one with "
                            f"`fedscene deploy app-key`")
    when = int(time.time()) if signed_at is None else signed_at
    signature = key.sign(create_message_to_sign(hashlib.sha256(fab).digest(), when))
    return AppApproval(hashlib.sha256(fab).hexdigest(), when,
                       base64.urlsafe_b64encode(signature).decode().rstrip("="))


def load_public_key(path: Path) -> ed25519.Ed25519PublicKey:
    """The coordinator's app-signing public key (OpenSSH format)."""
    try:
        key = serialization.load_ssh_public_key(path.read_bytes())
    except (OSError, ValueError) as error:
        raise FedsceneError(f"{path}: not a public key ({error})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise FedsceneError(f"{path}: not an Ed25519 public key; the coordinator makes one "
                            f"with `fedscene deploy app-key`")
    return key


def refusal(fab: bytes, approvals: list[AppApproval], public_key: ed25519.Ed25519PublicKey
            ) -> str | None:
    """Why `fab` must not run (no approval names its digest, or no signature on it
    verifies under the coordinator's key), or None when the coordinator signed it."""
    digest = hashlib.sha256(fab).digest()
    named = [a for a in approvals if a.fab_sha256 == digest.hex()]
    if not named:
        return (f"app {digest.hex()[:12]} is not one the coordinator approved "
                f"({len(approvals)} approved)")
    for approval in named:
        if verify_signature(public_key, create_message_to_sign(digest, approval.signed_at),
                            decode_base64url(approval.signature)):
            return None
    return f"app {digest.hex()[:12]}: its approval's signature does not verify"
