"""``make test`` needs no PostgreSQL installed: a throwaway server comes up where none answers."""

from __future__ import annotations

import psycopg

from services.cli.cluster import free_port
from tests import throwaway_pg


def test_a_throwaway_server_comes_up_when_nothing_answers() -> None:
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    assert not throwaway_pg.answers(dead, timeout=1)
    url = throwaway_pg.maintenance_url(dead)
    assert url != dead and url.startswith("postgresql://postgres@127.0.0.1:")
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        assert row is not None and str(row[0]).split(".")[0].isdigit()
        conn.execute("CREATE DATABASE splice_throwaway_check")
        conn.execute("DROP DATABASE splice_throwaway_check")
    # a server that answers is used as it is
    assert throwaway_pg.maintenance_url(url) == url
