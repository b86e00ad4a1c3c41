"""Callboard's command line: serve (optionally --demo), migrate, user add, user device, token add, replay,
simulate, rebuild."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import signal
import sys
from pathlib import Path

from crm.settings import Settings, SettingsError, ensure_session_secret, load_settings

logger = logging.getLogger("callboard")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py", description="Callboard: call-center and CTI server with a light CRM, for Asterisk.")
    parser.add_argument("--config", type=Path, help="TOML file with settings (environment variables win)")
    parser.add_argument("--host", help="HTTP address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port (default 8080)")
    parser.add_argument("--data-dir", type=Path, help="data directory (default ./var, or CALLBOARD_DATA_DIR)")
    parser.add_argument("--smtp-host", help="SMTP intake address (default 127.0.0.1)")
    parser.add_argument("--smtp-port", type=int, help="SMTP intake port (default 2525; 0 turns it off)")
    parser.add_argument("--demo", action="store_true",
                        help="serve with demo users and data and the built-in PBX simulator")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("serve", help="serve the web app and telephony (the default)")
    commands.add_parser("migrate", help="apply database migrations and exit")

    user = commands.add_parser("user", help="manage users")
    user_commands = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)
    add = user_commands.add_parser(
        "add", help="add a user; the password comes from CALLBOARD_PASSWORD or a prompt, never an argument")
    add.add_argument("--login", required=True)
    add.add_argument("--role", required=True, choices=["manager", "head", "admin"])
    add.add_argument("--extension", help="SIP extension, e.g. 101")
    add.add_argument("--name", required=True, help="display name")
    add.add_argument("--device", action="append", default=[], metavar="DEVICE",
                     help="a phone of this user as Asterisk names it, e.g. SIP/150010001 or PJSIP/acc7001 "
                          "(repeat for several)")
    device = user_commands.add_parser("device", help="list, add or remove a user's devices (their phones)")
    device_commands = device.add_subparsers(dest="device_command", metavar="ACTION", required=True)
    for name, text in (("add", "give a user devices"), ("remove", "take devices from a user")):
        change = device_commands.add_parser(name, help=text)
        change.add_argument("--login", required=True)
        change.add_argument("devices", nargs="+", metavar="DEVICE", help="e.g. SIP/150010001 or PJSIP/acc7001")
    listing = device_commands.add_parser("list", help="every device with its user (or one user's)")
    listing.add_argument("--login")

    token = commands.add_parser("token", help="API tokens for integrations")
    token_commands = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    token_add = token_commands.add_parser("add", help="create a token for a user; the secret is printed once")
    token_add.add_argument("--login", required=True, help="whose token (it acts with that user's rights)")
    token_add.add_argument("--name", required=True, help="what it is for, e.g. 1C exchange or the website")
    token_add.add_argument("--scope", default="full", choices=["read", "full", "routing"])

    replay = commands.add_parser("replay", help="feed raw AMI captures through the call model and print the calls")
    replay.add_argument("files", nargs="+", type=Path, metavar="FILE")
    replay.add_argument("--json", action="store_true", help="one JSON object per finished call per line")
    replay.add_argument("--pbx", default="replay", help="PBX name for the calls")
    replay.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                        help="the server's TOML: trunk_endpoints, inbound_contexts, phone_region, devices")

    rebuild = commands.add_parser("rebuild", help="rebuild one call from the AMI journal and show (or save) it")
    rebuild.add_argument("--pbx", required=True, help="the PBX name")
    rebuild.add_argument("--call", required=True, help="the call's Linkedid")
    rebuild.add_argument("--save", action="store_true", help="write the rebuilt call to the call log")

    simulate = commands.add_parser("simulate", help="run the AMI-speaking PBX simulator alone")
    simulate.add_argument("--port", type=int, default=5038)
    simulate.add_argument("--bind", default="127.0.0.1")
    simulate.add_argument("--scenario", default="mix",
                          help="answered, missed, busy, abandoned, queue, originate, transfer or mix")
    simulate.add_argument("--cps", type=float, default=1.0, help="calls per second")
    simulate.add_argument("--seed", type=int, default=1)
    simulate.add_argument("--username", default="callboard")
    simulate.add_argument("--secret", default="callboard")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = load_settings(config_file=args.config, overrides={
        "host": args.host, "port": args.port, "data_dir": args.data_dir, "demo": args.demo or None,
        "smtp_host": args.smtp_host, "smtp_port": args.smtp_port})
    return ensure_session_secret(settings)


async def serve(settings: Settings) -> int:
    from web.server import run_server

    return await run_server(settings)


async def migrate(settings: Settings) -> int:
    from crm.db import open_database

    async with open_database(settings.database_url, settings.data_dir):
        print("Migrations are up to date.")
    return 0


async def add_user(settings: Settings, args: argparse.Namespace) -> int:
    from crm import errors, users
    from crm.db import open_database

    password = os.environ.get("CALLBOARD_PASSWORD")
    if not password:
        if not sys.stdin.isatty():
            print("Set CALLBOARD_PASSWORD or run in a terminal to be asked for the password.", file=sys.stderr)
            return 2
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Repeat: "):
            print("The passwords differ.", file=sys.stderr)
            return 2
    async with open_database(settings.database_url, settings.data_dir) as pool:
        async with pool.acquire() as conn:
            try:
                user = await users.create_user(conn, args.login, password, args.role, args.extension, args.name,
                                               devices=args.device)
            except (errors.ValidationError, errors.Conflict) as exc:
                print(f"Cannot add user: {exc}", file=sys.stderr)
                return 1
    devices = f", devices {', '.join(user.devices)}" if user.devices else ""
    print(f"User {user.login} ({user.role}) added with id {user.id}{devices}.")
    return 0


async def add_token(settings: Settings, args: argparse.Namespace) -> int:
    from crm import errors, tokens, users
    from crm.db import open_database

    async with open_database(settings.database_url, settings.data_dir, announce=lambda text: None) as pool:
        async with pool.acquire() as conn:
            user = await users.get_user_by_login(conn, args.login)
            if user is None or not user.active:
                print(f"No active user with login {args.login!r}.", file=sys.stderr)
                return 1
            try:
                token, secret = await tokens.create_token(conn, user.id, args.name, args.scope)
            except (errors.ValidationError, errors.NotFound) as exc:
                print(f"Cannot create the token: {exc}", file=sys.stderr)
                return 1
    # The secret is stored hashed: this is the only time anyone sees it.
    print(f"Token {token.name!r} ({token.scope}) for {user.login}: {secret}")
    return 0


async def user_devices(settings: Settings, args: argparse.Namespace) -> int:
    from crm import devices, errors, users
    from crm.db import open_database

    async with open_database(settings.database_url, settings.data_dir, announce=lambda text: None) as pool:
        async with pool.acquire() as conn:
            people = [u for u in await users.list_users(conn) if args.login in (None, u.login)]
            if args.login and not people:
                print(f"No user with login {args.login!r}.", file=sys.stderr)
                return 1
            try:
                async with conn.transaction():  # all the devices named, or none
                    for device in getattr(args, "devices", []):
                        if args.device_command == "add":
                            await devices.add_device(conn, people[0].id, device)
                        elif not await devices.remove_device(conn, people[0].id, device):
                            print(f"{args.login} had no device {devices.normalise_device(device)}.",
                                  file=sys.stderr)
            except (errors.ValidationError, errors.Conflict) as exc:
                print(f"Cannot {args.device_command} device: {exc}", file=sys.stderr)
                return 1
            for user in await users.list_users(conn):
                if args.login in (None, user.login):
                    for device in user.devices:
                        print(f"{device}\t{user.login}\t{user.extension or '-'}")
    return 0


async def rebuild_call(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from crm import calls
    from crm.db import open_database
    from cti.calls import CallTracker
    from cti.replay import replay_stream
    from cti.service import rules_from

    async with open_database(settings.database_url, settings.data_dir, announce=lambda text: None) as pool:
        async with pool.acquire() as conn:
            raws = await calls.read_journal(conn, args.pbx, args.call)
            if not raws:
                print(f"No journal for call {args.call} on {args.pbx} (kept 14 days).", file=sys.stderr)
                return 1
            tracker = CallTracker(args.pbx, rules_from(settings))
            errors: list[str] = []
            records = replay_stream([("\r\n\r\n".join(raws) + "\r\n\r\n").encode()], tracker, errors)
            records += [ended.record for ended in tracker.close_all()]
            for record in records:
                body = record.to_json()
                del body["legs"]
                print(json.dumps(body, ensure_ascii=False))
                if args.save:
                    await calls.save_call(conn, record, settings.phone_region, settings.suffix_match_digits)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every SMTP command at INFO
    if args.command == "replay":
        from cti.replay import replay_files
        from cti.service import rules_from

        try:
            # The server's own TOML (and environment): trunks, inbound contexts, region, devices.
            rules = rules_from(load_settings(config_file=args.config))
        except SettingsError as exc:
            print(f"replay: {exc}", file=sys.stderr)
            return 2
        return replay_files(args.files, as_json=args.json, pbx=args.pbx, out=sys.stdout, err=sys.stderr,
                            rules=rules)
    if args.command == "simulate":
        from cti.simulator import run_simulator

        try:
            asyncio.run(run_simulator(args.bind, args.port, args.scenario, args.cps, args.seed,
                                      args.username, args.secret))
        except KeyboardInterrupt:
            pass
        return 0
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        return asyncio.run(migrate(settings))
    if args.command == "user":
        return asyncio.run(add_user(settings, args) if args.user_command == "add" else user_devices(settings, args))
    if args.command == "token":
        return asyncio.run(add_token(settings, args))
    if args.command == "rebuild":
        return asyncio.run(rebuild_call(settings, args))
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    # SIGTERM ends the process through the same clean path as Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
