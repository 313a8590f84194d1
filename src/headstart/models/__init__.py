"""Models: one :class:`Backbone` surface (stages, head, features, preprocessing) for every source."""

from headstart.models.backbone import Backbone, Stage
from headstart.models.heads import make_head
from headstart.models.preprocessing import Preprocessing
from headstart.models.registry import create_backbone, list_models, parse_spec

__all__ = [
    "Backbone",
    "Preprocessing",
    "Stage",
    "create_backbone",
    "list_models",
    "make_head",
    "parse_spec",
]
