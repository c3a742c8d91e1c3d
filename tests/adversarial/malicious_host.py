"""A scriptable malicious host: registered on chain with its own devnet account, speaking the
wire protocol with the real crypto (:class:`~fabstir_sdk.protocol.HostSession`), and
misbehaving on the switches that are set (all off: an honest host that echoes the prompt's
words, one token a chunk).

Switches (attributes; set them between prompts):

- ``overclaim``: after each answer, prove this many tokens on chain beyond those streamed;
- ``prove_before_ack``: prove this many tokens on chain before acknowledging the init;
- ``never_ack``: never acknowledge the init (the connection stays open, silent);
- ``stall_with_keepalives``: stream three chunks, then send only keep-alives (WebSocket pings
  and ``session_status`` notices) until the switch is turned off (then it reads on) or
  ``stall_for`` seconds passed (then it closes the connection); a ``stream_cancel`` then is
  answered with a ``stream_end`` (``tokens_used`` if set, else 3), and ``cancelled`` is set;
- ``wrong_key``: chunks sealed under a key that is not the session's;
- ``replay_chunk``: the first chunk's frame sent again (byte for byte) after the second;
- ``oversized_frame``: one frame of ``MAX_FRAME_BYTES + 1`` bytes mid-answer;
- ``endless``: chunks, for ever (until the client leaves);
- ``close_mid_answer``: three chunks, then the WebSocket is closed;
- ``tokens_used``: what its ``stream_end`` reports (negative, absurd), instead of the truth;
- ``words_per_chunk``: (honest) this many words, one token each, packed into each chunk; its
  ``stream_end`` reports the words (the truth), not the chunks;
- ``foreign_stream_end``: mid-answer, a ``stream_end`` for another answer (another ``id``);
- ``drop_before_init``: close this many new connections at once, before their init (as a
  host that drops a silent socket); ``dropped`` is set when one is closed;
- ``checkpoint``: its answer to the final checkpoint request: ``"refuse"`` (the default, an
  error frame: it bills on its own terms), ``"silent"`` (no answer at all) or ``"unmined"``
  (``checkpoint_submitted`` naming a transaction that does not exist).

Counters: ``connections`` (opened), ``inits`` (session inits received), ``checkpoints``
(final checkpoint requests received); each connection as a :class:`Visit` in ``visits``
(``visited`` is set when one opens); ``answered`` is set once an honest answer's
``stream_end`` was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass, field

import coincurve
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from fabstir_sdk import FabstirSDK
from fabstir_sdk.devnet import Devnet
from fabstir_sdk.protocol import (
    MAX_FRAME_BYTES,
    CheckpointRequest,
    CheckpointSubmitted,
    Connected,
    EncryptedMessage,
    EncryptedSessionInit,
    HostSession,
    SessionInitAck,
    StreamCancel,
    StreamEnd,
    parse_client_message,
)

PRICE = 2000  # micro-USDC per 1000 tokens, as the honest hosts of the suite
STALLED = ["The", " answer", " is"]
UNMINED_TX = "0x" + "ee" * 32  # a transaction hash no chain holds


@dataclass
class Visit:
    """One connection as the host saw it: the URL it came in on, the inits it carried, and
    ``ended``, set once it is closed (by either side)."""

    url: str
    inits: int = 0
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class MaliciousHost:
    def __init__(self, net: Devnet, account: int) -> None:
        self.net = net
        self.account = net.accounts[account]
        self.address = self.account.address
        self.key = bytes.fromhex(self.account.private_key.removeprefix("0x"))
        # the switches
        self.overclaim = 0
        self.prove_before_ack = 0
        self.never_ack = False
        self.stall_with_keepalives = False
        self.stall_for = 10.0
        self.wrong_key = False
        self.replay_chunk = False
        self.oversized_frame = False
        self.endless = False
        self.close_mid_answer = False
        self.tokens_used: int | None = None
        self.words_per_chunk = 1
        self.foreign_stream_end = False
        self.drop_before_init = 0
        self.checkpoint = "refuse"
        # what it did
        self.connections = 0
        self.inits = 0
        self.visits: list[Visit] = []
        self.visited = asyncio.Event()
        self.checkpoints = 0
        self.dropped = asyncio.Event()
        self.streamed: dict[int, int] = {}  # job id -> tokens it really streamed
        self.proven: dict[int, int] = {}  # job id -> tokens it proved on chain
        self.keepalives = 0
        self.proof_done = asyncio.Event()  # set after each proof it sends
        self.client_left = asyncio.Event()
        self.cancelled = asyncio.Event()  # a stalled answer's stream_end was sent
        self.answered = asyncio.Event()  # an honest answer's stream_end was sent
        self._server: Server | None = None
        self._extra: list[Server] = []
        self._sdk: FabstirSDK | None = None
        self.url = ""

    @property
    def public_key(self) -> str:
        return coincurve.PrivateKey(self.key).public_key.format(compressed=True).hex()

    def behave(self) -> None:
        """Every switch off: an honest host again."""
        self.overclaim = self.prove_before_ack = 0
        self.never_ack = False
        self.stall_with_keepalives = self.wrong_key = self.replay_chunk = False
        self.oversized_frame = self.endless = self.close_mid_answer = False
        self.foreign_stream_end = False
        self.drop_before_init = 0
        self.checkpoint = "refuse"
        self.tokens_used = None
        self.words_per_chunk = 1
        self.client_left = asyncio.Event()
        self.dropped = asyncio.Event()
        self.proof_done = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.answered = asyncio.Event()

    async def start(self, models: list[str]) -> MaliciousHost:
        self._server = await serve(self._handle, "127.0.0.1", 0, max_size=None, compression=None)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self._sdk = FabstirSDK(self.net.sdk_config())
        await self._sdk.authenticate(self.account.private_key)
        await self._sdk.get_host_manager().register_host(
            self.url,
            models,
            min_price_per_token_native=10**12,
            min_price_per_token_stable=PRICE,
            metadata={"publicKey": self.public_key},
        )
        return self

    async def move(self) -> str:
        """Listen on a new port as well and register that URL: the old one still answers,
        so a client that dials it anyway is seen (``connections``) and not refused."""
        assert self._sdk is not None
        moved = await serve(self._handle, "127.0.0.1", 0, max_size=None, compression=None)
        self._extra.append(moved)
        port = next(iter(moved.sockets)).getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        await self._sdk.get_host_manager().update_api_url(self.url)
        return self.url

    async def stop(self) -> None:
        for server in self._extra:
            server.close()
            await server.wait_closed()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._sdk is not None:
            await self._sdk.aclose()

    async def prove(self, job_id: int, tokens: int) -> None:
        """Claim ``tokens`` on chain, whatever was streamed (the contract's rate limit is met
        by moving the devnet's clock, so the claim does not wait on wall time)."""
        assert self._sdk is not None
        await self.net.advance_time(tokens // 100 + 10)
        await self._sdk.get_host_manager().submit_proof_of_work(
            job_id, tokens, os.urandom(32), "bafy-malicious", ""
        )
        self.proven[job_id] = self.proven.get(job_id, 0) + tokens
        self.proof_done.set()

    # ------------------------------------------------------------------ the connection

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        visit = Visit(f"http://127.0.0.1:{ws.local_address[1]}")
        self.visits.append(visit)
        self.visited.set()
        try:  # client_left is set however the connection ends, even before "connected"
            await self._serve(ws, visit)
        except ConnectionClosed:
            pass
        finally:
            visit.ended.set()
            self.client_left.set()

    async def _serve(self, ws: ServerConnection, visit: Visit) -> None:
        await ws.send(Connected().to_json())
        if self.drop_before_init:
            self.drop_before_init -= 1
            await ws.close()  # returns once the client answered the close
            self.dropped.set()
            return
        session: HostSession | None = None
        job_id = 0
        try:
            async for frame in ws:
                message = parse_client_message(frame)
                if isinstance(message, EncryptedSessionInit):
                    self.inits += 1
                    visit.inits += 1
                    session, opened = HostSession.accept(message, host_private_key=self.key)
                    job_id = opened.job_id
                    if self.prove_before_ack:
                        await self.prove(job_id, self.prove_before_ack)
                    if self.never_ack:
                        continue
                    ack = SessionInitAck(
                        session_id=opened.session_id,
                        job_id=opened.job_id,
                        chain_id=self.net.chain_id,
                        client_address=opened.client_address,
                        id=message.id,
                    )
                    await ws.send(ack.to_json())
                elif isinstance(message, EncryptedMessage):
                    assert session is not None
                    await self._answer(ws, session, message, job_id)
                elif isinstance(message, CheckpointRequest):
                    self.checkpoints += 1
                    if self.checkpoint == "refuse":  # it bills on its own terms
                        refusal = {"type": "error", "code": "NOT_SUPPORTED", "message": "no"}
                        await ws.send(json.dumps({**refusal, "id": message.id}))
                    elif self.checkpoint == "unmined":
                        answer = CheckpointSubmitted(
                            job_id=job_id, tokens_claimed=1, tx_hash=UNMINED_TX, id=message.id
                        )
                        await ws.send(answer.to_json())
        except ConnectionClosed:
            pass
        finally:
            self.client_left.set()

    async def _answer(
        self, ws: ServerConnection, session: HostSession, m: EncryptedMessage, job_id: int
    ) -> None:
        request = session.open_message(m)
        sid, cid = session.session_id, m.id
        words = [f" {w}" for w in request.prompt.split()]
        sent = 0  # tokens: one a word

        async def chunk(text: str, tokens: int = 1) -> str:
            nonlocal sent
            frame = session.chunk_frame(text, tokens=tokens, id=cid)
            await ws.send(frame)
            sent += tokens
            return frame

        if self.stall_with_keepalives:
            for piece in STALLED:
                await chunk(piece)
            await self._keep_alive(ws, sid, cid)
            session.reset_response()
            return
        if self.close_mid_answer:
            for piece in STALLED:
                await chunk(piece)
            await ws.close()
            return
        if self.endless:
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await chunk(" more")
                    await asyncio.sleep(0)  # in the test's own process: let the client run
            return
        if self.wrong_key:
            liar = HostSession(os.urandom(32), session_id=sid)
            await ws.send(liar.chunk_frame(words[0], id=cid))
            session.reset_response()
            return
        n = self.words_per_chunk  # several tokens a chunk, each counted
        pieces = [
            ("".join(words[i : i + n]), len(words[i : i + n])) for i in range(0, len(words), n)
        ]
        first = await chunk(*pieces[0])
        if self.replay_chunk:
            await chunk(*(pieces[1] if len(pieces) > 1 else (" again", 1)))
            await ws.send(first)  # the same bytes: a valid frame of the session, out of place
            session.reset_response()
            return
        if self.oversized_frame:
            await ws.send(json.dumps({"type": "session_status", "pad": "x" * MAX_FRAME_BYTES}))
            session.reset_response()
            return
        if self.foreign_stream_end:
            other = StreamEnd(reason="complete", tokens_used=500, session_id=sid, id="not-yours")
            await ws.send(other.to_json())
        for piece in pieces[1:]:
            await chunk(*piece)
        await ws.send(session.chunk_frame("", tokens=0, final=True, id=cid))
        await ws.send(session.response_frame("stop", id=cid))
        reported = sent if self.tokens_used is None else self.tokens_used
        end = {"type": "stream_end", "reason": "complete", "tokens_used": reported}
        prompt = len(words)  # its prompt tokens: one a word
        usage = {"prompt_tokens": prompt, "completion_tokens": reported}
        usage["total_tokens"] = prompt + reported
        await ws.send(json.dumps({**end, "usage": usage, "session_id": sid, "id": cid}))
        self.answered.set()
        self.streamed[job_id] = self.streamed.get(job_id, 0) + sent
        if self.overclaim:
            await self.prove(job_id, sent + self.overclaim)

    async def _keep_alive(self, ws: ServerConnection, sid: str, cid: object) -> None:
        """Pings and status notices, every 50 ms, but never another token, until the client
        cancels the answer (then its stream_end) or ``stall_for`` passes (then it closes)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + self.stall_for
        with contextlib.suppress(ConnectionClosed):
            while loop.time() < until and self.stall_with_keepalives:
                await ws.ping()
                await ws.send(json.dumps({"type": "session_status", "session_id": sid}))
                self.keepalives += 1
                try:
                    frame = await asyncio.wait_for(ws.recv(), 0.05)
                except TimeoutError:
                    continue
                if isinstance(parse_client_message(frame), StreamCancel):
                    end = {"type": "stream_end", "reason": "cancelled", "session_id": sid}
                    used = len(STALLED) if self.tokens_used is None else self.tokens_used
                    await ws.send(json.dumps({**end, "tokens_used": used, "id": cid}))
                    self.cancelled.set()
                    return
            if self.stall_with_keepalives:
                await ws.close()  # gave up: the client never timed out
