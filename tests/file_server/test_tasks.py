"""The task state machine (file_server.tasks) on a fake clock: no sockets, no store."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import file_ticket
from common.commands import Cmd
from common.pb import base_pb2, file_pb2
from file_server.tasks import (
    DOWNLOAD,
    OFFLINE,
    ONLINE,
    RECEIVER,
    SENDER,
    UPLOAD,
    UPLOAD_CHUNK,
    Abort,
    Action,
    Close,
    Commit,
    Count,
    Limits,
    Offline,
    Read,
    Refusal,
    Send,
    Task,
    Tasks,
    Write,
)

KEY = b"t" * 32
ALICE, BOB, MALLORY = 11, 12, 13
LIMITS = Limits(
    max_file_size=1 << 20,
    max_chunk_size=64 * 1024,
    max_tasks_per_user=3,
    max_tasks=5,
    task_idle_timeout=60.0,
    task_join_timeout=300.0,
)


def table(limits: Limits = LIMITS) -> Tasks:
    return Tasks((KEY,), limits)


def make(tasks: Tasks, size: int = 1000, mode: int = ONLINE, now: float = 0.0) -> Task:
    return tasks.create(ALICE, BOB, "a.txt", size, mode, now, 1_000_000.0, 3600.0)


def login(user_id: int, ticket: str, role: int) -> file_pb2.IMFileLoginReq:
    return file_pb2.IMFileLoginReq(user_id=user_id, task_id=ticket, file_role=role)  # type: ignore[arg-type]


def sent(actions: list[Action], peer: Any, command: int | None = None) -> list[Send]:
    return [a for a in actions if isinstance(a, Send) and a.peer == peer and command in (None, a.command)]


def closed(actions: list[Action]) -> set[Any]:
    return {a.peer for a in actions if isinstance(a, Close)}


def pull(ticket: str, user_id: int, offset: int, size: int, mode: int = ONLINE) -> file_pb2.IMFilePullDataReq:
    return file_pb2.IMFilePullDataReq(
        task_id=ticket,
        user_id=user_id,
        trans_mode=mode,  # type: ignore[arg-type]
        offset=offset,
        data_size=size,
    )


def chunk(ticket: str, user_id: int, offset: int, data: bytes) -> file_pb2.IMFilePullDataRsp:
    return file_pb2.IMFilePullDataRsp(
        result_code=0, task_id=ticket, user_id=user_id, offset=offset, file_data=data
    )


def joined_online(tasks: Tasks, size: int = 1000) -> Task:
    task = make(tasks, size)
    tasks.login("s", login(ALICE, task.tickets[SENDER], SENDER), 1, 0.0)
    tasks.login("r", login(BOB, task.tickets[RECEIVER], RECEIVER), 1, 0.0)
    return task


# -- online ------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(1, 200_000),
    receiver_first=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_online_transfer_relays_every_byte(size: int, receiver_first: bool, seed: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(size)
    tasks = table()
    task = make(tasks, size)
    s_ticket, r_ticket = task.tickets[SENDER], task.tickets[RECEIVER]
    order = [("r", BOB, r_ticket, RECEIVER), ("s", ALICE, s_ticket, SENDER)]
    if not receiver_first:
        order.reverse()
    first = tasks.login(order[0][0], login(*order[0][1:]), 5, 0.0)
    assert [a.command for a in sent(first, order[0][0])] == [Cmd.FILE_LOGIN_RES]  # nobody is ready yet
    second = tasks.login(order[1][0], login(*order[1][1:]), 6, 0.0)
    rsp = sent(second, order[1][0], Cmd.FILE_LOGIN_RES)
    assert rsp[0].seq == 6 and rsp[0].message == file_pb2.IMFileLoginRsp(result_code=0, task_id=order[1][2])
    (ready,) = sent(second, "r", Cmd.FILE_STATE)
    assert ready.message == file_pb2.IMFileState(
        state=base_pb2.CLIENT_FILE_PEER_READY, task_id=r_ticket, user_id=ALICE
    )

    got = bytearray()
    seq = 0
    while len(got) < size:
        seq += 1
        want = rng.randint(1, LIMITS.max_chunk_size)
        (forward,) = tasks.pull_req("r", pull(r_ticket, BOB, len(got), want), seq, 1.0)
        assert isinstance(forward, Send) and forward.peer == "s" and forward.seq == seq
        assert isinstance(forward.message, file_pb2.IMFilePullDataReq)
        assert forward.message.task_id == s_ticket and forward.message.offset == len(got)
        # The sender may answer with less than asked (the end of its file).
        piece = data[len(got) : len(got) + rng.randint(1, want)]
        (back,) = tasks.pull_rsp("s", chunk(s_ticket, ALICE, len(got), piece), 1.0)
        assert isinstance(back, Send) and back.peer == "r" and back.seq == seq
        assert isinstance(back.message, file_pb2.IMFilePullDataRsp) and back.message.task_id == r_ticket
        got += back.message.file_data
    assert bytes(got) == data
    done = file_pb2.IMFileState(state=base_pb2.CLIENT_FILE_DONE, task_id=r_ticket, user_id=BOB)
    end = tasks.state("r", done, 2.0)
    (told,) = sent(end, "s", Cmd.FILE_STATE)
    assert told.message == file_pb2.IMFileState(
        state=base_pb2.CLIENT_FILE_DONE, task_id=s_ticket, user_id=BOB
    )
    assert closed(end) == {"s", "r"}
    assert tasks.open_count == 0 and tasks.per_user == {} and tasks.joined == {}


def test_a_third_user_cannot_join() -> None:
    tasks = table()
    task = make(tasks)
    receiver_ticket = task.tickets[RECEIVER]
    with pytest.raises(Refusal) as refused:
        tasks.login("m", login(MALLORY, receiver_ticket, RECEIVER), 1, 0.0)  # Bob's ticket
    assert refused.value.reason == "bad_ticket" and refused.value.result_code == 3
    with pytest.raises(Refusal, match="ticket"):
        tasks.login("m", login(BOB, task.tickets[SENDER], RECEIVER), 1, 0.0)  # Alice's ticket, Bob's id
    with pytest.raises(Refusal, match="ticket"):
        tasks.login("m", login(ALICE, task.tickets[SENDER], RECEIVER), 1, 0.0)  # the wrong role
    forged = file_ticket.mint(b"another key" * 3, task.key, MALLORY, RECEIVER)
    with pytest.raises(Refusal, match="ticket"):
        tasks.login("m", login(MALLORY, forged, RECEIVER), 1, 0.0)
    tasks.login("r", login(BOB, receiver_ticket, RECEIVER), 1, 0.0)
    with pytest.raises(Refusal) as twice:
        tasks.login("r2", login(BOB, receiver_ticket, RECEIVER), 1, 0.0)
    assert twice.value.reason == "already_joined"
    assert set(tasks.joined) == {"r"}


def test_bounds_of_a_new_task() -> None:
    tasks = table()
    for size, reason in ((LIMITS.max_file_size + 1, "too_large"), (0, "empty")):
        with pytest.raises(Refusal) as refused:
            make(tasks, size)
        assert refused.value.reason == reason
    with pytest.raises(Refusal, match="from 11 to 11"):
        tasks.create(ALICE, ALICE, "a", 10, ONLINE, 0.0, 0.0, 1.0)
    for _ in range(LIMITS.max_tasks_per_user):
        make(tasks)
    with pytest.raises(Refusal) as per_user:
        make(tasks)
    assert per_user.value.reason == "too_many_user_tasks"
    tasks.create(21, 22, "a", 10, ONLINE, 0.0, 0.0, 1.0)
    tasks.create(23, 24, "a", 10, ONLINE, 0.0, 0.0, 1.0)
    with pytest.raises(Refusal) as full:
        tasks.create(25, 26, "a", 10, ONLINE, 0.0, 0.0, 1.0)
    assert full.value.reason == "too_many_tasks"


def test_a_chunk_must_be_the_one_asked_for() -> None:
    tasks = table()
    task = joined_online(tasks, 100_000)
    s_ticket, r_ticket = task.tickets[SENDER], task.tickets[RECEIVER]
    with pytest.raises(Refusal) as nobody_asked:
        tasks.pull_rsp("s", chunk(s_ticket, ALICE, 0, b"x"), 1.0)
    assert nobody_asked.value.reason == "not_expected"
    for offset, size, reason in (
        (100_000, 10, "bad_offset"),
        (0, 0, "bad_size"),
        (0, 64 * 1024 + 1, "bad_size"),
    ):
        with pytest.raises(Refusal) as refused:
            tasks.pull_req("r", pull(r_ticket, BOB, offset, size), 1, 1.0)
        assert refused.value.reason == reason
    tasks.pull_req("r", pull(r_ticket, BOB, 1000, 10), 1, 1.0)
    with pytest.raises(Refusal) as twice:
        tasks.pull_req("r", pull(r_ticket, BOB, 1010, 10), 2, 1.0)
    assert twice.value.reason == "not_expected"
    with pytest.raises(Refusal) as wrong_offset:
        tasks.pull_rsp("s", chunk(s_ticket, ALICE, 1001, b"x" * 10), 1.0)
    assert wrong_offset.value.reason == "bad_offset"
    with pytest.raises(Refusal) as too_much:
        tasks.pull_rsp("s", chunk(s_ticket, ALICE, 1000, b"x" * 11), 1.0)
    assert too_much.value.reason == "too_much_data"
    with pytest.raises(Refusal) as not_me:
        tasks.pull_rsp("s", chunk(r_ticket, ALICE, 1000, b"x" * 10), 1.0)  # the receiver's ticket
    assert not_me.value.reason == "wrong_task"
    with pytest.raises(Refusal) as role:
        tasks.pull_rsp("r", chunk(r_ticket, BOB, 1000, b"x" * 10), 1.0)  # the receiver has no data to give
    assert role.value.reason == "not_expected"
    with pytest.raises(Refusal) as stranger:
        tasks.pull_req("m", pull(r_ticket, BOB, 0, 10), 1, 1.0)
    assert stranger.value.reason == "before_login"


def test_a_peer_that_leaves_mid_transfer_cancels_it() -> None:
    tasks = table()
    task = joined_online(tasks)
    actions = tasks.gone("s", 1.0)
    (cancel,) = sent(actions, "r", Cmd.FILE_STATE)
    assert cancel.message == file_pb2.IMFileState(
        state=base_pb2.CLIENT_FILE_CANCEL, task_id=task.tickets[RECEIVER], user_id=ALICE
    )
    assert closed(actions) == {"r"} and tasks.open_count == 0


def test_a_peer_that_leaves_before_the_other_came_may_come_back() -> None:
    tasks = table()
    task = make(tasks)
    tasks.login("s", login(ALICE, task.tickets[SENDER], SENDER), 1, 0.0)
    assert tasks.gone("s", 1.0) == []
    tasks.login("s2", login(ALICE, task.tickets[SENDER], SENDER), 1, 2.0)
    assert set(tasks.joined) == {"s2"}


def test_join_timeout_on_a_fake_clock() -> None:
    tasks = table()
    task = make(tasks, now=10.0)
    tasks.login("s", login(ALICE, task.tickets[SENDER], SENDER), 1, 10.0)
    assert tasks.tick(10.0 + LIMITS.task_join_timeout - 0.1) == []
    actions = tasks.tick(10.0 + LIMITS.task_join_timeout)
    assert closed(actions) == {"s"} and Count("join_timeout") in actions
    assert tasks.open_count == 0 and tasks.per_user == {}


def test_idle_timeout_on_a_fake_clock() -> None:
    tasks = table()
    task = joined_online(tasks)
    tasks.pull_req("r", pull(task.tickets[RECEIVER], BOB, 0, 10), 1, 30.0)
    assert tasks.tick(30.0 + LIMITS.task_idle_timeout - 0.1) == []
    actions = tasks.tick(30.0 + LIMITS.task_idle_timeout)
    assert closed(actions) == {"s", "r"} and Count("idle_timeout") in actions
    assert tasks.open_count == 0


# -- offline -----------------------------------------------------------------------------------


def test_offline_upload_is_pulled_checked_and_committed() -> None:
    size = 2 * UPLOAD_CHUNK + 5
    data = random.Random(1).randbytes(size)
    tasks = table()
    task = make(tasks, size, OFFLINE)
    ticket = task.tickets[UPLOAD]
    assert task.offline is not None and not task.offline.complete
    with pytest.raises(Refusal):
        tasks.login("d", login(BOB, task.tickets[DOWNLOAD], DOWNLOAD), 1, 0.0)  # nothing to download yet
    actions = tasks.login("u", login(ALICE, ticket, UPLOAD), 3, 0.0)
    assert Abort(task.key) in actions
    (ask,) = sent(actions, "u", Cmd.FILE_PULL_DATA_REQ)
    assert ask.message == pull(ticket, ALICE, 0, UPLOAD_CHUNK, OFFLINE)
    with pytest.raises(Refusal) as early:
        tasks.pull_rsp("u", chunk(ticket, ALICE, UPLOAD_CHUNK, data[:10]), 1.0)
    assert early.value.reason == "bad_offset"
    offset = 0
    writes = b""
    while True:
        piece = data[offset : offset + UPLOAD_CHUNK]
        actions = tasks.pull_rsp("u", chunk(ticket, ALICE, offset, piece), 1.0)
        writes += b"".join(a.data for a in actions if isinstance(a, Write))
        offset += len(piece)
        if offset == size:
            break
        (ask,) = sent(actions, "u", Cmd.FILE_PULL_DATA_REQ)
        assert isinstance(ask.message, file_pb2.IMFilePullDataReq)
        assert ask.message.offset == offset and ask.message.data_size == min(UPLOAD_CHUNK, size - offset)
    assert writes == data
    (commit,) = [a for a in actions if isinstance(a, Commit)]
    assert commit.offline.key == task.key and commit.peer == "u"
    (done,) = sent(list(commit.after), "u", Cmd.FILE_STATE)
    assert isinstance(done.message, file_pb2.IMFileState) and done.message.state == base_pb2.CLIENT_FILE_DONE
    assert closed(list(commit.after)) == {"u"}
    assert tasks.open_count == 0 and tasks.per_user == {}


def test_an_upload_cut_short_starts_over() -> None:
    tasks = table()
    task = make(tasks, UPLOAD_CHUNK + 1, OFFLINE)
    ticket = task.tickets[UPLOAD]
    tasks.login("u", login(ALICE, ticket, UPLOAD), 1, 0.0)
    tasks.pull_rsp("u", chunk(ticket, ALICE, 0, b"x" * UPLOAD_CHUNK), 1.0)
    assert tasks.gone("u", 2.0) == [Abort(task.key)]
    actions = tasks.login("u2", login(ALICE, ticket, UPLOAD), 1, 3.0)
    (ask,) = sent(actions, "u2", Cmd.FILE_PULL_DATA_REQ)
    assert isinstance(ask.message, file_pb2.IMFilePullDataReq) and ask.message.offset == 0


def test_an_upload_after_a_restart_comes_back_from_its_meta() -> None:
    before = table()
    task = make(before, 100, OFFLINE)
    assert task.offline is not None
    after = table()  # a new process, the same key
    actions = after.login("u", login(ALICE, task.tickets[UPLOAD], UPLOAD), 1, 0.0, task.offline)
    assert sent(actions, "u", Cmd.FILE_PULL_DATA_REQ)


def stored(key: str, complete: bool = True, size: int = 100_000) -> Offline:
    return Offline(key, ALICE, BOB, "a.txt", size, 0.0, 10.0, complete)


def test_download_reads_any_chunk_and_says_done_after_the_last() -> None:
    tasks = table()
    key = file_ticket.new_task_key()
    ticket = tasks.mint(key, BOB, DOWNLOAD)
    with pytest.raises(Refusal) as gone:
        tasks.login("d", login(BOB, ticket, DOWNLOAD), 1, 0.0, None)  # deleted, expired or never made
    assert gone.value.reason == "no_task"
    with pytest.raises(Refusal) as half:
        tasks.login("d", login(BOB, ticket, DOWNLOAD), 1, 0.0, stored(key, complete=False))
    assert half.value.reason == "not_uploaded"
    with pytest.raises(Refusal, match="ticket"):
        tasks.login("d", login(MALLORY, ticket, DOWNLOAD), 1, 0.0, stored(key))
    actions = tasks.login("d", login(BOB, ticket, DOWNLOAD), 4, 0.0, stored(key))
    assert sent(actions, "d", Cmd.FILE_LOGIN_RES)[0].seq == 4
    (read,) = tasks.pull_req("d", pull(ticket, BOB, 50_000, 32_768, OFFLINE), 9, 1.0)
    assert isinstance(read, Read) and (read.offset, read.length, read.seq, read.after) == (
        50_000,
        32_768,
        9,
        (),
    )
    assert read.reply.task_id == ticket
    (last,) = tasks.pull_req("d", pull(ticket, BOB, 90_000, 32_768, OFFLINE), 10, 1.0)
    assert isinstance(last, Read) and last.length == 10_000
    (done,) = sent(list(last.after), "d", Cmd.FILE_STATE)
    assert done.message == file_pb2.IMFileState(
        state=base_pb2.CLIENT_FILE_DONE, task_id=ticket, user_id=ALICE
    )
    with pytest.raises(Refusal) as past:
        tasks.pull_req("d", pull(ticket, BOB, 100_000, 1, OFFLINE), 11, 1.0)
    assert past.value.reason == "bad_offset"
    assert tasks.open_count == 1 and tasks.per_user == {BOB: 1}
    assert closed(tasks.delete(key)) == {"d"}
    assert tasks.open_count == 0 and tasks.per_user == {}


def test_an_idle_download_is_closed() -> None:
    tasks = table()
    key = file_ticket.new_task_key()
    ticket = tasks.mint(key, BOB, DOWNLOAD)
    tasks.login("d", login(BOB, ticket, DOWNLOAD), 1, 0.0, stored(key))
    assert tasks.tick(LIMITS.task_idle_timeout - 1) == []
    actions = tasks.tick(LIMITS.task_idle_timeout)
    assert closed(actions) == {"d"} and Count("idle_timeout") in actions and tasks.open_count == 0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["login", "pull", "chunk", "state", "gone"]),
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**17),
            st.sampled_from([SENDER, RECEIVER, UPLOAD, DOWNLOAD]),
        ),
        max_size=30,
    )
)
def test_a_stranger_changes_nothing(frames: list[tuple[str, int, int, int]]) -> None:
    """Whatever a connection that is no participant sends, it is refused and the task is untouched."""
    tasks = table()
    task = joined_online(tasks, 100_000)
    before = (dict(task.peers), task.state, task.done, task.pending, dict(tasks.joined))
    for kind, number, offset, role in frames:
        ticket = random.Random(number).choice([*task.tickets.values(), "junk"])
        try:
            if kind == "login":
                tasks.login("m", login(MALLORY, ticket, role), 1, 0.0)
            elif kind == "pull":
                tasks.pull_req("m", pull(ticket, number, offset, 10), 1, 0.0)
            elif kind == "chunk":
                tasks.pull_rsp("m", chunk(ticket, number, offset, b"x"), 0.0)
            elif kind == "state":
                state = file_pb2.IMFileState(
                    state=base_pb2.CLIENT_FILE_CANCEL, task_id=ticket, user_id=number
                )
                tasks.state("m", state, 0.0)
            else:
                assert tasks.gone("m", 0.0) == []
                continue
        except Refusal:
            continue
        raise AssertionError(f"{kind} from a stranger was accepted")
    assert (dict(task.peers), task.state, task.done, task.pending, dict(tasks.joined)) == before
