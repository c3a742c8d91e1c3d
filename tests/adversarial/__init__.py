"""Hostile parties as test parts: a malicious host, S5 portal and RPC endpoint, and a
hostile client of the reference host. Each test names the promise it checks."""
