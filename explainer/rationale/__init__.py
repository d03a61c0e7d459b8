"""Plain-language rationales an agent can read aloud."""

from explainer.rationale._text import band_for, describe_value, rationale

__all__ = ["band_for", "describe_value", "rationale"]
