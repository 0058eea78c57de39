"""The people who work in the Airflow UI, and what each may do: ``pipelines/conf/people.yaml`` (reviewed, in git,
no passwords) or the file ``MLOPS_PEOPLE_FILE`` names.

Roles: ``approver`` (answers approvals; Airflow's ``User`` role), ``operator`` (triggers, clears and watches runs;
Airflow's ``Op`` role, which cannot answer an approval), ``viewer`` (reads; Airflow's ``Viewer``) and ``admin``
(Airflow's ``Admin``; not an approver unless listed as one). The training DAGs name the approvers as the only
respondents of their approval task, so Airflow itself refuses (403) an answer from anyone else, and the approver's
own user name is what the model version's tags and the audit trail record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines.core.errors import ConfigError
from pipelines.core.yaml_files import read_yaml, validation_problems

Role = Literal["admin", "approver", "operator", "viewer"]

# Our roles as the roles of Airflow's simple auth manager (embedded profile) and of the FAB auth manager (production).
AIRFLOW_ROLES: dict[str, str] = {"admin": "admin", "approver": "user", "operator": "op", "viewer": "viewer"}
FAB_ROLES: dict[str, str] = {"admin": "Admin", "approver": "User", "operator": "Op", "viewer": "Viewer"}

# The Airflow Variable that maps each login to its Airflow user id, written where the accounts are created in an
# auth manager whose ids are not the logins (FAB: numeric ids). Absent: the ids are the logins (simple auth manager).
USER_IDS_VARIABLE = "mlops_airflow_user_ids"


class Person(BaseModel):
    """One account of the Airflow UI."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_.-]{0,63}$", description="The login, recorded as the approver.")
    role: Role


class People(BaseModel):
    """Every account; at least one admin and one approver, names unique."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: tuple[Person, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> People:
        names = [p.name for p in self.users]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"users: {', '.join(duplicates)} listed more than once")
        for role in ("admin", "approver"):
            if not any(p.role == role for p in self.users):
                raise ValueError(f"users: at least one {role} is needed")
        return self

    def with_role(self, role: Role) -> list[str]:
        """The names of the people with ``role``, in file order."""
        return [p.name for p in self.users if p.role == role]

    @property
    def approvers(self) -> list[str]:
        return self.with_role("approver")

    def role_of(self, name: str) -> Role | None:
        return next((p.role for p in self.users if p.name == name), None)

    def airflow_users(self) -> str:
        """``AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS``: ``name:role`` pairs."""
        return ",".join(f"{p.name}:{AIRFLOW_ROLES[p.role]}" for p in self.users)


def respondents(names: list[str], user_ids: dict[str, str] | None) -> tuple[list[dict[str, str]], list[str]]:
    """Airflow HITL respondents (``{"id", "name"}``) for the logins ``names``, and the logins without an account.

    ``user_ids`` maps logins to Airflow user ids (:data:`USER_IDS_VARIABLE`); ``None`` means the ids are the logins.
    Raises :class:`ConfigError` when no login has an account: nobody could answer.
    """
    if user_ids is None:
        return [{"id": name, "name": name} for name in names], []
    found = [{"id": str(user_ids[name]), "name": name} for name in names if name in user_ids]
    missing = [name for name in names if name not in user_ids]
    if not found:
        raise ConfigError(
            f"no approver has an Airflow account ({', '.join(names) or 'none listed'}): start the stack again "
            "(or run `python -m pipelines.stack accounts`) to create the people file's accounts"
        )
    return found, missing


def load_people(path: Path) -> People:
    """Parse and validate the people file; errors name the file and the entry."""
    raw = read_yaml(path, "people file")
    try:
        return People.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {validation_problems(exc)}") from exc
