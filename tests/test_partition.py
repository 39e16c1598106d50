"""A worker host cut off from the network, then back, with the shipped defaults.

Two hosts on this machine: the test's own network namespace is the surviving host (PostgreSQL,
Redis, the SMTP sink, the web process and worker B), and worker A runs alone in a namespace of
its own (devtools/netns.py). A's link is cut silently, as a partition does it (packets vanish:
no RST, no ICMP), and healed later. PostgreSQL, since that is what a team with more than one
worker host runs; a private cluster, listening on the link's address.
"""

import os
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
import redis
from aiosmtpd.controller import Controller

from devtools import localpg, netns
from devtools.localpg import LocalPostgres
from devtools.localredis import LocalRedis, free_port
from devtools.processes import ROOT, start_web, start_worker, wait_for
from tests.client import ApiClient
from tests.conftest import SmtpSink
from tests.factories import WELCOME_TASK

pytestmark = pytest.mark.partition

CUT_SECONDS = 40  # longer than a lease (15 s) and the SMTP timeout (10 s), as outages are


class Site:
    """The surviving host's servers, on the address that host A reaches it by."""

    def __init__(self, host: netns.TestHost, tmp_path: Path, cleanup: ExitStack):
        """Each server is stopped by ``cleanup``, also when a later one fails to start."""
        self.host = host
        address = host.peer_address
        self.postgres = LocalPostgres(("127.0.0.1", address))
        cleanup.callback(self.postgres.stop)
        self.postgres.start()
        self.redis = cleanup.enter_context(LocalRedis(addresses=("127.0.0.1", address)))
        self.sink = SmtpSink()
        self.smtp = Controller(self.sink, hostname=address, port=free_port())
        self.smtp.start()
        cleanup.callback(self.smtp.stop)
        media = tmp_path / "media"
        media.mkdir()
        self.env = {
            **os.environ,
            "DATABASE_URL": self.postgres.url(address),
            "REDIS_URL": self.redis.url_at(address),
            "EMAIL_URL": f"smtp://{address}:{self.smtp.port}",
            "MEDIA_ROOT": str(media),
            # Real hashing costs ~260 ms a sign-up here; the test is about what follows it.
            "PASSWORD_HASHERS": "django.contrib.auth.hashers.MD5PasswordHasher",
            "PYTHONUNBUFFERED": "1",
        }
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT, env=self.env, check=True, capture_output=True,
        )  # fmt: skip
        self.db = cleanup.enter_context(psycopg.connect(self.postgres.url(), autocommit=True))
        self.broker = cleanup.enter_context(redis.Redis.from_url(self.redis.url))

    def effects(self, prefix: str) -> list[tuple]:
        """(id, task, status, attempts) of every effect concerning users named ``prefix``..."""
        return self.db.execute(
            "SELECT e.id, e.task, e.status, e.attempts FROM workers_effect e"
            " JOIN auth_user u ON u.id = e.user_id WHERE u.username LIKE %s ORDER BY e.id",
            [prefix + "%"],
        ).fetchall()

    def all_done(self, prefix: str, users: int):
        """A wait_for predicate and its diagnosis: every effect of ``users`` users is done."""

        def done() -> bool:
            rows = self.effects(prefix)
            welcomes = sum(1 for row in rows if row[1] == WELCOME_TASK)
            return welcomes == users and all(row[2] == "done" for row in rows)

        def diagnose() -> str:
            return f"not done: {[row for row in self.effects(prefix) if row[2] != 'done']}"

        return done, diagnose

    def deliveries(self, prefix: str) -> dict[str, Counter]:
        """{recipient: Counter(Message-ID -> deliveries)} for recipients named ``prefix``..."""
        found: dict[str, Counter] = {}
        for message in list(self.sink.messages):
            rcpt = message["X-Envelope-To"]
            if rcpt.startswith(prefix):
                found.setdefault(rcpt, Counter())[message["Message-ID"]] += 1
        return found


@pytest.fixture
def site(tmp_path):
    if reason := netns.unavailable_reason() or localpg.unavailable_reason():
        pytest.skip(f"test hosts cannot be made here: {reason}")
    with ExitStack() as cleanup:
        host = cleanup.enter_context(netns.TestHost("a"))
        yield Site(host, tmp_path, cleanup)


def sign_ups(client: ApiClient, prefix: str, count: int) -> Counter:
    return Counter(client.sign_up(f"{prefix}{i}").status_code for i in range(count))


def logged_at(
    path: Path, needles: tuple[str, ...], count: int = 1, after: float = 0.0
) -> float | None:
    """When (time.time()) a worker logged the ``count``-th line since ``after`` containing one
    of ``needles``. Log lines start with their local time (asctime); all processes run in UTC."""
    times = [
        datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for line in path.read_text(errors="replace").splitlines()
        if any(needle in line for needle in needles)
    ]
    times = [t for t in times if t >= after]
    return times[count - 1] if len(times) >= count else None


