"""``POST /v1/inference`` bodies as upstream's clients send them: which job they name."""

from __future__ import annotations

import pytest

from fabstir_sdk.errors import ProtocolError
from fabstir_sdk.host._http import InferenceRequest


@pytest.mark.parametrize(
    ("fields", "job"),
    [
        ({"jobId": "42", "sessionId": "42"}, 42),  # upstream's sendPrompt
        ({"job_id": 7}, 7),
        ({"sessionId": "9"}, 9),  # upstream's host falls back to the session id
        ({"sessionId": "9n"}, 9),  # a JavaScript BigInt printed with its suffix
        ({"sessionId": "chat-1"}, None),  # not a job: unpaid
        ({}, None),
    ],
)
def test_the_job_a_request_names(fields, job):
    request = InferenceRequest.model_validate({"prompt": "hi", **fields})
    assert request.job_number() == job


@pytest.mark.parametrize("bad", ["abc", "0", "-1", "1" * 79])
def test_a_job_id_that_is_not_one_is_refused(bad):
    request = InferenceRequest.model_validate({"prompt": "hi", "jobId": bad})
    with pytest.raises(ProtocolError):
        request.job_number()


def test_upstream_fields_are_read_by_either_name():
    request = InferenceRequest.model_validate(
        {
            "model": "m",
            "prompt": "hi",
            "max_tokens": 4000,
            "temperature": 0.7,
            "chainId": 31337,
            "conversation_context": [{"role": "user", "content": "earlier"}],
            "web_search": False,
            "thinking": "low",
        }
    )
    assert (request.chain_id, request.max_tokens, len(request.conversation_context)) == (
        31337,
        4000,
        1,
    )
