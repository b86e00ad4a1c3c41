"""JSON API under /api/: contacts, companies, users; one error shape; an OpenAPI description."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from crm import contacts as contacts_db
from crm import errors, paging
from crm import users as users_db
from crm.contacts import Kind, Party, PartyInput
from crm.users import User
from web import keys
from web.auth import current_user, require_role
from web.errors import MAX_ID, error_body, path_id
from web.leadrules import openapi_paths as lead_rule_paths
from web.paging import page_args, page_json
from web.reports import openapi_paths as report_paths
from web.sockets import user_changed
from web.timeline import openapi_paths as timeline_paths

SECTIONS: dict[str, Kind] = {"contacts": "contact", "companies": "company"}


def party_json(party: Party) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": party.id,
        "name": party.name,
        "manager_id": party.manager_id,
        "manager_name": party.manager_name,
        "notes": party.notes,
        "phones": [{"e164": p.e164, "extension": p.extension, "raw": p.raw, "label": p.label, "display": p.display}
                   for p in party.phones],
        "emails": list(party.emails),
        "version": party.version,
    }
    if party.kind == "contact":
        body.update(company_id=party.company_id, company_name=party.company_name)
    else:
        body.update(tax_id=party.tax_id)
    return body


def user_json(user: User) -> dict[str, Any]:
    return {"id": user.id, "login": user.login, "role": user.role, "extension": user.extension,
            "display_name": user.display_name, "active": user.active, "version": user.version,
            "devices": list(user.devices)}


def _devices(body: dict[str, Any]) -> list[str] | None:
    """The `devices` field: absent or null leaves them as they are; otherwise a list of device names."""
    value = body.get("devices")
    if value is not None and not (isinstance(value, list) and all(isinstance(d, str) for d in value)):
        raise errors.ValidationError("devices", "must be a list of device names such as \"SIP/150010001\"")
    return value


async def read_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; broken JSON is 400 (web.errors), anything but an object 422."""
    body = await request.json()
    if not isinstance(body, dict):
        raise errors.ValidationError("body", "must be a JSON object")
    return body


def _optional_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise errors.ValidationError(name, "must be a positive integer or null")
    return value


def _optional_text(body: dict[str, Any], name: str, limit: int = 10_000) -> str | None:
    value = body.get(name)
    return None if value is None else _text(value, name, limit)


def _text(value: Any, name: str, limit: int) -> str:
    """A string PostgreSQL can keep, of a sane length: otherwise 422 naming the field."""
    if not isinstance(value, str):
        raise errors.ValidationError(name, "must be a string")
    if len(value) > limit:
        raise errors.ValidationError(name, f"must be at most {limit} characters")
    if "\x00" in value:
        raise errors.ValidationError(name, "must not contain NUL characters")
    return value


def _party_input(body: dict[str, Any]) -> PartyInput:
    phones = []
    if not isinstance(body.get("phones") or [], list):
        raise errors.ValidationError("phones", "must be a list")
    if len(body.get("phones") or []) > 50:
        raise errors.ValidationError("phones", "at most 50 phones")
    for item in body.get("phones") or []:
        if isinstance(item, str):
            phones.append((item, ""))
        elif isinstance(item, dict) and isinstance(item.get("raw", item.get("number")), str):
            phones.append((item.get("raw", item.get("number")), str(item.get("label") or "")))
        else:
            raise errors.ValidationError("phones", "each phone is a string or {raw, label}")
    emails = body.get("emails") or []
    if not isinstance(emails, list) or not all(isinstance(e, str) for e in emails) or len(emails) > 50:
        raise errors.ValidationError("emails", "must be a list of at most 50 strings")
    for raw, label in phones:
        _text(raw, "phones", 100)
        _text(label, "phones", 100)
    for address in emails:
        _text(address, "emails", 320)
    name = _optional_text(body, "name", 500)
    if name is None:
        raise errors.ValidationError("name", "is required")
    return PartyInput(
        name=name, manager_id=_optional_int(body, "manager_id"), notes=_optional_text(body, "notes") or "",
        company_id=_optional_int(body, "company_id"), tax_id=_optional_text(body, "tax_id", 64) or None,
        phones=phones, emails=emails,
    )


