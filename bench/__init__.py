"""The benchmark suite (`make bench`): not part of the test suite; see `bench/run.py`."""
