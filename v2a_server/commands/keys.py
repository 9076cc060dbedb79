"""`v2a keys`: create the CURVE key pair that lets `v2a-server` listen beyond loopback."""

from __future__ import annotations

import argparse
import os
import secrets

NAME = "keys"
HELP = ("create a CURVE key pair for v2a-server (server.key for clients, server.key_secret "
        "for the server) and optionally an HMAC signing key")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the key files")
    parser.add_argument("--name", default="server", help="file stem (default: server)")
    parser.add_argument("--signing-key", action="store_true",
                        help="also write DIR/signing.key, a random HMAC key for "
                        "--signing-key-file (give the same file to clients)")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")


def run(args: argparse.Namespace) -> int:
    import zmq
    import zmq.auth

    if not zmq.has("curve"):
        raise SystemExit("v2a keys: this libzmq was built without CURVE support")
    os.makedirs(args.out, exist_ok=True)
    public_path = os.path.join(args.out, f"{args.name}.key")
    secret_path = os.path.join(args.out, f"{args.name}.key_secret")
    if not args.force and (os.path.exists(public_path) or os.path.exists(secret_path)):
        raise SystemExit(f"v2a keys: {public_path} already exists (use --force to replace)")
    old_umask = os.umask(0o077)  # the secret file is never readable by others, not even briefly
    try:
        public_path, secret_path = zmq.auth.create_certificates(args.out, args.name)
    finally:
        os.umask(old_umask)
    os.chmod(public_path, 0o644)
    public, _ = zmq.auth.load_certificate(public_path)
    print(f"public key (give to clients): {public_path}\n  {public.decode('ascii')}")
    print(f"secret key (server only, mode 600): {secret_path}")
    if args.signing_key:
        signing_path = os.path.join(args.out, "signing.key")
        fd = os.open(signing_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        print(f"HMAC signing key (server and clients, mode 600): {signing_path}")
    print(f"start: v2a-server --bind tcp://0.0.0.0:5555 --curve-secret-key {secret_path} ...")
    return 0
