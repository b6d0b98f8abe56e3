"""The suite: a YAML file read, checked and turned into typed specs, before anything is planned.

Enter by :func:`bench.suite.load.load_suite`; the modules go down in the order it uses them:

* ``load.py``: ``load_suite`` and the checks between sections (the one entry).
* ``read.py``: strict YAML and ``include:``.  ``overrides.py``: ``--set KEY=VALUE``.
* ``refs.py``: the suite's ``plugins:`` imported, plug-in references and presets parsed.
* ``sections.py``: seeds, weight averaging, zoo, checkpoints, eval.eps.  ``paper.py``: the ``paper:`` table.
* ``specs.py``: the typed specs themselves (``Suite``, ``TrainSpec``, ``PluginRef``, ...).

A threat (``{norm, eps}``) is parsed beside ``ThreatModel`` in ``bench/types.py``.
"""
