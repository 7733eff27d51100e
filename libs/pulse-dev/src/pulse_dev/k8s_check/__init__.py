"""Static checks of Pulse's Kubernetes packaging, run by ``make k8s-check``
(``python -m pulse_dev.k8s_check``; ``--help`` for running one check).

- :mod:`~pulse_dev.k8s_check.tools` — the helm and kubectl binaries, fetched once;
- :mod:`~pulse_dev.k8s_check.render` — helm runs, rendered documents, strict schema validation;
- :mod:`~pulse_dev.k8s_check.suite` — a check, its verdict, the PASS/FAIL run;
- :mod:`~pulse_dev.k8s_check.catalogue` — every check, in order;
- :mod:`~pulse_dev.k8s_check.repository` — the checkout, its tools and its renders;
- :mod:`~pulse_dev.k8s_check.testing` — the pytest fixture the k8s-check tests share;
- one module per concern: ``dockerfiles``, ``charts``, ``chart_rules``, ``security``,
  ``pod_security``, ``cluster_scope``, ``features``, ``monitoring``, ``metrics``, ``crd``,
  ``operator_chart``, ``skaffold``, ``skaffold_render``, ``docs``.

Each concern's rules are plain functions from parsed YAML, JSON or text to a list of
problems; only ``tools``, ``render`` and each module's check function touch files or run helm.
"""
