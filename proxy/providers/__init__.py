"""Provider types. ``create_provider(config)`` builds the adapter for a configured provider."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Provider

if TYPE_CHECKING:
    from ..config import ProviderConfig


def create_provider(config: "ProviderConfig") -> Provider:
    if config.type == "openai":
        from .openai import OpenAIProvider

        return OpenAIProvider(config)
    if config.type == "azure":
        from .azure import AzureProvider

        return AzureProvider(config)
    if config.type == "local":
        from .local import LocalProvider

        return LocalProvider(config)
    raise ValueError(f"provider type '{config.type}' is not implemented yet")


__all__ = ["Provider", "create_provider"]
