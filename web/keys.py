"""Typed application keys: the one place collaborators are registered on the aiohttp app."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
import jinja2
import socketio
from aiohttp import web

from crm.settings import Settings
from crm.users import User
from cti.pipeline import CallNotifier
from cti.service import TelephonyService
from cti.simulator import AmiSimulator

if TYPE_CHECKING:  # web modules that import this one: named for type checkers only
    from web.mailserver import IntakeHandler
    from web.reports import Wallboard
    from web.routing import Router
    from web.tasks import ReminderJob

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
TELEPHONY = web.AppKey("telephony", TelephonyService)
NOTIFIER = web.AppKey("notifier", CallNotifier)
DEMO_SIMULATOR = web.AppKey("demo_simulator", AmiSimulator)
ROUTER: web.AppKey[Router] = web.AppKey("router")
SIO = web.AppKey("sio", socketio.AsyncServer)
MAIL_HANDLER: web.AppKey[IntakeHandler] = web.AppKey("mail_handler")
SMTP_PORT = web.AppKey("smtp_port", int)
AGI_PORT = web.AppKey("agi_port", int)
WALLBOARD: web.AppKey[Wallboard] = web.AppKey("wallboard")
REMINDERS: web.AppKey[ReminderJob] = web.AppKey("reminders")  # web.tasks: woken when a task gets an earlier reminder
I18N = web.AppKey("i18n", "I18n")  # web.i18n: catalogs and formats per language
# web.onec: CommerceML imports running for 1C, by exchange folder and file (1C asks again until "success").
ONEC_JOBS = web.AppKey("onec_jobs", dict)

# Per-request: who is asking, their session's CSRF token, and whether they came with an API token.
USER = web.RequestKey("user", User | None)
CSRF = web.RequestKey("csrf_token", str | None)
VIA_TOKEN = web.RequestKey("via_token", bool)
