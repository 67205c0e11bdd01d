"""Who may log in to the production UI, and as what: the users file the proxy (nginx) checks.

The file (`WORKFORCE_USERS_FILE`, default `$DAGSTER_HOME/users`, mode 0600) has one line per
user, `name:bcrypt-hash:role`, in the format of nginx's `auth_basic_user_file` (which ignores the
third field). Beside it, `<file>.operators` holds the operators' lines only: nginx tries that
file first and sends whoever passes it to the full UI, and everyone else who passes the whole
file to the read-only one. nginx reads both files on every request, so a change takes effect
at once, with no reload. Plain-text passwords are never written anywhere.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import bcrypt

ROLES = ("viewer", "operator")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD_LENGTH = 12
# nginx checks the hash on every request (it keeps no cache), so each UI request costs one
# bcrypt; cost 10 (about 0.1 s here) is bcrypt's long-standing minimum recommendation.
BCRYPT_COST = 10


class UsersError(Exception):
    """A bad name, role or password, or no users file configured; the message never holds a password."""


def users_file(environ: dict | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("WORKFORCE_USERS_FILE"):
        return Path(env["WORKFORCE_USERS_FILE"])
    if env.get("DAGSTER_HOME"):
        return Path(env["DAGSTER_HOME"]) / "users"
    raise UsersError("set WORKFORCE_USERS_FILE (or DAGSTER_HOME) to the users file deploy/proxy reads")


def operators_file(path: Path) -> Path:
    return path.with_name(path.name + ".operators")


def read_users(path: Path) -> dict[str, tuple[str, str]]:
    """name -> (hash, role); an absent file has no users."""
    users = {}
    if path.exists():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            name, hashed, role = (line.split(":") + ["viewer"])[:3]
            if role not in ROLES:
                raise UsersError(f"{path} line {number}: role must be one of {', '.join(ROLES)}, not {role!r}")
            users[name] = (hashed, role)
    return users


def add_user(path: Path, name: str, password: str, role: str) -> str:
    """Add `name`, or give an existing one a new password and role."""
    if not NAME.fullmatch(name):
        raise UsersError(f"user name {name!r}: use 1-64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit")
    if role not in ROLES:
        raise UsersError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UsersError(f"the password for {name} is too short: at least {MIN_PASSWORD_LENGTH} characters")
    users = read_users(path)
    existed = name in users
    users[name] = (bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_COST)).decode(), role)
    _write(path, users)
    return f"{'updated' if existed else 'added'} {name} ({role}) in {path}"


def remove_user(path: Path, name: str) -> str:
    users = read_users(path)
    if name not in users:
        raise UsersError(f"no user {name!r} in {path}")
    del users[name]
    _write(path, users)
    return f"removed {name} from {path}"


def _write(path: Path, users: dict[str, tuple[str, str]]) -> None:
    lines = {name: f"{name}:{hashed}:{role}\n" for name, (hashed, role) in sorted(users.items())}
    # The operators' file first: a demoted operator loses the full UI before anything else changes.
    _replace(operators_file(path), "".join(line for name, line in lines.items() if users[name][1] == "operator"))
    _replace(path, "".join(lines.values()))


def _replace(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, mode 0600 from the first byte, keeping an existing
    file's owner (nginx's workers read it as that user)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = (path.stat().st_uid, path.stat().st_gid) if path.exists() else None
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp: mode 0600
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        if owner and os.geteuid() == 0:
            os.chown(temporary, *owner)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
