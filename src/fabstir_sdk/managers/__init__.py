"""The managers behind :class:`~fabstir_sdk.FabstirSDK`, one per domain.

Importing any of them imports them all (they share eth-account and the chain codec), and
gives the classes users hold their public path: ``fabstir_sdk.Session``, not
``fabstir_sdk.managers._session.Session``, in reprs, tracebacks and ``help()``.
``import fabstir_sdk`` itself stays light: it loads this package on first use of one of
these names.
"""

from ._ranking import RankedHost
from .auth import AuthManager
from .cost import CostEstimate, GasItem
from .discovery import DiscoveryManager
from .host import HostManager
from .model import ModelManager, ModelProposal
from .payment import PaymentManager
from .session import Failover, PromptStream, Session, SessionManager
from .storage import StorageManager
from .treasury import TreasuryManager

__all__ = [
    "AuthManager",
    "CostEstimate",
    "DiscoveryManager",
    "Failover",
    "GasItem",
    "HostManager",
    "ModelManager",
    "ModelProposal",
    "PaymentManager",
    "PromptStream",
    "RankedHost",
    "Session",
    "SessionManager",
    "StorageManager",
    "TreasuryManager",
]

for _name in __all__:
    globals()[_name].__module__ = "fabstir_sdk"
