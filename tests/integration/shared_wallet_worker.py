"""One worker of tests/integration/test_shared_wallet.py: a process sharing a wallet.

Reads its orders as JSON on stdin (config, key, host, model, count, deposit), opens
``count`` USDC sessions at once with the wallet, then settles them all at once, and prints
what happened as one JSON line: the job ids, the refunds, and every error by type.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

from fabstir_sdk import FabstirSDK, SDKConfig


class _Count(logging.Handler):
    """Counts the transactions signed again after another process took their nonce."""

    signed_again = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "signing again" in record.getMessage():
            type(self).signed_again += 1


async def work(orders: dict[str, Any]) -> dict[str, Any]:
    chain_log = logging.getLogger("fabstir_sdk.chain")
    chain_log.setLevel(logging.DEBUG)
    chain_log.addHandler(_Count())
    config = SDKConfig.model_validate_json(orders["config"])
    errors: list[str] = []
    async with FabstirSDK(config) as sdk:
        await sdk.authenticate(orders["key"])
        pm = sdk.get_payment_manager()
        opened = await asyncio.gather(
            *(
                pm.open_session_job(
                    orders["host"],
                    orders["deposit"],
                    orders["price"],
                    model=orders["model"],
                    token=config.contract_addresses.usdc_token,
                )
                for _ in range(orders["count"])
            ),
            return_exceptions=True,
        )
        jobs = [c.job_id for c in opened if not isinstance(c, BaseException)]
        errors += [f"{type(e).__name__}: {e}" for e in opened if isinstance(e, BaseException)]
        settled = await asyncio.gather(
            *(pm.complete_session_job(job) for job in jobs), return_exceptions=True
        )
        refunds = [s.refund for s in settled if not isinstance(s, BaseException)]
        errors += [f"{type(e).__name__}: {e}" for e in settled if isinstance(e, BaseException)]
    return {"jobs": jobs, "refunds": refunds, "errors": errors, "signed_again": _Count.signed_again}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(work(json.loads(sys.stdin.read())))), flush=True)
