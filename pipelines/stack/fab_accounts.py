"""The people file's accounts in the FAB auth manager's user store (the production profile's Airflow).

FAB keeps users, roles and hashed passwords in Airflow's metadata database. Each person of the people file gets an
account with the FAB role of their role (:data:`pipelines.core.people.FAB_ROLES`): created with the password
generated for them (kept 0600 in the passwords file, printed once), their role set again on every sync, and an
account of someone no longer in the file deactivated (not deleted: their past answers keep their name). People
change their own passwords in the UI afterwards; the admin's is reset to ``AIRFLOW_ADMIN_PASSWORD`` on each sync
when that is set (how it is rotated). FAB's user ids are numbers, while the approval tasks name their respondents
by login: the sync stores the login -> id map in the Airflow Variable the tasks resolve them with.

Runs where Airflow's configuration and metadata database are (``python -m pipelines.stack accounts``: compose's
``airflow-init``, and ``make up-prod-local`` after ``airflow db migrate``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

from pipelines.core.people import FAB_ROLES, USER_IDS_VARIABLE, People

log = logging.getLogger(__name__)

FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
_EMAIL_DOMAIN = "users.invalid"  # FAB wants a unique e-mail per user; the people file has none


@dataclass
class SyncReport:
    """What one sync changed, and every login's FAB user id."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deactivated: list[str] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)


def uses_fab() -> bool:
    """Whether the Airflow of this process's configuration authenticates with the FAB auth manager."""
    from airflow.configuration import conf

    return conf.get("core", "auth_manager") == FAB_AUTH_MANAGER


def sync_users(team: People, passwords: dict[str, str], admin: str, admin_password: str | None) -> SyncReport:
    """Make FAB's accounts those of ``team`` (module docstring); ``passwords`` holds a new account's password."""
    with _quiet_fab():
        return _sync(team, passwords, admin, admin_password)


@contextlib.contextmanager
def _quiet_fab() -> Iterator[None]:
    """FAB logs every permission it creates on a fresh database (~300 lines on stdout, where the generated passwords
    are printed), and building its Flask app warns (deprecations, rate-limit storage) about what concerns the
    api-server, not this command."""
    fab_log = logging.getLogger("airflow.providers.fab")
    level = fab_log.level
    fab_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the api-server, which runs that app, still shows them
            yield
    finally:
        fab_log.setLevel(level)


def _sync(team: People, passwords: dict[str, str], admin: str, admin_password: str | None) -> SyncReport:
    from airflow.models.variable import Variable
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
    from werkzeug.security import check_password_hash

    report = SyncReport()
    with get_application_builder() as appbuilder:
        sm = appbuilder.sm
        listed = {person.name for person in team.users}
        for person in team.users:
            role = sm.find_role(FAB_ROLES[person.role])
            if role is None:
                raise RuntimeError(f"FAB has no role {FAB_ROLES[person.role]!r}: was `airflow db migrate` run?")
            user = sm.find_user(username=person.name)
            if user is None:
                user = sm.add_user(
                    username=person.name,
                    first_name=person.name,
                    last_name="-",
                    email=f"{person.name}@{_EMAIL_DOMAIN}",
                    role=role,
                    password=passwords[person.name],
                )
                if not user:
                    raise RuntimeError(f"FAB could not create the account {person.name!r} (see the log above)")
                report.created.append(person.name)
            elif [r.name for r in user.roles] != [role.name] or not user.active:
                user.roles, user.active = [role], True
                sm.update_user(user)
                report.updated.append(person.name)
            if person.name == admin and admin_password and not check_password_hash(user.password, admin_password):
                sm.reset_password(user.id, admin_password)
                if person.name not in report.updated:
                    report.updated.append(person.name)
            report.ids[person.name] = str(user.id)
        for user in sm.get_all_users():
            if user.username not in listed and user.active:
                user.active = False
                sm.update_user(user)
                report.deactivated.append(user.username)
    Variable.set(USER_IDS_VARIABLE, json.dumps(report.ids, sort_keys=True))
    for name in report.deactivated:
        log.warning("Airflow account %s deactivated: no longer in the people file", name)
    log.info(
        "Airflow accounts (FAB): %d created, %d updated, %d deactivated, %d in all",
        len(report.created),
        len(report.updated),
        len(report.deactivated),
        len(report.ids),
    )
    return report
