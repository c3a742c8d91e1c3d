"""fabstir_sdk: Python asyncio SDK for the Fabstir decentralized LLM inference market."""
