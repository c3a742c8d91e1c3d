"""What several commands share: the parser class, port numbers, and where the chain and a
private key come from (never the command line, where every user of the machine could read
it: an environment variable or a file)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeAlias

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import SDKConfig

__all__ = [
    "KEY_ENV",
    "CommandParser",
    "Commands",
    "add_chain_arguments",
    "port_number",
    "private_key",
    "sdk_config",
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
    parser: argparse.ArgumentParser, *, key_env: str = KEY_ENV, role: str = "host"
) -> None:
    """--manifest/--network/--rpc-url and where the ``role``'s private key comes from."""
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


def private_key(args: argparse.Namespace) -> bytes:
    role = getattr(args, "key_role", "host")
    if args.key_file is not None:
        try:
            text = args.key_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --key-file: {exc.strerror}") from None
    else:
        text = os.environ.get(args.key_env, "").strip()
        if not text:
            raise ConfigError(f"set {args.key_env} to the {role}'s private key (or use --key-file)")
    try:
        key = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError(f"the {role}'s private key must be 32 bytes of hex")
    return key
