"""The fixtures and the one hook of the ``fabstir`` pytest plugin (see the package doc)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable, Generator
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pytest

from .._install_hints import pip_install

if TYPE_CHECKING:
    from ..devnet import Devnet, RunningHost
    from ..sdk import FabstirSDK

__all__ = [
    "FIXTURES",
    "HOST_ACCOUNT",
    "USER_ACCOUNT",
    "fabstir_devnet",
    "fabstir_devnet_options",
    "fabstir_host",
    "fabstir_host_options",
    "fabstir_sdk",
    "pytest_addoption",
    "pytest_configure",
    "pytest_pycollect_makeitem",
]

#: Devnet accounts the fixtures use: ``fabstir_sdk`` signs as 1, ``fabstir_host`` as 2.
USER_ACCOUNT = 1
HOST_ACCOUNT = 2
#: The fixtures that need the session's event loop.
FIXTURES = frozenset({"fabstir_devnet", "fabstir_host", "fabstir_sdk"})
#: pytest-asyncio's option that warns on every run while unset, and the value that means
#: what unset means (each async fixture's loop is its own scope), from pytest-asyncio 1.5.
_LOOP_SCOPE_OPTION = "asyncio_default_fixture_loop_scope"
_AS_IF_UNSET = "fixture-scope"


def _on_session_loop(**kwargs: Any) -> Callable[[Any], Any]:
    """An async fixture running on the session's event loop, where the devnet lives.

    Without pytest-asyncio the plugin still loads (it must, in every test suite of an
    environment), and a test that uses one of its fixtures fails saying what to install.
    """
    try:
        import pytest_asyncio
    except ImportError:
        return _needs_pytest_asyncio(**kwargs)
    decorator: Callable[[Any], Any] = pytest_asyncio.fixture(loop_scope="session", **kwargs)
    return decorator


def _needs_pytest_asyncio(**kwargs: Any) -> Callable[[Any], Any]:
    def decorate(func: Callable[..., Any]) -> Any:
        @functools.wraps(func)  # the same name and arguments, but a plain function
        def fixture(*args: Any, **fixture_kwargs: Any) -> None:
            pytest.fail(
                f"the fabstir fixtures need pytest-asyncio: {pip_install('testing')} "
                "(the testing extra)",
                pytrace=False,
            )

        return pytest.fixture(**kwargs)(fixture)

    return decorate


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--fabstir-fork-url``: run every fixture on a fork of that chain, with no conftest."""
    group = parser.getgroup("fabstir")
    group.addoption(
        "--fabstir-fork-url",
        metavar="URL",
        help="fork this chain for the fabstir fixtures (its shipped contracts, e.g. Base "
        "Sepolia's; the test accounts get its USDC and FAB)",
    )
    group.addoption(
        "--fabstir-fork-manifest",
        metavar="PATH",
        help="the forked chain's deployment manifest, where none is shipped for it",
    )


@pytest.fixture(scope="session")
def fabstir_devnet_options(pytestconfig: pytest.Config) -> dict[str, Any]:
    """Keyword arguments for ``Devnet.start``: override it in your conftest.py, e.g. to
    return ``{"fork_url": ..., "addresses": SDKConfig.base_sepolia().contract_addresses}``.
    By default, a fork when ``--fabstir-fork-url`` is given."""
    url = pytestconfig.getoption("fabstir_fork_url", None)
    manifest = pytestconfig.getoption("fabstir_fork_manifest", None)
    return {"fork_url": url, **({"manifest": manifest} if manifest else {})} if url else {}


@pytest.fixture(scope="session")
def fabstir_host_options() -> dict[str, Any]:
    """Keyword arguments for ``Devnet.start_host`` (``models``, ``token_delay``, ...)."""
    return {}


@_on_session_loop(scope="session")
async def fabstir_devnet(fabstir_devnet_options: dict[str, Any]) -> AsyncIterator[Devnet]:
    """One devnet for the whole test session: anvil with the contracts and a local S5 portal."""
    from ..devnet import Devnet

    async with Devnet.start(**{"with_s5": True, **fabstir_devnet_options}) as net:
        yield net


@_on_session_loop(scope="session")
async def fabstir_host(
    fabstir_devnet: Devnet, fabstir_host_options: dict[str, Any]
) -> AsyncIterator[RunningHost]:
    """The reference host (a real process) serving the built-in toy model as account 2."""
    host = await fabstir_devnet.start_host(**{"account": HOST_ACCOUNT, **fabstir_host_options})
    try:
        yield host
    finally:
        await host.stop()


@_on_session_loop()
async def fabstir_sdk(fabstir_devnet: Devnet) -> AsyncIterator[FabstirSDK]:
    """A FabstirSDK authenticated as devnet account 1 (ETH, USDC and FAB), closed after
    the test."""
    from ..sdk import FabstirSDK

    async with FabstirSDK(fabstir_devnet.sdk_config()) as sdk:
        await sdk.authenticate(fabstir_devnet.accounts[USER_ACCOUNT].private_key)
        yield sdk


def _names_fixture_scope() -> bool:
    """Whether the installed pytest-asyncio accepts ``fixture-scope`` (1.5 and later)."""
    try:
        major, minor = (int(part) for part in metadata.version("pytest-asyncio").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (1, 5)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Spare the user's test runs pytest-asyncio's PytestDeprecationWarning about an unset
    ``asyncio_default_fixture_loop_scope``: when their configuration leaves it unset, give it
    the value that behaves as unset does. A value they set is kept.

    pytest has no public way for one plugin to default another's ini option; its ini cache
    is where ``getini`` (and so pytest-asyncio, whose hook runs after this one) reads it.
    """
    if not config.pluginmanager.has_plugin("asyncio") or not _names_fixture_scope():
        return
    if config.getini(_LOOP_SCOPE_OPTION) is None:
        config._inicache[_LOOP_SCOPE_OPTION] = _AS_IF_UNSET


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_pycollect_makeitem(
    collector: pytest.Collector, name: str, obj: object
) -> Generator[None, Any, None]:
    """Run async tests that use our fixtures on the session's event loop.

    ``trylast`` makes this wrapper the innermost, so pytest-asyncio (whichever mode) sees
    the mark when it turns the function into an async test: no decorator needed.
    """
    outcome = yield
    if not inspect.iscoroutinefunction(obj) or not collector.config.pluginmanager.has_plugin(
        "asyncio"
    ):
        return
    result = outcome.get_result()
    for item in result if isinstance(result, list) else [result]:
        if not isinstance(item, pytest.Function) or not FIXTURES & set(item.fixturenames):
            continue
        mark = item.get_closest_marker("asyncio")
        if mark is None or not ({"loop_scope", "scope"} & set(mark.kwargs)):
            item.add_marker(pytest.mark.asyncio(loop_scope="session"), append=False)
