"""The harness: what only the tests, the benchmarks and the scripts use.

A registry with its token server on loopback (registry), network namespaces
joined by a bridge (netns), Chromium through Playwright (chromium) and a
throw-away PostgreSQL cluster (postgres). It ships with the package so that
a clone's tests, ``bench/`` and ``scripts/`` can import it, but no product
module imports it: ``tests/unit/test_import_graph.py`` keeps it so.
"""
