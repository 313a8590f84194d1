"""Models: one :class:`Backbone` surface (stages, head, features, preprocessing) for every source.

* :mod:`~headstart.models.registry` — model specs (``torchvision:``, ``timm:``, ``hf:``,
  ``efficientnet-lite:``, ``text:``) -> :func:`create_backbone`, :func:`list_models`; one adapter
  module per source (``*_adapter``), sharing :mod:`~headstart.models.stages` (stage discovery),
  :mod:`~headstart.models.surgery` (classifier removal), :mod:`~headstart.models.weights_spec`
  (what a ``--weights`` string means) and :mod:`~headstart.models.weights_files` (local
  state_dicts);
* :mod:`~headstart.models.backbone`, :mod:`~headstart.models.heads`,
  :mod:`~headstart.models.preprocessing` — the surface, the classifier heads, the weights'
  preprocessing;
* :mod:`~headstart.models.label_text` — class names as vectors (CLIP text tower, MiniLM) for
  zero-shot and semantic heads.
"""

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
