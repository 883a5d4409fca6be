"""`edgead keygen KEY` and `edgead sign BUNDLE --key KEY`: Ed25519-signed bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgead.cli._common import console, handle_errors


@handle_errors
def keygen(
    key: Annotated[
        Path,
        typer.Argument(
            help="Private key file to write (PEM, mode 0600); KEY.pub gets the public key."
        ),
    ],
) -> None:
    """Make an Ed25519 key pair for signing bundles (keep KEY secret, ship KEY.pub)."""
    from edgead.signing import generate_keypair, key_id, load_public_key

    private_path, public_path = generate_keypair(key)
    console.print(
        f"private key {private_path} (keep it secret), public key {public_path} "
        f"(key id {key_id(load_public_key(public_path))}); pass it to --trusted-key",
        highlight=False,
    )


@handle_errors
def sign(
    bundle: Annotated[
        Path,
        typer.Argument(
            help="Bundle to sign (verified first).", exists=True, dir_okay=False, resolve_path=True
        ),
    ],
    key: Annotated[
        Path,
        typer.Option(
            "--key", help="Private key from `edgead keygen`.", exists=True, dir_okay=False
        ),
    ],
    out: Annotated[
        Path | None, typer.Option(help="Write the signed bundle here (default: in place).")
    ] = None,
) -> None:
    """Sign a bundle's manifest (which holds every member's sha256) with an Ed25519 key."""
    from edgead.bundle import sign_bundle
    from edgead.signing import key_id, load_private_key

    path = sign_bundle(bundle, key, out)
    console.print(
        f"signed {path} with key id {key_id(load_private_key(key).public_key())}", highlight=False
    )
