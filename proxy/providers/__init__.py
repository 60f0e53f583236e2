"""Provider types. ``create_provider(config)`` builds the adapter for a configured provider."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .base import Provider

if TYPE_CHECKING:
    from ..config import ProviderConfig


# type -> (module, class); imported lazily so a provider's SDK loads only when configured.
PROVIDER_TYPES: dict[str, tuple[str, str]] = {
    "openai": ("openai", "OpenAIProvider"),
    "azure": ("azure", "AzureProvider"),
    "local": ("local", "LocalProvider"),
    "anthropic": ("anthropic", "AnthropicProvider"),
    "groq": ("groq", "GroqProvider"),
    "bedrock": ("bedrock", "BedrockProvider"),
    "vertex": ("vertex", "VertexProvider"),
    "s3": ("s3", "S3Provider"),
    "gcs": ("gcs", "GCSProvider"),
}


def create_provider(config: "ProviderConfig") -> Provider:
    module_name, class_name = PROVIDER_TYPES[config.type]
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name)(config)


__all__ = ["Provider", "create_provider"]