def _kind(request: web.Request) -> Kind:
    return SECTIONS[request.match_info["section"]]


def _paging(request: web.Request) -> tuple[int, int]:
    try:
        limit = min(max(int(request.query.get("limit", 50)), 1), 500)
        offset = max(int(request.query.get("offset", 0)), 0)
    except ValueError:
        raise errors.ValidationError("limit", "limit and offset must be integers") from None
    return limit, offset


async def list_parties(request: web.Request) -> web.Response:
    kind, user = _kind(request), current_user(request)
    limit, offset = _paging(request)
    _, after = page_args(request, limit)
    async with request.app[keys.POOL].acquire() as conn:
        page = paging.page(await contacts_db.list_parties(conn, user, kind, request.query.get("q"),
                                                          request.app[keys.SETTINGS].phone_region, limit + 1, offset,
                                                          after), limit, contacts_db.party_key)
    return web.json_response({**page_json(request, page, [party_json(p) for p in page.items]), "limit": limit,
                              "offset": offset})


async def get_party(request: web.Request) -> web.Response:
    async with request.app[keys.POOL].acquire() as conn:
        party = await contacts_db.get_party(conn, current_user(request), _kind(request),
                                            path_id(request, "party_id"))
    return web.json_response(party_json(party))


def duplicate_response(exc: errors.Duplicate) -> web.Response:
    """409 {error, existing_id, field}: the record that already holds the phone, e-mail or tax id."""
    return web.json_response({**error_body(409, str(exc), exc.field), "existing_id": exc.existing_id,
                              "field": exc.field}, status=409)


def _refuse_duplicates(body: dict[str, Any]) -> bool:
    """A phone, e-mail or tax id another record has is refused (409) unless `allow_duplicate` is true."""
    allow = body.get("allow_duplicate", False)
    if not isinstance(allow, bool):
        raise errors.ValidationError("allow_duplicate", "must be true or false")
    return not allow


async def create_party(request: web.Request) -> web.Response:
    body = await read_json(request)
    data = _party_input(body)
    try:
        async with request.app[keys.POOL].acquire() as conn:
            party = await contacts_db.create_party(conn, current_user(request), _kind(request), data,
                                                   request.app[keys.SETTINGS].phone_region,
                                                   refuse_duplicates=_refuse_duplicates(body))
    except errors.Duplicate as exc:
        return duplicate_response(exc)
    return web.json_response(party_json(party), status=201)


async def update_party(request: web.Request) -> web.Response:
    """PUT replaces the record; PATCH changes only the fields it sends (a new name keeps the phones)."""
    body = await read_json(request)
    user, kind, party_id = current_user(request), _kind(request), path_id(request, "party_id")
    refuse = _refuse_duplicates(body)
    try:
        return await _update_party(request, body, user, kind, party_id, refuse)
    except errors.Duplicate as exc:
        return duplicate_response(exc)


async def _update_party(request: web.Request, body: dict[str, Any], user: User, kind: Kind, party_id: int,
                        refuse: bool) -> web.Response:
    async with request.app[keys.POOL].acquire() as conn:
        expected = _optional_int(body, "version")
        if request.method == "PATCH":
            current = await contacts_db.get_party(conn, user, kind, party_id)
            body = {**_party_body(current), **body}
            # Merged over what was read just now: someone else's save in between answers 409, not lost.
            expected = expected or current.version
        # With the version it was read at, an edit over someone else's newer save answers 409.
        party = await contacts_db.update_party(conn, user, kind, party_id, _party_input(body),
                                               request.app[keys.SETTINGS].phone_region, expected_version=expected,
                                               refuse_duplicates=refuse)
    return web.json_response(party_json(party))


def _party_body(party: Party) -> dict[str, Any]:
    """A stored record in the shape a PUT sends."""
    return {"name": party.name, "manager_id": party.manager_id, "notes": party.notes,
            "company_id": party.company_id, "tax_id": party.tax_id,
            "phones": [{"raw": p.raw or p.e164 or p.extension or "", "label": p.label} for p in party.phones],
            "emails": list(party.emails)}


