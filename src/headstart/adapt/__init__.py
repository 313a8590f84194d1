"""Plug-ins beyond plain supervised transfer, built on the public layers below (never on
training internals):

- ``domain``: unsupervised domain adaptation (MMD, DANN) as a training plug-in
  (:class:`~headstart.adapt.domain.DomainPlugin`), and ``--target-eval`` metrics;
- ``pretext``: self-supervised rotation pretraining (``headstart pretrain``);
- ``zeroshot``: classifiers from class names (CLIP text tower, MiniLM label embeddings);
- ``fewshot`` / ``evaluate_episodes``: episodic few-shot evaluation (``headstart fewshot-eval``).
"""
