"""Training on Lightning, as named stages: ``fit.train`` = resolve the run -> ``plan`` (typed
decisions with reasons) -> ``loaders`` (cached features or inputs) -> ``trainer.make_trainer``
(the one Trainer factory) -> fit -> ``summary``. Also the LightningModule (``module``), the
feature cache (``features``, ``feature_cache``), scale-out helpers (``distributed``) and the
plug-in interface (``plugins``). See docs/architecture.md."""