async def list_users(request: web.Request) -> web.Response:
    current_user(request)
    async with request.app[keys.POOL].acquire() as conn:
        users = await users_db.list_users(conn)
    return web.json_response({"items": [user_json(u) for u in users]})


async def get_user(request: web.Request) -> web.Response:
    current_user(request)
    async with request.app[keys.POOL].acquire() as conn:
        user = await users_db.get_user(conn, path_id(request, "user_id"))
    if user is None:
        raise errors.NotFound("user")
    return web.json_response(user_json(user))


async def create_user(request: web.Request) -> web.Response:
    require_role(request, "admin")
    body = await read_json(request)
    for name in ("login", "password", "role", "display_name"):
        if _optional_text(body, name, 200) is None:
            raise errors.ValidationError(name, "is required")
    extension = _extension(body, None)
    if len(body["password"]) < 8:
        raise errors.ValidationError("password", "at least 8 characters")
    async with request.app[keys.POOL].acquire() as conn:
        user = await users_db.create_user(conn, body["login"], body["password"], body["role"],
                                          extension, body["display_name"], devices=_devices(body) or ())
    await user_changed(request.app, user.id, end_sessions=False)
    return web.json_response(user_json(user), status=201)


async def update_user(request: web.Request) -> web.Response:
    require_role(request, "admin")
    body = await read_json(request)
    user_id = path_id(request, "user_id")
    async with request.app[keys.POOL].acquire() as conn:
        current = await users_db.get_user(conn, user_id)
        if current is None:
            raise errors.NotFound("user")
        active = body.get("active", current.active)
        if not isinstance(active, bool):
            raise errors.ValidationError("active", "must be true or false")
        user = await users_db.update_user(
            conn, user_id, _optional_text(body, "role", 20) or current.role, _extension(body, current.extension),
            _optional_text(body, "display_name", 200) or current.display_name, active,
            version=_optional_int(body, "version"), devices=_devices(body))
        password_reset = bool(_optional_text(body, "password", 200))
        if password_reset:
            await users_db.set_password(conn, user_id, body["password"])
    # An open socket would otherwise keep its popups after a deactivation or a password reset.
    await user_changed(request.app, user_id, end_sessions=password_reset or not user.active)
    return web.json_response(user_json(user))


def _extension(body: dict[str, Any], current: str | None) -> str | None:
    value = body.get("extension", current)
    if isinstance(value, bool) or not isinstance(value, (str, int, type(None))):
        raise errors.ValidationError("extension", "must be 2 to 6 digits")
    return str(value) if value not in (None, "") else None


def _schema_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _stock_paths(error: dict[str, Any]) -> dict[str, Any]:
    from web.stock import openapi_paths  # imported here: web.stock imports this module

    return openapi_paths(error)


def _task_body(required: list[str]) -> dict[str, Any]:
    """POST and PATCH /api/tasks: times in ISO 8601 (without a zone: the company's)."""
    moment = {"type": "string", "format": "date-time"}
    link = {"type": ["integer", "null"]}
    return {"content": {"application/json": {"schema": {"type": "object", "required": required, "properties": {
        "title": {"type": "string", "maxLength": 200}, "due_at": moment,
        "remind_at": {**moment, "type": ["string", "null"],
                      "description": "when to push the reminder to the assignee; null: no reminder"},
        "assignee_id": {"type": "integer"}, "note": {"type": "string"},
        "state": {"type": "string", "enum": ["open", "done", "cancelled"]}, "version": {"type": "integer"},
        "contact_id": link, "company_id": link, "deal_id": link, "lead_id": link}}}}}


