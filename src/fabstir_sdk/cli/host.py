"""``fabstir host run`` / ``fabstir host withdraw`` (also ``python -m fabstir_sdk.host``).

The host's wallet is a key from an environment variable (``--key-env``, default
``FABSTIR_HOST_PRIVATE_KEY``) or a file (``--key-file``), never from the command line; or a
signer service that holds it (``--signer-url``, ``--signer-address``). Its E2EE key, which
opens session inits, likewise (``--e2ee-key-env``, ``--e2ee-key-file``); see docs/host.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._args import Commands, add_chain_arguments, port_number, read_key, sdk_config, wallet
from ._signals import stop_signals

if TYPE_CHECKING:
    from ..host._node import HostNode

__all__ = ["add", "host_run", "host_withdraw"]


def add(commands: Commands) -> None:
    host = commands.add_parser(
        "host",
        help="run the reference host node, register it and manage it on chain",
        description="The reference compute host: HTTP + encrypted WebSocket sessions, "
        "proofs of work and settlement on chain.",
    )
    actions = host.add_subparsers(dest="host_command", metavar="ACTION", required=True)
    run = actions.add_parser(
        "run",
        help="serve models until Ctrl-C or SIGTERM",
        description="Register (or update) this host on NodeRegistry and serve sessions.",
    )
    add_chain_arguments(run, signer=True)
    run.add_argument(
        "--e2ee-key-env",
        metavar="VAR",
        help="environment variable holding the host's own E2EE key (opens session inits); "
        "default: the wallet's key, or with --signer-url one derived from its signature",
    )
    run.add_argument("--e2ee-key-file", type=Path, help="file holding the host's own E2EE key")
    run.add_argument(
        "--model", action="append", required=True, help="model to serve, 'repo:file' (repeat)"
    )
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    run.add_argument(
        "--port", type=port_number, default=8080, help="port (0: a free one; default 8080)"
    )
    run.add_argument("--public-url", help="URL to register (default http://HOST:PORT)")
    run.add_argument(
        "--price-per-token",
        type=int,
        default=2000,
        help="minimum stablecoin price per 1000 tokens, base units (default 2000)",
    )
    run.add_argument(
        "--price-per-token-native",
        type=int,
        default=10**12,
        help="minimum ETH price per 1000 tokens, wei (default 10^12)",
    )
    run.add_argument(
        "--backend",
        choices=["builtin", "openai"],
        default="builtin",
        help="builtin: the toy model, no weights (default); openai: an OpenAI-compatible server",
    )
    run.add_argument(
        "--token-delay", type=float, default=0.0, help="builtin: seconds between tokens (0)"
    )
    run.add_argument(
        "--first-token-delay", type=float, default=0.0, help="builtin: seconds before the first"
    )
    run.add_argument("--openai-base-url", help="openai: the server, e.g. http://127.0.0.1:8000")
    run.add_argument("--openai-model", help="openai: the model name the server expects")
    run.add_argument("--openai-api-key-env", metavar="VAR", help="openai: env var of the API key")
    run.add_argument(
        "--context-window",
        type=int,
        default=8192,
        help="tokens a session's conversation may hold (default 8192)",
    )
    run.add_argument(
        "--checkpoint-tokens", type=int, default=1000, help="submit a proof every N tokens"
    )
    run.add_argument(
        "--no-register",
        dest="register",
        action="store_false",
        help="the host is registered already: do not register or update it",
    )
    run.add_argument(
        "--allow-plaintext",
        action="store_true",
        help="also serve unauthenticated plaintext sessions and HTTP /v1/inference",
    )
    run.add_argument(
        "--accept-any-signer",
        action="store_true",
        help="accept encrypted session inits signed by any key, as upstream's host does "
        "(upstream's client signs with a key derived from its storage seed); default: only "
        "the job's depositor or a delegate it authorized",
    )
    run.add_argument(
        "--state-dir",
        type=Path,
        help="where the host remembers accepted session inits across restarts "
        "(default: under the user's data directory)",
    )
    run.add_argument(
        "--s5-portal-url", help="publish checkpoints (proofs, sealed deltas) to this S5 portal"
    )
    run.add_argument(
        "--storage-dir", type=Path, help="publish checkpoints to the embedded S5 store here"
    )
    run.add_argument(
        "--shutdown-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="on stop, seconds final proofs may take before giving up (default 10)",
    )
    for name, kind, text in _LIMITS:
        run.add_argument("--" + name.replace("_", "-"), type=kind, help=text)
    run.add_argument(
        "--p2p",
        action="store_true",
        help="also run a libp2p node: DHT records per model and /fabstir/host/1.0.0",
    )
    run.add_argument(
        "--p2p-listen",
        action="append",
        metavar="MULTIADDR",
        help="where the libp2p node listens (repeat; default /ip4/127.0.0.1/tcp/0)",
    )
    run.add_argument(
        "--p2p-bootstrap",
        action="append",
        default=[],
        metavar="MULTIADDR",
        help="a peer to join the DHT through, .../tcp/PORT/p2p/PEER_ID (repeat)",
    )
    run.add_argument("--chain-poll", type=float, default=1.0, help=argparse.SUPPRESS)
    run.add_argument(
        "--ready-json", action="store_true", help="print one JSON line on stdout once serving"
    )
    run.set_defaults(handler=host_run)
    withdraw = actions.add_parser(
        "withdraw",
        help="withdraw this host's earnings from HostEarnings",
        description="Withdraw everything HostEarnings holds for the host in one token.",
    )
    add_chain_arguments(withdraw, signer=True)
    withdraw.add_argument("--token", help="ERC-20 address (default: ETH earnings)")
    withdraw.add_argument("--usdc", action="store_true", help="the configured USDC")
    withdraw.set_defaults(handler=host_withdraw)
    from ._host_actions import add_operator_commands  # argparse only

    add_operator_commands(actions)


#: Per-client limits (HostConfig's defaults unless given): flag, type, help.
_LIMITS: list[tuple[str, type, str]] = [
    ("max_sessions", int, "session jobs served at once (default 256)"),
    ("max_connections_per_ip", int, "open connections from one IP (default 256)"),
    ("frames_per_second", float, "WebSocket frames per second per connection (default 100)"),
    ("frame_burst", int, "WebSocket frames a connection may send at once (default 1000)"),
    ("header_timeout", float, "seconds to send a request head (default 10)"),
    ("idle_timeout", float, "seconds a silent WebSocket stays open (default 300)"),
]


async def host_run(args: argparse.Namespace) -> int:
    from ..host._config import HostConfig
    from ..host._node import HostNode

    config = HostConfig(
        sdk=sdk_config(args),
        models=args.model,
        listen_host=args.host,
        port=args.port,
        public_url=args.public_url,
        price_per_token=args.price_per_token,
        price_per_token_native=args.price_per_token_native,
        backend=args.backend,
        token_delay=args.token_delay,
        first_token_delay=args.first_token_delay,
        openai_base_url=args.openai_base_url,
        openai_model=args.openai_model,
        openai_api_key_env=args.openai_api_key_env,
        context_window=args.context_window,
        checkpoint_tokens=args.checkpoint_tokens,
        auto_register=args.register,
        allow_plaintext=args.allow_plaintext,
        accept_any_signer=args.accept_any_signer,
        state_dir=args.state_dir,
        shutdown_timeout=args.shutdown_timeout,
        **{name: value for name, _, _ in _LIMITS if (value := getattr(args, name)) is not None},
        chain_poll=args.chain_poll,
        p2p=args.p2p,
        p2p_bootstrap=args.p2p_bootstrap,
        **({"p2p_listen": args.p2p_listen} if args.p2p_listen else {}),
    )
    if logging.getLogger().level > logging.INFO:  # an operator wants to see proofs go by
        logging.getLogger("fabstir_sdk.host").setLevel(logging.INFO)
    e2ee_key = None
    if args.e2ee_key_env is not None or args.e2ee_key_file is not None:
        e2ee_key = read_key(
            args.e2ee_key_env or "",
            args.e2ee_key_file,
            "the host's E2EE key",
            flag="--e2ee-key-file",
        )
    async with wallet(args) as signer:
        node = HostNode(config, signer, e2ee_key=e2ee_key)
        return await _serve(node, args)


async def _serve(node: HostNode, args: argparse.Namespace) -> int:
    with stop_signals() as stop:
        try:
            await node.start()
            info: dict[str, Any] = {
                "event": "ready",
                "address": node.address,
                "api_url": node.api_url,
                "public_key": node.public_key.hex(),
                "models": list(node.served.values()),
                "pid": os.getpid(),
                "peer_id": node.p2p.info.peer_id if node.p2p else None,
                "p2p_addrs": node.p2p.info.addrs if node.p2p else [],
            }
            if args.ready_json:
                print(json.dumps(info), flush=True)
            else:
                print(
                    f"Fabstir host {node.address} serving {', '.join(info['models'])}\n"
                    f"  API        {node.api_url}  (WebSocket {node.api_url}/v1/ws)\n"
                    f"  public key {info['public_key']}\n"
                    + (f"  libp2p     {' '.join(info['p2p_addrs'])}\n" if node.p2p else "")
                    + "Press Ctrl-C to stop.",
                    flush=True,
                )
            await stop.wait()
        finally:
            await node.stop()
    return 0


async def host_withdraw(args: argparse.Namespace) -> int:
    from ..host._chain import HostChain

    config = sdk_config(args)
    chain = HostChain(config)
    try:
        async with wallet(args) as signer:
            await chain.open(signer, [])
            token = config.contract_addresses.usdc_token if args.usdc else args.token
            amount = await chain.hosts.get_host_earnings(token)
            tx = await chain.hosts.withdraw_earnings(token)
        print(json.dumps({"withdrawn": amount, "token": token or "ETH", "tx_hash": tx}))
    finally:
        await chain.aclose()
    return 0
