"""One file per model; each registers itself with ``@register_model``."""

from medgen.models.base import GenerativeModel
from medgen.models.registry import available_tasks, get_model_class, register_model

__all__ = ["GenerativeModel", "available_tasks", "get_model_class", "register_model"]