def openapi_spec() -> dict[str, Any]:
    error = {"description": "error", "content": {"application/json": {"schema": _schema_ref("Error")}}}
    duplicate = {"description": "a phone, e-mail or tax id (INN) another record has (send allow_duplicate: true "
                                "to save anyway), or an edit over a newer version",
                 "content": {"application/json": {"schema": _schema_ref("Duplicate")}}}
    party_paths: dict[str, Any] = {}
    for section, schema in (("contacts", "Contact"), ("companies", "Company")):
        party_paths[f"/api/{section}"] = {
            "get": {"summary": f"List {section} (search q: name, e-mail or phone in any format)",
                    "parameters": [{"name": n, "in": "query", "schema": {"type": t}}
                                   for n, t in (("q", "string"), ("limit", "integer"), ("offset", "integer"))],
                    "responses": {"200": {"description": "list", "content": {"application/json": {"schema": {
                        "type": "object", "properties": {"items": {"type": "array", "items": _schema_ref(schema)}}}}}},
                        "401": error}},
            "post": {"summary": f"Create a {schema.lower()}",
                     "requestBody": {"content": {"application/json": {"schema": _schema_ref(f"{schema}Input")}}},
                     "responses": {"201": {"description": "created", "content": {
                         "application/json": {"schema": _schema_ref(schema)}}}, "422": error, "403": error,
                         "409": duplicate}},
        }
        party_paths[f"/api/{section}/{{id}}"] = {
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "get": {"summary": f"One {schema.lower()}", "responses": {"200": {"description": "found", "content": {
                "application/json": {"schema": _schema_ref(schema)}}}, "404": error}},
            "put": {"summary": f"Replace a {schema.lower()}'s fields, phones and e-mails",
                    "requestBody": {"content": {"application/json": {"schema": _schema_ref(f"{schema}Input")}}},
                    "responses": {"200": {"description": "updated"}, "404": error, "409": duplicate,
                                  "422": error}},
            "patch": {"summary": f"Change only the fields sent of a {schema.lower()}",
                      "requestBody": {"content": {"application/json": {"schema": _schema_ref(f"{schema}Input")}}},
                      "responses": {"200": {"description": "updated"}, "404": error, "409": duplicate,
                                    "422": error}},
        }
    phone = {"type": "object", "properties": {"raw": {"type": "string"}, "label": {"type": "string"}},
             "required": ["raw"]}
    party_input = {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string"}, "manager_id": {"type": ["integer", "null"]}, "notes": {"type": "string"},
        "phones": {"type": "array", "items": phone}, "emails": {"type": "array", "items": {"type": "string"}},
        "allow_duplicate": {"type": "boolean", "description": "save even if another record has a phone, e-mail or "
                                                              "tax id of this one (otherwise 409)"}}}
    party_out = {"type": "object", "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"}, "manager_id": {"type": ["integer", "null"]},
        "phones": {"type": "array", "items": {"type": "object", "properties": {
            "e164": {"type": "string"}, "extension": {"type": ["string", "null"]}, "raw": {"type": "string"},
            "label": {"type": "string"}, "display": {"type": "string"}}}},
        "emails": {"type": "array", "items": {"type": "string"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Callboard API", "version": "1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "session": {"type": "apiKey", "in": "cookie", "name": "callboard_session"}},
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                    "status": {"type": "integer"}, "code": {"type": "string"}, "message": {"type": "string"},
                    "field": {"type": ["string", "null"]}}}}},
                "Contact": party_out, "Company": party_out,
                "Duplicate": {"type": "object", "properties": {
                    "error": {"type": "object"},
                    "existing_id": {"type": "integer", "description": "the record that already has it"},
                    "field": {"enum": ["phones", "emails", "tax_id"]}}},
                "ContactInput": {**party_input, "properties": {**party_input["properties"],
                                                               "company_id": {"type": ["integer", "null"]}}},
                "CompanyInput": {**party_input, "properties": {**party_input["properties"],
                                                               "tax_id": {"type": ["string", "null"]}}},
                "User": {"type": "object", "properties": {
                    "id": {"type": "integer"}, "login": {"type": "string"},
                    "role": {"enum": ["manager", "head", "admin"]}, "extension": {"type": ["string", "null"]},
                    "display_name": {"type": "string"}, "active": {"type": "boolean"},
                    "version": {"type": "integer", "description": "send it back on update: a stale one gets 409"},
                    "devices": {"type": "array", "items": {"type": "string"},
                                "description": "the user's phones as TECH/endpoint, e.g. SIP/150010001"}}},
            },
        },
        "security": [{"bearer": []}, {"session": []}],
        "paths": {
            **party_paths,
            **_more_paths(error),
            **_money_paths(error),
            **report_paths(error),
            **_stock_paths(error),
            **lead_rule_paths(error),
            **timeline_paths(error),
            "/api/users": {"get": {"summary": "List users", "responses": {"200": {"description": "list"}}},
                           "post": {"summary": "Create a user (admin)", "responses": {"201": {
                               "description": "created"}, "403": error, "409": error, "422": error}}},
            "/api/users/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "get": {"summary": "One user", "responses": {"200": {"description": "found", "content": {
                    "application/json": {"schema": _schema_ref("User")}}}, "404": error}},
                "put": {"summary": "Update a user (admin); `version` as read refuses a stale edit with 409",
                        "responses": {"200": {"description": "updated"}, "403": error, "409": error,
                                      "422": error}}},
        },
    }


