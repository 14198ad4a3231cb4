"""The benchmark of issue 7: MQIC's cost model against the naive path, measured side by side.

Run it with ``python -m tests.bench.run`` (see README.md here). It is not part of the test
suite: no module here is named ``test_*``, so pytest never collects it.
"""
