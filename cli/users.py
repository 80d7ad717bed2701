"""fieldgate users add / list / remove / passwd."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cli.common import (
    Column,
    ConfigOpt,
    DataDirOpt,
    InitOpt,
    JsonOpt,
    VerboseOpt,
    console,
    read_store,
    settings,
    show_rows,
    write_store,
)
from gateway.core.acl import USER_ROLES
from gateway.store.users import UserError

app = typer.Typer(help="Who may connect, and as what.", no_args_is_help=True)

PasswordStdin = Annotated[bool, typer.Option("--password-stdin", help="read the password from standard input "
                                             "(for scripts) instead of prompting")]


def _password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise UserError("empty password", hint="Type one at the prompt, or pipe one line to --password-stdin.")
    return password


@app.command("add")
def add_cmd(
    name: Annotated[str, typer.Argument(help="the MQTT user name the client will send")],
    role: Annotated[str, typer.Option(help=f"one of: {', '.join(USER_ROLES)}")],
    user_id: Annotated[str | None, typer.Option("--id", help="courier or shop id in topic names [default: NAME]")]
    = None,
    password_stdin: PasswordStdin = False,
    init: InitOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Add a user. The password is stored hashed (PBKDF2-SHA512); the change applies to the next CONNECT.

    Example:

        fieldgate users add c7-phone --role courier --id c7
    """
    try:
        role_value = next(r for r in USER_ROLES if r.value == role)
    except StopIteration:
        raise UserError(f"unknown role {role!r}", hint=f"Use one of: {', '.join(USER_ROLES)}.") from None
    store = write_store(settings(config, data_dir, verbose), init=init)
    user = store.users.add(name, role_value, user_id, _password(password_stdin))
    console.print(f"added {user.name} ({user.role}, id {user.id}) to {store.where}")


@app.command("list")
def list_cmd(as_json: JsonOpt = False, config: ConfigOpt = None, data_dir: DataDirOpt = None,
             verbose: VerboseOpt = False) -> None:
    """List users: name, role, id, when added. Password hashes are never shown.

    Example:

        fieldgate users list
    """
    users = read_store(settings(config, data_dir, verbose)).users.list()
    rows = [{"user": u.name, "role": u.role.value, "id": u.id, "added": u.created_at} for u in users]
    show_rows(rows, [Column("user", lambda r: r["user"]), Column("role", lambda r: r["role"]),
                     Column("id", lambda r: r["id"]), Column("added", lambda r: r["added"])],
              title="users", empty="no users yet: add one with `fieldgate users add`", as_json=as_json)


@app.command("remove")
def remove_cmd(name: Annotated[str, typer.Argument(help="the user to remove")], config: ConfigOpt = None,
               data_dir: DataDirOpt = None, verbose: VerboseOpt = False) -> None:
    """Remove a user; its next CONNECT is refused (connected clients keep their connection until they leave).

    Example:

        fieldgate users remove c7-phone
    """
    write_store(settings(config, data_dir, verbose)).users.remove(name)
    console.print(f"removed {name}")


@app.command("passwd")
def passwd_cmd(name: Annotated[str, typer.Argument(help="whose password to change")],
               password_stdin: PasswordStdin = False, config: ConfigOpt = None, data_dir: DataDirOpt = None,
               verbose: VerboseOpt = False) -> None:
    """Change a user's password.

    Example:

        echo 'n3w-s3cret' | fieldgate users passwd c7-phone --password-stdin
    """
    write_store(settings(config, data_dir, verbose)).users.set_password(name, _password(password_stdin))
    console.print(f"password of {name} changed")
