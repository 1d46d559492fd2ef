"""Model builders."""

from kubetune.models.factory import build_model

__all__ = ["build_model"]
