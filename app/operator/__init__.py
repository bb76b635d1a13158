"""The eventcast operator (kopf): scales a gateway Deployment by its open connections and rebalances them.

``main.py`` registers the handlers, ``handlers.py`` runs one reconciliation, ``scaling.py`` and ``status.py``
decide without any I/O, ``metrics.py`` scrapes the pods, ``kube.py`` talks to the Kubernetes API and
``crd.py`` builds the CustomResourceDefinition. See docs/operator.md.
"""
