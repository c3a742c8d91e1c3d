"""The managers behind :class:`~fabstir_sdk.FabstirSDK`, one per domain."""