def _money_paths(error: dict[str, Any]) -> dict[str, Any]:
    """Contracts, invoices, bank statements, payments, receivables (web/money.py). Amounts are strings: "1220.00"."""
    by_id = [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}]
    body = {"content": {"application/json": {"schema": {"type": "object"}}}}
    ok = {"200": {"description": "ok"}}
    made = {"201": {"description": "created"}, "403": error, "404": error, "409": error, "422": error}
    query = [{"name": n, "in": "query", "schema": {"type": "string"}} for n in ("state", "deal_id", "company_id")]
    summary = {"type": "object", "properties": {k: {"type": "integer"} for k in (
        "statement_id", "documents", "incoming", "outgoing", "matched", "to_match", "duplicates")} | {
        "problems": {"type": "array", "items": {"type": "object", "properties": {
            "line": {"type": "integer"}, "problem": {"type": "string"}}}}}}
    return {
        "/api/contracts": {
            "get": {"summary": "Contracts (a manager: of their companies); ?company_id", "responses": ok},
            "post": {"summary": "A contract {number, signed_on, company_id, kind: supply|service, valid_until?, "
                                "prepayment_percent?, deferral_days?, notes?}",
                     "requestBody": body, "responses": made}},
        "/api/contracts/expiring": {"get": {"summary": "Contracts ending within ?days (default 30)",
                                            "responses": {**ok, "422": error}}},
        "/api/contracts/{id}": {"parameters": by_id, "get": {"summary": "One contract",
                                                             "responses": {**ok, "404": error}}},
        "/api/deals/{id}/contract": {"parameters": by_id, "post": {
            "summary": "The deal's contract {contract_id | null} (one of the deal's company)", "requestBody": body,
            "responses": {**ok, "404": error, "422": error}}},
        "/api/deals/{id}/invoices": {"parameters": by_id, "post": {
            "summary": "Issue an invoice for what is not invoiced, or {items: [{deal_item_id, quantity}]}; "
                       "{due_on?} (default: the contract's days to pay); numbered per year without gaps",
            "requestBody": body, "responses": made}},
        "/api/invoices": {"get": {"summary": "Invoices (a manager: of their deals)", "parameters": query,
                                  "responses": {**ok, "422": error}}},
        "/api/invoices/{id}": {"parameters": by_id, "get": {
            "summary": "One invoice with items and the payments allocated to it", "responses": {**ok, "404": error}}},
        "/api/invoices/{id}/cancel": {"parameters": by_id, "post": {
            "summary": "Cancel an unpaid invoice (its number stays used)", "responses": {**ok, "404": error,
                                                                                       "409": error}}},
        "/api/bank-statements": {"post": {
            "summary": "Import a 1CClientBankExchange statement (head, admin): multipart field `file`, or the "
                       "file as the body; at most 20 MB; re-importing adds nothing",
            "requestBody": {"content": {"multipart/form-data": {"schema": {"type": "object", "properties": {
                "file": {"type": "string", "format": "binary"}}}}, "text/plain": {"schema": {"type": "string"}}}},
            "responses": {"201": {"description": "summary", "content": {"application/json": {"schema": summary}}},
                          "403": error, "413": error, "422": error}}},
        "/api/payments": {
            "get": {"summary": "Incoming payments; ?to_match=1: what waits for a person", "responses": ok},
            "post": {"summary": "A payment by hand (head, admin) {doc_number, doc_date, amount, received_on?, "
                                "payer_name?, payer_inn?, payer_account?, purpose?, allocations?: "
                                "[{invoice_id, amount}]}", "requestBody": body, "responses": made}},
        "/api/payments/{id}": {"parameters": by_id, "get": {"summary": "One payment with its allocations",
                                                            "responses": {**ok, "404": error}}},
        **{f"/api/payments/{{id}}/{action}": {"parameters": by_id, "post": {
            "summary": text, "requestBody": body, "responses": {**ok, "403": error, "404": error, "409": error,
                                                               "422": error}}}
           for action, text in (("allocate", "Split across invoices {allocations: [{invoice_id, amount}]}"),
                                ("unallocate", "Take the payment off {invoice_id}"),
                                ("dismiss", "Not for an invoice {dismissed: true|false}"))},
        "/api/receivables": {"get": {
            "summary": "Owed, overdue, ageing buckets (not_due, 1_30, 31_60, 61_90, over_90) and expected this month, "
                       "in total, per client and per manager, as of ?as_of=YYYY-MM-DD (default today)",
            "responses": {**ok, "422": error}}},
        "/api/receivables/reminders": {"post": {
            "summary": "A payment reminder e-mail to a client {company_id | invoice_ids: [id, …] (of one client), "
                       "to?, language? (default ru)}: their overdue invoices with amounts and due dates, each "
                       "invoice's PDF attached, queued to the outbox (a manager: their own clients); each invoice "
                       "once a day, a repeat answers 409",
            "requestBody": body,
            "responses": {"202": {"description": "{mail, invoice_ids}"}, "403": error, "404": error, "409": error,
                          "422": error}}},
    }


