"""What a connection sends to PostgreSQL, read from libpq's own trace of the protocol."""

import tempfile

from django.db import connection
from psycopg import pq


def queries_sent(work) -> list[str]:
    """The statements this connection sent to the server while `work()` ran (Query messages, and
    Parse messages of the extended protocol with their statement name), in order."""
    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    with tempfile.TemporaryFile("w+") as trace:
        pgconn.trace(trace.fileno())
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            work()
        finally:
            pgconn.untrace()
        trace.seek(0)
        messages = [line.rstrip("\n").split("\t", 3) for line in trace if line.startswith("F\t")]
        return [message[3].strip() for message in messages if message[2] in ("Query", "Parse")]
