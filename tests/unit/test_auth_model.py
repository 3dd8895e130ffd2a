"""Roles and account rules: pure tables."""

from __future__ import annotations

import pytest

from central.auth.model import (
    AccountError,
    Principal,
    Role,
    check_password,
    check_sites,
    check_user_name,
)


@pytest.mark.parametrize(("role", "least", "allowed"), [
    (Role.VIEWER, Role.VIEWER, True), (Role.VIEWER, Role.OPERATOR, False),
    (Role.OPERATOR, Role.OPERATOR, True), (Role.OPERATOR, Role.SUPERVISOR, False),
    (Role.SUPERVISOR, Role.OPERATOR, True), (Role.SUPERVISOR, Role.ADMIN, False),
    (Role.ADMIN, Role.SUPERVISOR, True), (Role.ADMIN, Role.VIEWER, True),
])
def test_roles_are_ordered(role: Role, least: Role, allowed: bool) -> None:
    assert role.at_least(least) is allowed


@pytest.mark.parametrize(("password", "ok"), [
    ("correct horse battery", True), ("short", False), ("wangwangwang", False),
    ("aaaaaaaaaaaaaaaa", False), ("Wang", False), ("x" * 2000, False),
    ("长城长城长城长城长城长城好的", True),
])
def test_password_rules(password: str, ok: bool) -> None:
    if ok:
        assert check_password(password, "wang") == password
    else:
        with pytest.raises(AccountError):
            check_password(password, "wangwangwang" if password == "wangwangwang" else "wang")


@pytest.mark.parametrize(("name", "ok"), [
    ("wang", True), ("li.si@park", True), ("a", True), ("Wang", False), ("li si", False),
    ("-x", False), ("x" * 65, False), ("", False),
])
def test_user_names(name: str, ok: bool) -> None:
    if ok:
        assert check_user_name(name) == name
    else:
        with pytest.raises(AccountError):
            check_user_name(name)


@pytest.mark.parametrize(("role", "sites", "result"), [
    (Role.VIEWER, None, None), (Role.OPERATOR, [], None),
    (Role.OPERATOR, ["park", "harbour"], frozenset({"park", "harbour"})),
    (Role.SUPERVISOR, ["park"], AccountError), (Role.ADMIN, ["park"], AccountError),
    (Role.VIEWER, ["no/slash"], AccountError),
])
def test_site_limits(role: Role, sites: list[str] | None, result: object) -> None:
    if result is AccountError:
        with pytest.raises(AccountError):
            check_sites(role, sites)
    else:
        assert check_sites(role, sites) == result


def test_principal_names_the_actor_and_its_sites() -> None:
    person = Principal("user", "wang", Role.OPERATOR, frozenset({"park"}))
    machine = Principal("key", "scada", Role.VIEWER)
    assert person.actor == "wang" and machine.actor == "key:scada"
    assert person.sees("park") and not person.sees("harbour") and machine.sees("harbour")