def _more_paths(error: dict[str, Any]) -> dict[str, Any]:
    """Calls, click-to-call, routing, leads and the missed-call board."""
    def query(*names: str) -> list[dict[str, Any]]:
        return [{"name": n, "in": "query", "schema": {"type": "string"}} for n in names]

    by_id = [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}]
    json_body = {"content": {"application/json": {"schema": {"type": "object"}}}}
    ok = {"200": {"description": "ok"}}
    return {
        "/api/calls": {
            "get": {"summary": "The call log (a manager: their own calls and their clients')",
                    "parameters": query("day", "outcome"), "responses": {**ok, "422": error}},
            "post": {"summary": "Click-to-call: ring my extension, then dial {number} (and optional contact_id)",
                     "requestBody": json_body,
                     "responses": {"202": {"description": "my phone rings"}, "422": error, "503": error}}},
        "/api/calls/{id}": {"parameters": by_id, "get": {"summary": "One call", "responses": {**ok, "404": error}}},
        "/api/route": {"get": {
            "summary": "For the dialplan: the extension to dial for a caller (text/plain; JSON on Accept)",
            "parameters": query("caller", "did", "pbx", "token"), "security": [],
            "responses": {"200": {"description": "target", "content": {
                "text/plain": {"schema": {"type": "string"}},
                "application/json": {"schema": {"type": "object", "properties": {
                    "target": {"type": "string"}, "kind": {"enum": ["manager", "fallback"]},
                    "reason": {"type": "string"}, "contact_id": {"type": ["integer", "null"]},
                    "lead_id": {"type": ["integer", "null"]}}}}}}, "403": {"description": "bad token"}}}},
        "/api/leads": {
            "get": {"summary": "Leads (a manager: their own)", "parameters": query("status", "source"),
                    "responses": {**ok, "422": error}},
            "post": {"summary": "Create a lead by hand {name, phone, email, company_name, message, source?}; "
                                "entered by the head, the distribution rules place it; a phone or e-mail of an "
                                "open lead answers 409 with that lead's `lead_id`",
                     "requestBody": json_body, "responses": {"201": {"description": "created"}, "409": error,
                                                             "422": error}}},
        "/api/leads/{id}": {"parameters": by_id, "get": {"summary": "One lead with its calls",
                                                         "responses": {**ok, "404": error}},
                            "patch": {"summary": "Edit {name?, phone?, email?, company_name?, first_message?, "
                                                 "version?} of an open lead (a manager: their own); a stale "
                                                 "version is 409, so is another open lead's phone or e-mail "
                                                 "(with its `lead_id`)",
                                      "requestBody": json_body,
                                      "responses": {**ok, "404": error, "409": error, "422": error}}},
        **{f"/api/leads/{{id}}/{action}": {"parameters": by_id, "post": {
            "summary": summary, "requestBody": json_body, "responses": {**ok, "403": error, "409": error,
                                                                        "422": error}}}
           for action, summary in (("assign", "Assign to {manager_id} (head)"),
                                   ("status", "Set {status}: in_work or qualified"),
                                   ("convert", "Make a contact (and company) of it {contact_name, company_name}"),
                                   ("junk", "Mark junk with a {reason}"))},
        "/api/deals": {
            "get": {"summary": "Deals (a manager: their own)", "parameters": query("status"),
                    "responses": {**ok, "422": error}},
            "post": {"summary": "Create a deal {title, contact_id | lead_id, company_id, needs, legal_entity, "
                                "amount, probability, source, manager_id, expected_close_on}", "requestBody": json_body,
                     "responses": {"201": {"description": "created"}, "404": error, "422": error}}},
        "/api/deals/{id}": {"parameters": by_id, "get": {"summary": "One deal with items and stage history",
                                                         "responses": {**ok, "404": error}},
                            "patch": _deal_patch(error)},
        **{f"/api/deals/{{id}}/{action}": {"parameters": by_id, "post": {
            "summary": summary, "requestBody": json_body, "responses": {**ok, "404": error, "409": error,
                                                                        "422": error}}}
           for action, summary in (("stage", "Move to {stage, version?} by the stage rules (409 with error.rule: "
                                              "needs_items, needs_contract, not_skippable, stale); the "
                                              "reservation stage reserves stock; the stage's automatic tasks"),
                                   ("close", "{status, version?}: won, or lost with a {reason}; won with items "
                                             "unshipped is 409 (error.rule unshipped) unless {confirm: true, "
                                             "reason}"),
                                   ("items", "Add {product_id | sku, quantity, price?}"),
                                   ("remove-item", "Remove {item_id}, releasing its reservation"),
                                   ("reserve", "Reserve what stock has; order the rest"))},
        "/api/products": {
            "get": {"summary": "Products with balances", "parameters": query("q"), "responses": ok},
            "post": {"summary": "Create a product {sku, name, unit, price, barcode?, made_in_house} "
                                "(warehouse, head, admin)",
                     "requestBody": json_body, "responses": {"201": {"description": "created"}, "409": error}}},
        "/api/stock": {"get": {"summary": "Balances (on hand, reserved, available) and illiquid products",
                               "parameters": query("q", "illiquid_days"), "responses": ok}},
        "/api/stock/movements": {"post": {
            "summary": "A receipt {product_id, kind, quantity, warehouse_id?, expires_on?, document_number?}, "
                       "shipment (oldest batch first) or write-off (with a reason); see also /api/stock/receipts, "
                       "/api/stock/writeoffs, /api/stock/transfers",
            "requestBody": json_body, "responses": {"201": {"description": "new balance"}, "409": error,
                                                    "422": error}}},
        "/api/tasks": {"get": {"summary": "My open tasks (callbacks, replies, stuck deals)", "responses": ok},
                       "post": {"summary": "Set a follow-up {title, due_at, remind_at?, assignee_id?, note?, "
                                           "contact_id? | company_id? | deal_id? | lead_id?} (a manager assigns to "
                                           "themselves); remind_at left out: reminded at due_at; null: no reminder",
                                "requestBody": _task_body(required=["title", "due_at"]),
                                "responses": {"201": {"description": "created"}, "403": error, "404": error,
                                              "422": error}}},
        "/api/tasks/reminders": {"get": {
            "summary": "My reminders sent in the last 30 minutes for tasks still open (they are pushed live as the "
                       "socket.io event `reminder` at remind_at)", "responses": ok}},
        "/api/tasks/{id}": {"parameters": by_id, "patch": {
            "summary": "Edit {title?, due_at?, remind_at?, assignee_id?, note?, state?, version?}; a stale version is "
                       "409; a new remind_at arms the reminder again; a new due_at alone moves the reminder with it",
            "requestBody": _task_body(required=[]),
            "responses": {**ok, "403": error, "404": error, "409": error, "422": error}}},
        "/api/tasks/{id}/done": {"parameters": by_id, "post": {
            "summary": "Close a reply or follow-up task (callbacks close when the customer is reached)",
            "responses": {**ok, "404": error, "409": error}}},
        "/api/missed": {"get": {
            "summary": "The missed-call board: open rows always, resolved ones within the window",
            "parameters": query("manager", "line", "state"), "responses": {**ok, "422": error}}},
        "/api/missed/{id}/resolve": {"parameters": by_id, "post": {
            "summary": "Resolve by hand with a {reason}: spam, wrong_number, reached_another_way, not_needed",
            "requestBody": json_body, "responses": {**ok, "404": error, "422": error}}},
        "/api/missed/{id}/assign": {"parameters": by_id, "post": {
            "summary": "Assign the callback to {manager_id} (head)", "requestBody": json_body,
            "responses": {**ok, "403": error, "404": error}}},
    }


