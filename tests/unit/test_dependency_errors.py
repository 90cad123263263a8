"""Which exceptions are a dependency outage (503 dependency_unavailable) and which stay bugs or
ordinary answers of a working server."""

import psycopg
import pytest
import redis.exceptions
from psycopg import errors as pgerrors
from psycopg_pool import PoolTimeout

from ffmpeg_api.errors import DependencyUnavailable, unavailable_dependency


@pytest.mark.parametrize(
    ("exc", "dependency"),
    [
        (PoolTimeout("couldn't get a connection after 1.00 sec"), "postgresql"),
        (psycopg.OperationalError("connection failed: Connection refused"), "postgresql"),
        (
            pgerrors.AdminShutdown("terminating connection due to administrator command"),
            "postgresql",
        ),
        (pgerrors.CannotConnectNow("the database system is starting up"), "postgresql"),
        (pgerrors.TooManyConnections("sorry, too many clients already"), "postgresql"),
        (redis.exceptions.ConnectionError("Connection refused"), "redis"),
        (redis.exceptions.TimeoutError("Timeout reading from socket"), "redis"),
        (redis.exceptions.BusyLoadingError("Redis is loading the dataset"), "redis"),
        # A working server's answers are not outages.
        (pgerrors.DeadlockDetected("deadlock detected"), None),
        (pgerrors.QueryCanceled("canceling statement due to statement timeout"), None),
        (pgerrors.UniqueViolation("duplicate key"), None),
        (redis.exceptions.ResponseError("WRONGTYPE"), None),
        (ValueError("bug"), None),
    ],
)
def test_outages_are_told_from_other_errors(exc, dependency):
    assert unavailable_dependency(exc) == dependency


def test_the_answer_is_a_503_with_retry_after_in_the_error_shape():
    err = DependencyUnavailable("postgresql")
    assert err.status == 503
    assert int(err.headers["Retry-After"]) >= 1
    assert err.to_dict() == {
        "error": {
            "code": "dependency_unavailable",
            "message": "postgresql is unavailable; retry later",
        }
    }
