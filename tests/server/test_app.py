"""The ServerApp finds the nodes of a run that names no scenes, or refuses it."""

import pytest

from fedscene.common.errors import ConfigError
from fedscene.server.app import connected_nodes


class _Grid:
    """Nodes connecting over time: `schedule[i]` node ids are connected at tick i."""

    def __init__(self, schedule):
        self.schedule, self.tick = schedule, 0

    def get_node_ids(self):
        return range(self.schedule[min(self.tick, len(self.schedule) - 1)])


def _clocked(grid):
    def clock():
        return grid.tick * 0.5

    def sleep(_):
        grid.tick += 1

    return clock, sleep


def test_the_nodes_a_local_simulation_starts_are_counted_once_they_settle():
    grid = _Grid([0, 0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2])
    clock, sleep = _clocked(grid)
    assert connected_nodes(grid, wait_s=60, settle_s=3, clock=clock, sleep=sleep) == 2


def test_a_run_with_no_node_is_refused_not_reported_finished():
    grid = _Grid([0])
    clock, sleep = _clocked(grid)
    with pytest.raises(ConfigError, match="num-nodes"):
        connected_nodes(grid, wait_s=5, settle_s=3, clock=clock, sleep=sleep)
