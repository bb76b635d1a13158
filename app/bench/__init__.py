"""`eventcast bench`: load generator, scenarios, report, charts and the naive baseline."""

from app.bench.command import bench

__all__ = ["bench"]
