"""Named people with roles: the people file is validated once (names, roles, at least an admin and an approver),
maps to Airflow's roles, and every person gets a password kept 0600 and shown only when it is made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipelines.core.errors import ConfigError
from pipelines.core.people import load_people, respondents
from pipelines.core.settings import REPO_ROOT
from pipelines.stack import services
from pipelines.stack.processes import StackError
from pipelines.stack.settings import StackSettings

SHIPPED = REPO_ROOT / "pipelines" / "conf" / "people.yaml"


def _write(path: Path, users: list[dict[str, str]]) -> Path:
    path.write_text(yaml.safe_dump({"users": users}))
    return path


def test_the_shipped_people_have_every_role_and_map_to_airflow_roles() -> None:
    team = load_people(SHIPPED)
    assert team.approvers == ["ann"]
    assert team.with_role("operator") == ["omar"] and team.with_role("viewer") == ["vera"]
    assert team.airflow_users() == "admin:admin,ann:user,omar:op,vera:viewer"


@pytest.mark.parametrize(
    ("users", "named"),
    [
        ([{"name": "admin", "role": "admin"}], "at least one approver"),
        ([{"name": "ann", "role": "approver"}], "at least one admin"),
        (
            [
                {"name": "admin", "role": "admin"},
                {"name": "ann", "role": "approver"},
                {"name": "ann", "role": "viewer"},
            ],
            "ann listed more than once",
        ),
        ([{"name": "admin", "role": "admin"}, {"name": "Ann Smith", "role": "approver"}], "users.1.name"),
        ([{"name": "admin", "role": "admin"}, {"name": "ann", "role": "boss"}], "users.1.role"),
        ([{"name": "admin", "role": "admin", "password": "x"}], "users.0.password"),
    ],
)
def test_a_bad_people_file_is_refused_naming_the_entry(tmp_path: Path, users: list[dict[str, str]], named: str) -> None:
    path = _write(tmp_path / "people.yaml", users)
    with pytest.raises(ConfigError) as caught:
        load_people(path)
    assert str(path) in str(caught.value) and named in str(caught.value)


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StackSettings:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "runtime"))
    monkeypatch.delenv("AIRFLOW_ADMIN_PASSWORD", raising=False)
    monkeypatch.setenv("MLOPS_PEOPLE_FILE", str(SHIPPED))
    return StackSettings()


def test_every_person_gets_a_password_kept_0600_and_made_once(stack: StackSettings, tmp_path: Path) -> None:
    # when the accounts are made the first time
    made = services.ensure_passwords(stack)
    # then each person has one, in a file only its owner reads, and they are the ones shown
    path = stack.airflow_home / "passwords.json"
    assert sorted(made) == ["admin", "ann", "omar", "vera"] and json.loads(path.read_text()) == made
    assert path.stat().st_mode & 0o777 == 0o600
    shown = services.accounts_text(stack, made)
    assert f"ann / {made['ann']}  (approver)" in shown
    # when they are ensured again, then nothing new is made or shown, and the passwords stay
    assert services.ensure_passwords(stack) == {}
    assert services.password_of(stack, "ann") == made["ann"]
    # when a person joins the file, then only they get a new password
    team = yaml.safe_load(SHIPPED.read_text())
    team["users"].append({"name": "bo", "role": "approver"})
    joined = tmp_path / "people.yaml"
    joined.write_text(yaml.safe_dump(team))
    grown = stack.model_copy(update={"people_file": joined})
    assert list(services.ensure_passwords(grown)) == ["bo"]
    assert services.password_of(grown, "ann") == made["ann"]


def test_the_admin_password_from_the_environment_wins(stack: StackSettings) -> None:
    set_by_ops = stack.model_copy(update={"airflow_admin_password": "from-the-secrets"})
    made = services.ensure_passwords(set_by_ops)
    assert "admin" not in made and services.admin_password(set_by_ops) == "from-the-secrets"


def test_a_person_not_in_the_file_has_no_account(stack: StackSettings) -> None:
    with pytest.raises(StackError, match="'mallory' has no Airflow account"):
        services.password_of(stack, "mallory")


def test_the_stack_admin_must_be_an_admin_of_the_file(stack: StackSettings) -> None:
    with pytest.raises(StackError, match="'ann' must be listed with role admin"):
        services.people(stack.model_copy(update={"airflow_admin_user": "ann"}))


def test_approvers_are_named_by_their_airflow_user_ids_where_the_auth_manager_has_its_own() -> None:
    # given no id map (the simple auth manager: ids are logins), then each approver is their own id
    assert respondents(["ann", "bo"], None) == ([{"id": "ann", "name": "ann"}, {"id": "bo", "name": "bo"}], [])
    # given FAB's numeric ids, then each approver gets theirs, and one without an account is reported, not guessed
    found, missing = respondents(["ann", "bo"], {"ann": "2", "omar": "3"})
    assert found == [{"id": "2", "name": "ann"}] and missing == ["bo"]
    # given no approver with an account, then nobody could answer: an error naming them and the fix
    with pytest.raises(ConfigError, match=r"no approver has an Airflow account \(ann, bo\).*pipelines.stack accounts"):
        respondents(["ann", "bo"], {"omar": "3"})
