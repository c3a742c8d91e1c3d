"""What several commands share: the parser class, port numbers, and where the chain and a
wallet come from: a private key (never on the command line, where every user of the machine
could read it: an environment variable or a file) or, for every command that signs, a signer
service that holds the key (``--signer-url``)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeAlias

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..chain.signer import Signer
    from ..config import SDKConfig

__all__ = [
    "KEY_ENV",
    "CommandParser",
    "Commands",
    "add_chain_arguments",
    "port_number",
    "private_key",
    "read_key",
    "sdk_config",
    "wallet",
]

#: What a command module's ``add`` registers itself in.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

KEY_ENV = "FABSTIR_HOST_PRIVATE_KEY"


class CommandParser(argparse.ArgumentParser):
    """Usage mistakes are one line too, naming the --help that explains (subcommands
    inherit the class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 meaning any free one."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, not {port}")
    return port


def add_chain_arguments(
    parser: argparse.ArgumentParser,
    *,
    key_env: str = KEY_ENV,
    role: str = "host",
    signer: bool = False,
) -> None:
    """--manifest/--network/--rpc-url and where the ``role``'s private key comes from
    (``signer``: or a signer service, ``--signer-url``; read it with :func:`wallet`)."""
    parser.add_argument(
        "--manifest",
        type=Path,
        help="a deployment manifest (e.g. .devnet/deployments/31337.json from 'devnet up')",
    )
    parser.add_argument(
        "--network", choices=["base-sepolia"], help="a preset network instead of --manifest"
    )
    parser.add_argument("--rpc-url", help="JSON-RPC endpoint (default: the manifest's rpc_url)")
    parser.add_argument(
        "--key-env",
        default=key_env,
        metavar="VAR",
        help=f"environment variable holding the {role}'s private key (default {key_env})",
    )
    parser.add_argument("--key-file", type=Path, help=f"file holding the {role}'s private key")
    if signer:
        parser.add_argument(
            "--signer-url",
            metavar="URL",
            help=f"a JSON-RPC signer service holding the {role}'s key (personal_sign, "
            "eth_signTransaction), instead of a key here; with --signer-address",
        )
        parser.add_argument(
            "--signer-address", metavar="ADDRESS", help="the wallet the signer service signs for"
        )
        parser.add_argument(
            "--signer-message-method",
            choices=["personal_sign", "eth_sign"],
            default="personal_sign",
            help="how the service signs messages (default personal_sign; some, such as "
            "web3signer, speak eth_sign)",
        )
    parser.set_defaults(key_role=role)


def sdk_config(args: argparse.Namespace) -> SDKConfig:
    from ..config import SDKConfig

    storage = {
        name: value
        for name in ("s5_portal_url", "storage_dir")
        if (value := getattr(args, name, None)) is not None
    }
    if args.manifest is not None:
        try:
            manifest = json.loads(args.manifest.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read manifest {args.manifest}: {exc}") from None
        rpc_url = args.rpc_url or manifest.get("rpc_url")
        if not rpc_url:
            raise ConfigError("the manifest has no rpc_url: pass --rpc-url")
        return SDKConfig.from_manifest(args.manifest, rpc_url=rpc_url, **storage)
    if args.network == "base-sepolia":
        if args.rpc_url:
            storage["rpc_url"] = args.rpc_url
        return SDKConfig.base_sepolia(**storage)
    raise ConfigError("say which chain: --manifest PATH or --network base-sepolia")


def read_key(
    env: str, file: Path | None, what: str, *, flag: str = "--key-file", required: bool = True
) -> bytes | None:
    """32 bytes of hex from ``file`` (given as ``flag``), else from the environment variable
    ``env`` (None when neither holds one and it is not ``required``). Errors never echo it."""
    if file is not None:
        try:
            text = file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {flag}: {exc.strerror}") from None
    else:
        text = os.environ.get(env, "").strip()
        if not text:
            if not required:
                return None
            raise ConfigError(f"set {env} to {what} (or use {flag})")
    try:
        key = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError(f"{what} must be 32 bytes of hex")
    return key


def private_key(args: argparse.Namespace) -> bytes:
    role = getattr(args, "key_role", "host")
    key = read_key(args.key_env, args.key_file, f"the {role}'s private key")
    assert key is not None
    return key


@asynccontextmanager
async def wallet(args: argparse.Namespace) -> AsyncIterator[bytes | Signer]:
    """The wallet the command signs with: a :class:`JsonRpcSigner` with ``--signer-url``
    (the key stays in the service; closed on exit), else the private key."""
    url = getattr(args, "signer_url", None)
    if url is None:
        if getattr(args, "signer_address", None) is not None:
            raise ConfigError("--signer-address goes with --signer-url")
        yield private_key(args)
        return
    if args.signer_address is None:
        raise ConfigError("--signer-url needs --signer-address, the wallet it signs for")
    if args.key_file is not None:
        raise ConfigError("give --key-file or --signer-url, not both")
    from ..chain.signer import JsonRpcSigner

    method = args.signer_message_method
    async with JsonRpcSigner(url, args.signer_address, message_method=method) as signer:
        yield signer
