"""Signed bundles: Ed25519 signatures over the manifest bytes (the `cryptography` package).

Trust model: the manifest holds the sha256 and size of every other member, so a signature over
the manifest's exact bytes covers the whole bundle. `edgead keygen` makes a key pair (private key
PEM, mode 0600, and `.pub` public key PEM); `edgead sign BUNDLE --key KEY` adds the member
`manifest.sig`; `Detector.load(path, trusted_keys=[...])` / `--trusted-key PUB` refuse a bundle
that is unsigned or not signed by one of the trusted keys *before* the manifest is parsed or any
member is read. Without trusted keys a signature is not checked (hashes still give integrity,
not authenticity).

`manifest.sig` is JSON: {"algorithm": "ed25519", "key_id": first 16 hex digits of the sha256 of
the raw public key, "signature": base64 of the 64-byte signature}.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgead._io import atomic_open
from edgead.errors import BundleError, ConfigError

logger = logging.getLogger(__name__)

ALGORITHM = "ed25519"
MAX_SIGNATURE_BYTES = 4096
MAX_KEY_BYTES = 16 * 1024


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:  # pragma: no cover - a base dependency
        raise ConfigError(
            "signed bundles need the 'cryptography' package: pip install 'edgead[sign]'"
        ) from exc
    return ed25519


def key_id(public_key: Any) -> str:
    """First 16 hex digits of the sha256 of the raw 32-byte Ed25519 public key."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(path: str | Path) -> tuple[Path, Path]:
    """Write a new Ed25519 private key (PEM, mode 0600) to `path` and its public key to
    `path` + ".pub"; returns both paths. Refuses to overwrite an existing key."""
    from cryptography.hazmat.primitives import serialization

    ed25519 = _crypto()
    private_path = Path(path)
    public_path = private_path.with_name(private_path.name + ".pub")
    for target in (private_path, public_path):
        if target.exists():
            raise ConfigError(f"{target} exists; refusing to overwrite a key (pick another path)")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    with atomic_open(public_path, "wb") as fh:
        fh.write(public_pem)
    return private_path, public_path


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        if path.stat().st_size > MAX_KEY_BYTES:
            raise ConfigError(f"{what} {path} is larger than {MAX_KEY_BYTES} bytes; not a key")
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc


def load_private_key(path: str | Path) -> Any:
    """The Ed25519 private key in PEM file `path` (unencrypted PKCS8, as `keygen` writes it)."""
    from cryptography.hazmat.primitives import serialization

    ed25519 = _crypto()
    data = _read_key_file(Path(path), "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{path} is a {type(key).__name__}; edgead signs with Ed25519 keys")
    return key


def load_public_key(path: str | Path) -> Any:
    """The Ed25519 public key in PEM file `path` (as `keygen` writes it to KEY.pub)."""
    from cryptography.hazmat.primitives import serialization

    ed25519 = _crypto()
    data = _read_key_file(Path(path), "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not a PEM public key: {exc}") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError(f"{path} is a {type(key).__name__}; edgead trusts Ed25519 keys only")
    return key


def _public_keys(trusted_keys: Sequence[Any]) -> list[Any]:
    ed25519 = _crypto()
    keys = [
        k if isinstance(k, ed25519.Ed25519PublicKey) else load_public_key(k) for k in trusted_keys
    ]
    if not keys:
        raise ConfigError("trusted_keys is empty: give at least one public key (or None)")
    return keys


def signature_bytes(manifest_bytes: bytes, private_key: Any) -> bytes:
    """The `manifest.sig` member for `manifest_bytes` signed by `private_key`."""
    record = {
        "algorithm": ALGORITHM,
        "key_id": key_id(private_key.public_key()),
        "signature": base64.b64encode(private_key.sign(manifest_bytes)).decode("ascii"),
    }
    return json.dumps(record, indent=2).encode()


def verify_manifest(
    manifest_bytes: bytes, signature: bytes | None, trusted_keys: Sequence[Any], path: Path
) -> str:
    """Key id of the trusted key that signed `manifest_bytes`; BundleError otherwise.

    Args:
        manifest_bytes: the exact bytes of the bundle's manifest.json.
        signature: the bytes of its manifest.sig member, None when the bundle has none.
        trusted_keys: Ed25519 public keys or paths to their PEM files.
        path: the bundle, for messages.
    """
    from cryptography.exceptions import InvalidSignature

    keys = _public_keys(trusted_keys)
    if signature is None:
        raise BundleError(
            f"{path} is not signed but trusted keys were given; sign it with "
            "`edgead sign BUNDLE --key KEY` or load it without --trusted-key"
        )
    from edgead.bundle_checks import parse_json

    record = parse_json(signature, f"{path}: manifest.sig", MAX_SIGNATURE_BYTES)
    try:
        if record["algorithm"] != ALGORITHM:
            raise BundleError(f"{path}: signature algorithm {record['algorithm']!r} is not ed25519")
        raw = base64.b64decode(record["signature"], validate=True)
        claimed = record.get("key_id")
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{path}: manifest.sig is malformed: {exc!r}") from exc
    for key in keys:
        try:
            key.verify(raw, manifest_bytes)
        except InvalidSignature:
            continue
        logger.info("bundle %s is signed by trusted key %s", path, key_id(key))
        return key_id(key)
    raise BundleError(
        f"{path}: the signature (key id {claimed!r}) does not verify with any of the "
        f"{len(keys)} trusted key(s) {[key_id(k) for k in keys]}; the bundle was modified "
        "after signing or signed by another key: refusing it"
    )
