"""The plan: a checked suite expanded into a graph of tasks, each keyed by what it computes.

* ``expand.py``: Suite -> Plan (``bench.expand``), and the checks that need the plan's rows and columns.
* ``tasks.py``: the task kinds, ``SuiteRef`` / ``WeightsRef`` and ``Plan`` with its graph helpers.
* ``keys.py``: what keys each task.  ``shards.py``: an evaluation split by sample.  ``cost.py``: estimates.
"""
