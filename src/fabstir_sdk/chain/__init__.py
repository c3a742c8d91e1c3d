"""The one way the SDK talks to contracts: units, addresses, artifacts and transactions."""
