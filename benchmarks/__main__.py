"""``python -m benchmarks``: every area's benchmark in one table (see ``benchmarks.suite``)."""

from benchmarks.suite import main

if __name__ == "__main__":
    raise SystemExit(main())
