"""Ctrl-C and SIGTERM, sent for real to real processes: ``fabstir chat`` and a user's script
settle the session on either signal, the same way (issue 13 §3). The proxy's SIGTERM is
tested in test_proxy.py.

Its own devnet without snapshots, like the other host tests: the host outlives each test.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys

import pytest

from fabstir_sdk import SessionState

from .cli_process import Chat, environ, fabstir, foreground, session_id, usdc_of
from .cli_process import host as host  # a fixture
from .cli_process import net as net  # a fixture
from .host_helpers import BUILTIN, read_job, wait_for_job

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("signum", "user"), [(signal.SIGINT, 3), (signal.SIGTERM, 4)])
async def test_chat_settles_on_ctrl_c_and_on_sigterm_alike(net, host, signum, user):
    account = net.accounts[user]
    before = await usdc_of(net, account.address)
    chat = await Chat.start(
        net, "--model", BUILTIN, "--host-address", host.address, key=account.private_key
    )
    assert await chat.say("count to 3") == "1 2 3"
    chat.proc.send_signal(signum)  # while it waits for the next line
    assert chat.proc.stderr is not None
    err = (await chat.proc.stderr.read()).decode()
    assert await chat.proc.wait() == 130, err
    job_id = session_id(err)
    assert re.search(
        rf"Session {job_id} completed \(tx 0x[0-9a-f]{{64}}\): 1,000 tokens billed; paid "
        r"0\.002 USDC \(host 0\.0018 USDC, treasury 0\.0002 USDC\); refunded 0\.998 USDC\.",
        err,
    ), err
    job = await read_job(net, job_id)
    assert (job.status, job.tokens_used, job.refunded_to_user) == (
        SessionState.COMPLETED,
        1000,
        998_000,
    )
    assert await usdc_of(net, account.address) == before - 2000


SCRIPT = """
import asyncio
import os
import sys

import fabstir_sdk
from fabstir_sdk import FabstirSDK, SDKConfig


async def main():
    config = SDKConfig.from_manifest(sys.argv[1], storage_dir=sys.argv[2])
    async with FabstirSDK(config) as sdk:
        await sdk.authenticate(os.environ["USER_KEY"])
        sm = await sdk.get_session_manager()
        session = await sm.create_session(model=sys.argv[3], host=sys.argv[4], deposit="1")
        try:
            answer = await session.send_prompt("count to 3")
            print(session.job_id, answer.text, flush=True)
            await asyncio.Event().wait()  # serve until stopped
        finally:
            s = await session.complete()
            print("settled", s.host_payment, s.refund, flush=True)


{runner}(main())
"""


def background() -> None:
    """``preexec_fn`` for a shell's background job: SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize(
    ("runner", "user", "settles", "start"),
    [
        ("fabstir_sdk.run", 5, True, foreground),
        ("fabstir_sdk.run", 8, True, background),
        ("asyncio.run", 6, False, foreground),
    ],
)
async def test_a_users_script_settles_on_sigterm_with_fabstir_sdk_run(
    net, host, tmp_path, runner, user, settles, start
):
    """With ``fabstir_sdk.run`` SIGTERM takes Ctrl-C's path and the ``finally`` settles, in
    a terminal and in a background job (where SIGINT is ignored); under plain
    ``asyncio.run`` the process is killed with the session still open."""
    account = net.accounts[user]
    before = await usdc_of(net, account.address)
    script = tmp_path / "serve.py"
    script.write_text(SCRIPT.format(runner=runner))
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, str(script), str(net.manifest_path), str(tmp_path / "storage")),
        *(BUILTIN, host.address),
        env={**os.environ, "USER_KEY": account.private_key},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=start,
    )
    try:
        assert proc.stdout is not None
        first = (await proc.stdout.readline()).decode().split(maxsplit=1)
        job_id = int(first[0])
        assert first[1] == "1 2 3\n"
        proc.send_signal(signal.SIGTERM)
        rest, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    job = await read_job(net, job_id)
    if settles:
        assert rest.decode() == "settled 2000 998000\n", err.decode()
        assert err.decode().rstrip().endswith("KeyboardInterrupt"), err.decode()
        assert proc.returncode == -signal.SIGINT  # as after Ctrl-C
        assert (job.status, job.refunded_to_user) == (SessionState.COMPLETED, 998_000)
        assert await usdc_of(net, account.address) == before - 2000
    else:
        assert (proc.returncode, rest) == (-signal.SIGTERM, b"")
        assert job.status is SessionState.ACTIVE
        assert await usdc_of(net, account.address) == before - 1_000_000
        # sessions.md ("your process exits"): the host settles after the dispute window
        await net.advance_time(31)
        job = await wait_for_job(net, job_id, lambda j: j.status != SessionState.ACTIVE)
        assert (job.status, job.tokens_used, job.refunded_to_user) == (
            SessionState.COMPLETED,
            1000,
            998_000,
        )
        assert await usdc_of(net, account.address) == before - 2000


async def test_proxy_settles_on_ctrl_c_and_names_gross_and_net(net, host, tmp_path):
    """Ctrl-C (SIGTERM: test_proxy.py) completes the proxy's sessions; the printed split says
    what was paid and what the host gets of it, in USDC."""
    import openai

    env = environ(FABSTIR_PRIVATE_KEY=net.accounts[7].private_key)
    argv = ["proxy", "--manifest", str(net.manifest_path), "--port", "0"]
    argv += ["--storage-dir", str(tmp_path), "--budget", "2"]
    proc = await fabstir(*argv, env=env, preexec_fn=foreground)
    try:
        assert proc.stdout is not None
        ready = (await proc.stdout.readline()).decode()
        url = re.fullmatch(r"OpenAI-compatible API at (\S+) \(OPENAI_BASE_URL\)\n", ready)
        assert url, ready
        client = openai.AsyncOpenAI(base_url=url.group(1), api_key="unused", max_retries=0)
        reply = await client.chat.completions.create(
            model=BUILTIN, messages=[{"role": "user", "content": "count to 4"}]
        )
        assert reply.choices[0].message.content == "1 2 3 4"
        proc.send_signal(signal.SIGINT)
        _out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    job_id = int(reply.model_extra["fabstir"]["session_id"])
    assert proc.returncode == 0, err.decode()
    assert re.search(
        rf"^Session {job_id} completed \(tx 0x[0-9a-f]{{64}}\): 1,000 tokens billed; paid "
        r"0\.002 USDC \(host 0\.0018 USDC, treasury 0\.0002 USDC\); refunded 1\.998 USDC\.$",
        err.decode(),
        re.M,
    ), err.decode()
    assert (await read_job(net, job_id)).status is SessionState.COMPLETED


async def test_the_hosts_log_names_models_by_name(host):
    """After the sessions above: the host's log says which model it serves by its name;
    the 32-byte id a person cannot read appears nowhere in it."""
    from fabstir_sdk.chain.model_id import model_id

    log = host.log_path.read_text()
    assert f"host {host.address} serving {BUILTIN} on {host.api_url}" in log, log
    assert model_id(BUILTIN)[2:] not in log.lower()
