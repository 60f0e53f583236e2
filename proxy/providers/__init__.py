"""Provider types. ``create_provider(config)`` builds the adapter for a configured provider;
the types, their config models and their adapter classes are registered in :mod:`.configs`."""
from __future__ import annotations

from .base import Provider
from .configs import PROVIDER_TYPES, ProviderConfig


def create_provider(config: ProviderConfig) -> Provider:
    # The adapter's module is imported only now, so a provider's SDK loads only when configured.
    return PROVIDER_TYPES[config.type].provider_class()(config)


__all__ = ["Provider", "create_provider"]
