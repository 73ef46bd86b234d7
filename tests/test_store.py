"""The store's promises, on a real SQLite file and a real PostgreSQL (see conftest.store_url).

The delivery row is the record of truth: these tests pin down the ack-path transaction,
duplicate detection, atomic claiming, leases (expiry, loss, release) and replay.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from hub.store import (DEAD, PENDING, RUNNING, SUCCEEDED, Attempt, Store, attempts, deliveries, reports,
                       utcnow)


def count(store: Store, table) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()


def an_attempt(outcome: str = "succeeded", **kwargs) -> Attempt:
    return Attempt(started_at=utcnow(), duration_ms=1.5, outcome=outcome, **kwargs)


def claim_all(store: Store, owner: str, lease: float = 60) -> list:
    claimed = []
    while (d := store.claim(owner, lease)) is not None:
        claimed.append(d)
    return claimed


# --- the ack path ----------------------------------------------------------------------------

def test_insert_report_stores_the_report_and_one_pending_delivery_per_destination(store, new_report):
    report = new_report()
    before = utcnow()
    accepted = store.insert_report(report, ["crm", "chat", "file"])

    assert accepted.report_id == report.id
    assert accepted.duplicate is False
    assert accepted.deliveries == [("crm", PENDING), ("chat", PENDING), ("file", PENDING)]
    stored = store.get_report(report.id)
    assert stored is not None and stored.call.id == report.call.id and stored.to_dict() == report.to_dict()
    rows = store.list_deliveries(report_id=report.id)
    assert sorted(d.destination for d in rows) == ["chat", "crm", "file"]
    for d in rows:
        assert (d.status, d.attempts, d.state, d.lease_owner, d.lease_until) == (PENDING, 0, {}, None, None)
        assert before - timedelta(seconds=1) <= d.next_attempt_at <= utcnow()
    assert count(store, attempts) == 0


def test_report_without_destinations_is_still_stored(store, new_report):
    report = new_report()
    assert store.insert_report(report, []) .deliveries == []
    assert store.get_report(report.id) is not None
    assert count(store, deliveries) == 0


@pytest.mark.parametrize("names", [["crm", "crm"], ["crm", "chat", None]],
                         ids=["second-delivery-violates-unique", "third-delivery-violates-not-null"])
def test_a_failure_in_the_middle_of_insert_report_leaves_nothing(store, new_report, names):
    report = new_report()
    with pytest.raises(IntegrityError):
        store.insert_report(report, names)
    assert store.get_report(report.id) is None
    assert (count(store, reports), count(store, deliveries)) == (0, 0)
    # and the report is not remembered as a duplicate: sent again, it is accepted
    accepted = store.insert_report(report, ["crm"])
    assert (accepted.duplicate, accepted.report_id) == (False, report.id)
    assert (count(store, reports), count(store, deliveries)) == (1, 1)


def test_the_same_source_call_and_event_again_is_a_duplicate_with_the_first_id(store, new_report):
    first = new_report("call-1")
    store.insert_report(first, ["crm", "chat"])
    again = new_report("call-1")  # a new report id, as the receiver would make for a resend
    assert again.id != first.id

    accepted = store.insert_report(again, ["crm", "chat", "file"])

    assert (accepted.report_id, accepted.duplicate, accepted.deliveries) == (first.id, True, [])
    assert store.get_report(again.id) is None
    assert (count(store, reports), count(store, deliveries)) == (1, 2)


def test_another_event_or_source_of_the_same_call_is_not_a_duplicate(store, new_report):
    store.insert_report(new_report("call-1"), ["crm"])
    status = new_report("call-1", event="status-update")
    other_source = dataclasses.replace(new_report("call-1"), source="othersource")
    assert store.insert_report(status, ["crm"]).duplicate is False
    assert store.insert_report(other_source, ["crm"]).duplicate is False
    assert count(store, reports) == 3


def test_concurrent_copies_of_one_report_store_it_once(store, new_report):
    copies = [new_report("call-race") for _ in range(8)]
    barrier = threading.Barrier(len(copies))
    results = []

    def send(report):
        barrier.wait()
        results.append(store.insert_report(report, ["crm", "chat"]))

    threads = [threading.Thread(target=send, args=(r,)) for r in copies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == len(copies)
    originals = [r for r in results if not r.duplicate]
    assert len(originals) == 1
    assert {r.report_id for r in results} == {originals[0].report_id}
    assert (count(store, reports), count(store, deliveries)) == (1, 2)


# --- claiming ----------------------------------------------------------------------------------

@pytest.mark.parametrize("batch", [1, 5], ids=["one-at-a-time", "batches-of-5"])
def test_concurrent_claims_never_hand_out_one_delivery_twice(store, new_report, batch):
    if batch > 1 and not hasattr(store, "claim_batch"):
        pytest.skip("this store has no claim_batch")

    def claim_all(store, owner):
        claimed = []
        while got := (store.claim_batch(owner, 60, batch) if batch > 1 else
                      [d for d in [store.claim(owner, 60)] if d is not None]):
            assert len(got) <= batch
            claimed.extend(got)
        return claimed

    for _ in range(10):
        store.insert_report(new_report(), ["a", "b", "c", "d"])
    expected = {d.id for d in store.list_deliveries(limit=None)}
    assert len(expected) == 40
    workers = 8
    barrier = threading.Barrier(workers)
    claimed: dict[str, list] = {}
    errors = []

    def worker(owner):
        barrier.wait()
        try:
            claimed[owner] = claim_all(store, owner)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    ids = [d.id for batch in claimed.values() for d in batch]
    assert len(ids) == len(set(ids)), "a delivery was claimed twice"
    assert set(ids) == expected, "every due delivery is claimed exactly once"
    for owner, batch in claimed.items():
        for d in batch:
            row = store.get_delivery(d.id)
            assert (row.status, row.lease_owner, row.attempts) == (RUNNING, owner, 1)
            assert row.lease_until > utcnow()


def test_claim_takes_only_due_deliveries(store, new_report):
    report = new_report()
    store.insert_report(report, ["later", "done", "dead", "held", "due"])
    by_name = {d.destination: d for d in store.list_deliveries(report_id=report.id)}
    future = utcnow() + timedelta(hours=1)
    for name, status in (("later", PENDING), ("done", SUCCEEDED), ("dead", DEAD)):
        d = store.claim("setup", 60, delivery_id=by_name[name].id)
        assert store.finish(d, "setup", status=status, state={}, attempt=an_attempt(),
                            next_attempt_at=future if status == PENDING else None)
    assert store.claim("holder", 60, delivery_id=by_name["held"].id) is not None

    assert store.has_due()
    got = store.claim("w", 60)
    assert got is not None and got.destination == "due"
    assert store.claim("w", 60) is None
    assert not store.has_due()
    assert store.claim("w", 60, delivery_id=by_name["later"].id) is None


def test_an_expired_lease_makes_the_delivery_claimable_again(store, new_report):
    store.insert_report(new_report(), ["crm"])
    first = store.claim("dead-worker", 0.5)
    assert first is not None and first.attempts == 1
    assert store.claim("w2", 60) is None, "a live lease is not claimable"
    time.sleep(0.6)
    assert store.has_due()
    second = store.claim("w2", 60)
    assert second is not None and second.id == first.id
    assert (second.lease_owner, second.attempts, second.status) == ("w2", 2, RUNNING)


@pytest.mark.parametrize("second_owner", ["other-worker", "same-worker"])
def test_finish_by_a_worker_that_lost_its_lease_changes_nothing(store, new_report, second_owner):
    """The slow worker's lease ran out and the delivery was claimed again (by another worker, or
    by another thread of the same one): the slow worker's outcome is discarded, the new holder's
    counts. (Threads of one dispatcher share an owner name, hence the second case.)"""
    store.insert_report(new_report(), ["crm"])
    slow = store.claim("same-worker", 0.2)
    time.sleep(0.35)
    fresh = store.claim(second_owner, 60)
    assert fresh is not None and fresh.id == slow.id and fresh.attempts == 2

    kept = store.finish(slow, "same-worker", status=DEAD, state={"created": "twice"},
                        attempt=an_attempt("dead", error="late"))

    assert kept is False
    row = store.get_delivery(slow.id)
    assert (row.status, row.lease_owner, row.attempts, row.state, row.last_error) == (
        RUNNING, second_owner, 2, {}, None)
    assert store.list_attempts(slow.id) == []
    assert store.finish(fresh, second_owner, status=SUCCEEDED, state={"id": 1}, attempt=an_attempt(),
                        result="ok")
    row = store.get_delivery(slow.id)
    assert (row.status, row.state, row.result, row.lease_owner) == (SUCCEEDED, {"id": 1}, "ok", None)
    assert [a["number"] for a in store.list_attempts(slow.id)] == [2]


def test_finish_records_the_attempt_state_and_next_time(store, new_report):
    store.insert_report(new_report(), ["crm"])
    d = store.claim("w", 60)
    started = utcnow()
    later = utcnow() + timedelta(seconds=30)
    assert store.finish(d, "w", status=PENDING, state={"contact_id": "c-1"}, next_attempt_at=later,
                        attempt=Attempt(started, 12.5, "retry", 503, "HTTP 503"))
    row = store.get_delivery(d.id)
    assert (row.status, row.state, row.attempts, row.last_error, row.lease_owner) == (
        PENDING, {"contact_id": "c-1"}, 1, "HTTP 503", None)
    assert abs((row.next_attempt_at - later).total_seconds()) < 0.001
    [attempt] = store.list_attempts(d.id)
    assert (attempt["number"], attempt["duration_ms"], attempt["outcome"], attempt["http_status"],
            attempt["error"]) == (1, 12.5, "retry", 503, "HTTP 503")
    assert abs((attempt["started_at"] - started).total_seconds()) < 0.001
    assert store.claim("w", 60) is None, "not due before next_attempt_at"


def test_finish_and_claim_records_the_outcome_and_leases_the_destinations_next_delivery(store, new_report):
    for _ in range(2):
        store.insert_report(new_report(), ["crm", "chat"])
    first = store.claim_batch("w", 60, 1, destination="crm")[0]

    kept, following = store.finish_and_claim(first, "w", 60, status=SUCCEEDED, state={"id": 1},
                                             attempt=an_attempt())

    assert kept is True
    row = store.get_delivery(first.id)
    assert (row.status, row.state, row.lease_owner) == (SUCCEEDED, {"id": 1}, None)
    assert [a["outcome"] for a in store.list_attempts(first.id)] == ["succeeded"]
    assert following is not None and following.id != first.id
    assert (following.destination, following.status, following.lease_owner, following.attempts) == (
        "crm", RUNNING, "w", 1)
    assert store.get_delivery(following.id).status == RUNNING
    assert {d.status for d in store.list_deliveries(destination="chat")} == {PENDING}, "another destination's wait"

    kept, none_left = store.finish_and_claim(following, "w", 60, status=SUCCEEDED, state={}, attempt=an_attempt())
    assert kept is True and none_left is None


def test_finish_and_claim_hands_over_the_same_callers_next_call_as_the_earlier_one_is_recorded(store, new_report):
    calls = [new_report(), new_report()]
    for report in calls:
        store.insert_report(dataclasses.replace(report, customer=dataclasses.replace(
            report.customer, number="+31612345678")), ["crm"], ordered=["crm"])
    first = store.claim("w", 60)
    assert store.claim("other", 60) is None, "the caller's second call waits for the first"

    kept, following = store.finish_and_claim(first, "w", 60, status=SUCCEEDED, state={"contact_id": "c-1"},
                                             attempt=an_attempt())

    assert kept is True and following is not None
    assert following.report_id == calls[1].id and following.lease_owner == "w"
    assert store.earlier_state(following) == {"contact_id": "c-1"}


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_forked_child_writes_under_a_lock_of_its_own_not_the_parents(store):
    """gunicorn forks its workers from a master that preloaded the app. A lock file inherited
    through the fork shares the parent's open file description, which flock locks belong to: the
    child would walk into a write the parent holds. The child must wait for the parent instead."""
    read_end, write_end = os.pipe()
    with store.write() as conn:
        conn.execute(sa.text("SELECT 1"))
        pid = os.fork()
        if pid == 0:  # the child: time how long its write waits, report it, leave at once
            os.close(read_end)
            signal.alarm(10)  # a child stuck on the parent's lock dies, and the test fails
            started = time.monotonic()
            try:
                with store.write():
                    pass
                os.write(write_end, f"{time.monotonic() - started:.3f}".encode())
            finally:
                os._exit(0)
        os.close(write_end)
        time.sleep(0.5)
    waited = float(os.read(read_end, 64) or b"-1")
    os.close(read_end)
    assert os.waitpid(pid, 0)[1] == 0
    assert waited >= 0.4, f"the child's write got in after {waited}s, while the parent's was still open"


def test_release_gives_the_leases_back(store, new_report):
    store.insert_report(new_report(), ["a", "b", "c"])
    mine = [store.claim("stopping", 60), store.claim("stopping", 60)]
    theirs = store.claim("other", 60)

    assert store.release("stopping") == 2

    for d in mine:
        row = store.get_delivery(d.id)
        assert (row.status, row.attempts, row.lease_owner, row.lease_until) == (PENDING, 0, None, None)
        assert row.next_attempt_at <= utcnow()
    assert store.get_delivery(theirs.id).status == RUNNING
    # an attempt that was still running when its lease was given back counts for nothing
    assert store.finish(mine[0], "stopping", status=SUCCEEDED, state={}, attempt=an_attempt()) is False
    assert store.list_attempts(mine[0].id) == []
    again = claim_all(store, "next")
    assert sorted(d.id for d in again) == sorted(d.id for d in mine)
    assert all(d.attempts == 1 for d in again)
    assert store.release("nobody") == 0


# --- replay ----------------------------------------------------------------------------------

def _run_to(store: Store, delivery_id: str, status: str, state: dict, times: int = 1) -> None:
    for _ in range(times):
        d = store.claim("w", 60, delivery_id=delivery_id)
        assert store.finish(d, "w", status=status, state=state,
                            attempt=an_attempt("dead" if status == DEAD else "succeeded"))


def test_requeue_keeps_state_and_resets_attempts(store, new_report):
    report = new_report()
    store.insert_report(report, ["crm", "chat"])
    crm, chat = sorted(store.list_deliveries(report_id=report.id), key=lambda d: d.destination != "crm")
    # three failed attempts, then dead; the contact it created is in its state
    for _ in range(2):
        _run_to(store, crm.id, PENDING, {"contact_id": "c-1"})
    _run_to(store, crm.id, DEAD, {"contact_id": "c-1", "call_id": "k-9"})
    _run_to(store, chat.id, SUCCEEDED, {"ts": "1.2"})
    assert store.get_delivery(crm.id).attempts == 3

    ids = store.requeue(report_id=report.id)

    assert sorted(ids) == sorted([crm.id, chat.id])
    row = store.get_delivery(crm.id)
    assert (row.status, row.attempts, row.state) == (PENDING, 0, {"contact_id": "c-1", "call_id": "k-9"})
    assert row.next_attempt_at <= utcnow()
    assert store.get_delivery(chat.id).state == {"ts": "1.2"}
    assert len(store.list_attempts(crm.id)) == 3, "the history is kept"
    claimed = store.claim("w", 60, delivery_id=crm.id)
    assert claimed.attempts == 1 and claimed.state == {"contact_id": "c-1", "call_id": "k-9"}


def test_requeue_filters_and_never_touches_a_running_delivery(store, new_report):
    r1, r2 = new_report(), new_report()
    store.insert_report(r1, ["crm", "chat"])
    store.insert_report(r2, ["crm", "chat"])
    d = {(x.report_id, x.destination): x for x in store.list_deliveries(limit=None)}
    _run_to(store, d[r1.id, "crm"].id, DEAD, {})
    _run_to(store, d[r1.id, "chat"].id, SUCCEEDED, {})
    _run_to(store, d[r2.id, "crm"].id, DEAD, {})
    running = store.claim("w", 60, delivery_id=d[r2.id, "chat"].id)

    assert sorted(store.requeue(dead_only=True, destination="crm")) == sorted(
        [d[r1.id, "crm"].id, d[r2.id, "crm"].id])
    assert store.get_delivery(d[r1.id, "chat"].id).status == SUCCEEDED
    assert store.requeue(report_id=r2.id, destination="chat") == []
    row = store.get_delivery(running.id)
    assert (row.status, row.lease_owner, row.attempts) == (RUNNING, "w", 1)
    assert store.finish(running, "w", status=SUCCEEDED, state={}, attempt=an_attempt())


def test_requeue_create_missing_adds_a_delivery_once(store, new_report):
    report = new_report()
    store.insert_report(report, ["crm"])
    assert store.requeue(report_id=report.id, destination="chat") == []
    assert len(store.list_deliveries(report_id=report.id)) == 1

    [new_id] = store.requeue(report_id=report.id, destination="chat", create_missing=True)

    row = store.get_delivery(new_id)
    assert (row.report_id, row.destination, row.status, row.attempts, row.state) == (
        report.id, "chat", PENDING, 0, {})
    assert store.requeue(report_id=report.id, destination="chat", create_missing=True) == [new_id]
    assert len(store.list_deliveries(report_id=report.id)) == 2


def test_requeue_racing_claims_never_resets_a_leased_delivery(store, new_report):
    """A replay running while workers claim must not reset a row a worker holds (that would
    deliver it twice and throw away the worker's outcome)."""
    for _ in range(6):
        store.insert_report(new_report(), ["a", "b", "c", "d", "e"])
    stop = threading.Event()
    lost = []
    errors = []

    def replayer():
        while not stop.is_set():
            try:
                store.requeue(dead_only=False)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    def worker(owner):
        for _ in range(40):
            d = store.claim(owner, 60)
            if d is None:
                continue
            if not store.finish(d, owner, status=SUCCEEDED, state={}, attempt=an_attempt()):
                lost.append(d.id)

    threads = [threading.Thread(target=replayer)] + [
        threading.Thread(target=worker, args=(f"w{n}",)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join(60)
    stop.set()
    threads[0].join(10)
    assert errors == []
    assert lost == [], f"{len(lost)} leased deliveries were reset under their worker by requeue"
