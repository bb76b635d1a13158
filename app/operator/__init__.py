"""The eventcast operator (kopf): scales a gateway Deployment by its open connections and keeps its pods balanced.

``main.py`` starts kopf (login, peering keep-alives, liveness) and the autoscaling loop beside it, ``loop.py``
runs the rounds, ``handlers.py`` reconciles one autoscaler, ``scaling.py`` and ``status.py`` decide without any
I/O, ``peering.py`` says which replica acts, ``scrape.py`` reads the pods' /metrics, ``kube.py`` talks to the
Kubernetes API, ``crd.py`` builds the CRDs and ``simulation.py`` runs a day of load through ``scaling.decide``.
See docs/operator.md.
"""