def _deal_patch(error: dict[str, Any]) -> dict[str, Any]:
    """PATCH /api/deals/{id} (web/board.py)."""
    fields = {
        "title": {"type": "string", "maxLength": 200}, "amount": {"type": ["string", "number", "null"],
                                                              "description": "set by hand; null: the items' total"},
        "probability": {"type": "integer", "minimum": 0, "maximum": 100}, "needs": {"type": "string"},
        "legal_entity": {"type": "string"}, "contact_id": {"type": ["integer", "null"]},
        "company_id": {"type": ["integer", "null"]},
        "manager_id": {"type": "integer", "description": "head and admin only"},
        "expected_close_on": {"type": ["string", "null"], "format": "date"},
        "stage": {"type": "string", "description": "moved by the same rules as POST /api/deals/{id}/stage"},
        "version": {"type": "integer", "description": "as read; a stale one answers 409, nothing written"}}
    conflict = {"description": "stale version or a stage rule: error.rule says which (stale, needs_items, "
                               "needs_contract, not_skippable); `current` is the deal as stored now",
                "content": {"application/json": {"schema": {"type": "object", "properties": {
                    "error": {"type": "object"}, "current": {"type": "object"}}}}}}
    return {"summary": "Change any of the fields sent; with `version`, an edit over a newer one is refused (409)",
            "requestBody": {"content": {"application/json": {"schema": {
                "type": "object", "properties": fields, "additionalProperties": False}}}},
            "responses": {"200": {"description": "the deal as saved, with its new version"}, "403": error,
                          "404": error, "409": conflict, "422": error}}


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_spec())


def setup(app: web.Application) -> None:
    router = app.router
    section = "{section:contacts|companies}"
    router.add_get(f"/api/{section}", list_parties)
    router.add_post(f"/api/{section}", create_party)
    router.add_get(f"/api/{section}/{{party_id:\\d+}}", get_party)
    router.add_put(f"/api/{section}/{{party_id:\\d+}}", update_party)
    router.add_patch(f"/api/{section}/{{party_id:\\d+}}", update_party)
    router.add_get("/api/users", list_users)
    router.add_post("/api/users", create_user)
    router.add_get("/api/users/{user_id:\\d+}", get_user)
    router.add_put("/api/users/{user_id:\\d+}", update_user)
    router.add_get("/api/openapi.json", openapi)