# How an attempt of a worker ends other than "done": failed, retried, lost, or killed.
ENDED = ("raised unexpected", "step=retry", "step=lost", "past its hard time limit")


def test_a_worker_host_cut_off_then_back_stalls_nothing_and_does_nothing_twice(
    site, tmp_path, figures
):
    """60 sign-ups with worker A alone (two of them stuck at a slow SMTP server, so that A holds
    two attempts and has more messages prefetched), then A's link cut while B starts, 20 more
    sign-ups; A's link healed after 40 s, B stopped, 10 more sign-ups that only A can run."""
    # The first two welcome emails hang at RCPT until the cut: A is mid-attempt on both.
    site.sink.delays = {f"p-slow{i}@example.com": 120.0 for i in range(2)}
    a_log, b_log = tmp_path / "worker-a.log", tmp_path / "worker-b.log"
    with ExitStack() as processes:  # each stopped by its pid at the end, whatever happens
        worker_a = start_worker(site.env, a_log, "a", 2, via=site.host.exec_prefix)
        processes.callback(worker_a.stop)
        web = start_web(site.env, tmp_path / "web.log")
        processes.callback(web.stop)
        client = ApiClient(web.url)
        statuses = sign_ups(client, "p-slow", 2) + sign_ups(client, "p-before", 58)
        # A holds the two slow attempts and has prefetched others (kombu's unacked record).
        wait_for(
            lambda: len([r for r in site.effects("p-slow") if r[2] == "running"]) == 2
            and site.broker.hlen("unacked") >= 4,
            timeout=30, what="worker A to hold two attempts and prefetched messages",
        )  # fmt: skip
        held = site.broker.hlen("unacked")

        site.host.cut()
        cut, cut_at = time.monotonic(), time.time()
        site.sink.delays = {}
        worker_b = start_worker(site.env, b_log, "b", 2)
        processes.callback(worker_b.stop)
        statuses += sign_ups(client, "p-during", 20)
        done, diagnose = site.all_done("p-", 80)
        wait_for(done, timeout=60, what="every effect of the 80 sign-ups", diagnose=diagnose)
        recovered = time.monotonic() - cut
        # A notices, and no attempt of A outlives the cut: each ends (its SMTP and database
        # calls time out, or its hard time limit kills it) instead of waiting for the link.
        noticed = wait_for(
            lambda: logged_at(a_log, ("Connection to broker lost",)),
            timeout=max(0.0, cut + CUT_SECONDS - time.monotonic()),
            what="worker A to notice it lost the broker",
        )  # fmt: skip
        ended = wait_for(
            lambda: logged_at(a_log, ENDED, count=2, after=cut_at),
            timeout=max(0.0, cut + CUT_SECONDS - time.monotonic()),
            what="A's two stuck attempts to end during the cut",
        )

        time.sleep(max(0.0, cut + CUT_SECONDS - time.monotonic()))  # the outage lasts on
        site.host.heal()
        healed = time.monotonic()
        worker_b.stop()  # from now on only A can run anything
        statuses += sign_ups(client, "p-after", 10)
        done_after, diagnose_after = site.all_done("p-after", 10)
        wait_for(done_after, timeout=30, what="A to run new effects", diagnose=diagnose_after)
        a_healthy = time.monotonic() - healed
        # A has run ten effects since the heal: a stale attempt of A's would have written by now.
        final = site.effects("p-")

    deliveries = site.deliveries("p-")
    duplicated = sum(sum(n.values()) - 1 for n in deliveries.values())
    figures(
        held_by_a_at_cut=held,
        seconds_to_all_done_after_cut=round(recovered, 1),
        seconds_until_a_noticed=round(noticed - cut_at, 1),
        seconds_until_a_attempts_ended=round(ended - cut_at, 1),
        seconds_to_a_running_effects_after_heal=round(a_healthy, 1),
        emails=sum(sum(n.values()) for n in deliveries.values()),
        emails_duplicated=duplicated,
    )
    assert statuses == {201: 90}
    assert recovered <= 30, "the survivors finish a cut-off host's work within 30 s"
    assert noticed - cut_at <= 20, "a cut-off worker notices within seconds"
    assert a_healthy <= 10, "a healed worker runs new effects within 10 s"
    assert all(row[2] == "done" for row in final), [r for r in final if r[2] != "done"]
    assert len(deliveries) == 90, "every user got a welcome email"
    assert all(len(ids) == 1 for ids in deliveries.values()), "one Message-ID per effect"
    assert duplicated <= 2, "redone at most what A had in flight (its two processes)"
