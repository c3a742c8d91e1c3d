"""FabstirSDK: one configuration, one chain connection, managers built on first use."""

from __future__ import annotations

import enum
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .config import SDKConfig
from .errors import FabstirError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from ._chat_api import Chat
    from .chain.signer import Signer
    from .chain.transport import RpcTransport
    from .managers._context import Context
    from .managers.auth import AuthManager
    from .managers.discovery import DiscoveryManager
    from .managers.host import HostManager
    from .managers.model import ModelManager
    from .managers.payment import PaymentManager
    from .managers.session import SessionManager
    from .managers.storage import StorageManager
    from .managers.treasury import TreasuryManager
    from .models import AuthResult

__all__ = ["FabstirSDK"]

M = TypeVar("M")


class _State(enum.Enum):
    OPEN = 1
    CLOSED = 2


class FabstirSDK:
    """The entry point: ``async with FabstirSDK(config) as sdk: await sdk.authenticate(key)``.

    Managers are created lazily and cached, and share one chain connection and one nonce
    allocator per account. ``aclose()`` is idempotent; a closed SDK refuses further use.
    """

    def __init__(self, config: SDKConfig, *, transport: RpcTransport | None = None) -> None:
        """``transport`` carries the JSON-RPC traffic instead of HTTP to ``config.rpc_url``
        (see :mod:`fabstir_sdk.chain.transport`: a test's scripted node, for example)."""
        if not isinstance(config, SDKConfig):
            raise TypeError("config must be an SDKConfig")
        self.config = config
        self._transport = transport
        self._ctx_: Context | None = None
        self._managers: dict[type[Any], Any] = {}
        self._state = _State.OPEN

    def __repr__(self) -> str:
        from .chain.transport import redact_url  # imported late: `import fabstir_sdk` stays light

        address = self._ctx_.address if self._ctx_ else None
        url = redact_url(self.config.rpc_url)
        return f"FabstirSDK(rpc_url={url!r}, user_address={address!r})"

    async def __aenter__(self) -> FabstirSDK:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the chain connection. Safe to call more than once."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        if self._ctx_ is not None:
            from .managers.session import SessionManager

            sessions = self._managers.get(SessionManager)
            if sessions is not None:
                await sessions.aclose()  # disconnect: hosts settle
            from .managers.discovery import DiscoveryManager

            discovery = self._managers.get(DiscoveryManager)
            if discovery is not None:
                await discovery.stop()  # its P2P node thread and health-check connections
            from .managers.storage import StorageManager

            storage = self._managers.get(StorageManager)
            if storage is not None:
                await storage.aclose()  # its portal connection
            await self._ctx_.client.aclose()

    async def authenticate(self, wallet: str | bytes | LocalAccount | Signer) -> AuthResult:
        """Load the wallet (a private key, a ``LocalAccount`` or any :class:`Signer`) and
        check the RPC's chain id."""
        return await self.get_auth_manager().authenticate(wallet)

    def get_auth_manager(self) -> AuthManager:
        from .managers.auth import AuthManager

        return self._manager(AuthManager)

    def get_payment_manager(self) -> PaymentManager:
        from .managers.payment import PaymentManager

        return self._manager(PaymentManager)

    def get_discovery_manager(self) -> DiscoveryManager:
        from .managers.discovery import DiscoveryManager

        return self._manager(DiscoveryManager)

    async def get_storage_manager(self) -> StorageManager:
        """The user's encrypted S5 storage, initialized (needs ``authenticate()`` first)."""
        from .managers.storage import StorageManager

        manager = self._manager(StorageManager)
        await manager.initialize()
        return manager

    async def get_session_manager(self) -> SessionManager:
        """Sessions with hosts (needs ``authenticate()`` first: it opens your S5 storage)."""
        from .managers.session import SessionManager

        manager: SessionManager | None = self._managers.get(SessionManager)
        if manager is None:
            storage = await self.get_storage_manager()
            manager = SessionManager(
                self._ctx,
                payments=self.get_payment_manager(),
                hosts=self.get_host_manager(),
                storage=storage,
                discovery=self.get_discovery_manager(),
            )
            self._managers[SessionManager] = manager
        return manager

    def get_host_manager(self) -> HostManager:
        from .managers.host import HostManager

        return self._manager(HostManager)

    def get_model_manager(self) -> ModelManager:
        from .managers.model import ModelManager

        return self._manager(ModelManager)

    @property
    def chat(self) -> Chat:
        """OpenAI-shaped chat: ``await sdk.chat.completions.create(model=..., messages=...)``.

        One paid session per model, reused; ``await sdk.chat.aclose()`` completes them (else
        :meth:`aclose` disconnects and the hosts settle). See docs/proxy.md.
        """
        from ._chat_api import Chat

        chat: Chat | None = self._managers.get(Chat)
        if chat is None:
            self._check_open()
            chat = self._managers[Chat] = Chat(self)
        return chat

    def get_treasury_manager(self) -> TreasuryManager:
        from .managers.treasury import TreasuryManager

        return self._manager(TreasuryManager)

    def _check_open(self) -> None:
        if self._state is _State.CLOSED:
            raise FabstirError("this FabstirSDK is closed; create a new one")

    @property
    def _ctx(self) -> Context:
        self._check_open()
        if self._ctx_ is None:
            from .chain.client import ChainClient
            from .managers._context import Context

            client = ChainClient.from_config(self.config, transport=self._transport)
            self._ctx_ = Context(self.config, client)
        return self._ctx_

    def _manager(self, cls: type[M]) -> M:
        ctx = self._ctx
        manager = self._managers.get(cls)
        if manager is None:
            manager = self._managers[cls] = cls(ctx)  # type: ignore[call-arg]
        return manager
