"""``perimeter users``: the first admin, accounts and API keys, through the real command line
against a real Redis; and the old ``PERIMETER_API_TOKEN`` as a named, revocable key."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import redis

from central.auth import Accounts, Role
from central.auth.model import Conflict
from cli.central import LEGACY_KEY, legacy_token
from cli.main import main


@pytest.fixture
def users(redis_url: str, redis_ns: str) -> Iterator[tuple[list[str], Accounts]]:
    client = redis.Redis.from_url(redis_url)
    yield ["users", "--redis", redis_url, "--namespace", redis_ns], Accounts(client, redis_ns)
    client.close()


def run(base: list[str], *args: str, stdin: str | None = None,
        monkeypatch: pytest.MonkeyPatch | None = None) -> int:
    if stdin is not None and monkeypatch is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main([*base, *args])


def test_first_admin_accounts_and_keys(users: tuple[list[str], Accounts],
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    base, acc = users
    assert run(base, "list") == 0
    assert "no accounts yet" in capsys.readouterr().out
    assert run(base, "add", "wang", "--role", "admin", "--password-stdin",
               stdin="a long pass phrase\n", monkeypatch=monkeypatch) == 0
    assert acc.check_login("wang", "a long pass phrase") is not None
    # weak password, bad name, site limits on a supervisor: bad input, exit 2
    assert run(base, "add", "li", "--role", "operator", "--password-stdin", stdin="short\n",
               monkeypatch=monkeypatch) == 2
    assert run(base, "add", "Li Si", "--role", "operator", "--password-stdin",
               stdin="a long pass phrase\n", monkeypatch=monkeypatch) == 2
    assert run(base, "add", "zhou", "--role", "supervisor", "--site", "park",
               "--password-stdin", stdin="a long pass phrase\n", monkeypatch=monkeypatch) == 2
    assert run(base, "add", "li", "--role", "operator", "--site", "park", "--password-stdin",
               stdin="another pass phrase\n", monkeypatch=monkeypatch) == 0
    assert run(base, "add", "li", "--role", "viewer", "--password-stdin",
               stdin="another pass phrase\n", monkeypatch=monkeypatch) == 1  # exists
    capsys.readouterr()
    assert run(base, "list") == 0
    rows = [ln.split() for ln in capsys.readouterr().out.splitlines()]
    assert [r[:4] for r in rows[1:]] == [["li", "operator", "park", "active"],
                                         ["wang", "admin", "all", "active"]]
    # the last admin stays; another may be disabled
    assert run(base, "disable", "wang") == 1
    assert run(base, "disable", "li") == 0 and acc.user("li").disabled
    assert run(base, "passwd", "li", "--password-stdin", stdin="a third pass phrase\n",
               monkeypatch=monkeypatch) == 0
    assert run(base, "enable", "li") == 0
    assert acc.check_login("li", "a third pass phrase") is not None
    assert run(base, "role", "li", "--role", "viewer") == 0
    assert acc.user("li").role is Role.VIEWER and acc.user("li").sites is None
    capsys.readouterr()
    assert run(base, "key", "add", "prometheus", "--role", "viewer") == 0
    secret = capsys.readouterr().out.splitlines()[-1]
    assert secret.startswith("pk_") and acc.check_key(secret) is not None
    assert run(base, "key", "revoke", "prometheus") == 0
    assert acc.check_key(secret) is None
    assert run(base, "key", "list") == 0
    assert "revoked" in capsys.readouterr().out
    actions = [e["action"] for e in acc.audit_log()]
    assert actions[:3] == ["key_revoked", "key_added", "role_set"]
    assert all(e["by"].startswith("cli:") for e in acc.audit_log())


def test_password_needs_a_terminal_or_stdin(users: tuple[list[str], Accounts],
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    base, _ = users
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal
    assert main([*base, "add", "wang", "--role", "admin"]) == 2
    assert "--password-stdin" in capsys.readouterr().err


def test_legacy_token_is_a_named_revocable_operator_key(
        users: tuple[list[str], Accounts], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    _, acc = users
    monkeypatch.setenv("PERIMETER_API_TOKEN", "an-old-shared-token-1234")
    legacy_token(acc)
    who = acc.check_key("an-old-shared-token-1234")
    assert who is not None and who.actor == f"key:{LEGACY_KEY}" and who.role is Role.OPERATOR
    legacy_token(acc)  # the next start: the same key, not a second one
    assert [k.name for k in acc.api_keys()] == [LEGACY_KEY]
    acc.revoke_key(LEGACY_KEY, by="tests")
    legacy_token(acc)  # still in the environment: never brought back
    assert acc.check_key("an-old-shared-token-1234") is None
    assert "not accepted" in capsys.readouterr().out
    with pytest.raises(Conflict):
        acc.import_key(LEGACY_KEY, "an-old-shared-token-1234", Role.OPERATOR, by="x")


def test_workers_starting_together_import_the_legacy_token_once(
        users: tuple[list[str], Accounts]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    _, acc = users
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(lambda _: acc.import_key(LEGACY_KEY, "an-old-shared-token-1234",
                                                      Role.OPERATOR, by="w"), range(8)))
    assert {k.name for k in keys} == {LEGACY_KEY} and len(acc.api_keys()) == 1
    assert acc.check_key("an-old-shared-token-1234") is not None
