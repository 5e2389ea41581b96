"""BankID login: a client for the Relying Party API v6 (auth, collect, cancel) and the
login flow around it.

The client is httpx with the RP certificate (mutual TLS) and the BankID CA as the only
trust anchor. Orders are kept in identity's own database (several replicas may serve
one login), including `qrStartSecret`, which never leaves identity: GetBankIdQr
computes the animated QR content here each second,
`bankid.<qrStartToken>.<seconds since auth>.<hex HMAC-SHA256(qrStartSecret, seconds)>`.
A completed order issues exactly one session token (the order is consumed atomically).
The completion data's evidence, BankID's `signature` (the signed login, base64 XML) and
`ocspResponse` (the certificate's status at that moment, base64), is kept with the login's record
(collection `login_records`, keyed by the session's token id, written durably before the session is
returned): what shows later that this person logged in, and with which BankID.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import logging
import ssl
import time
from dataclasses import dataclass

import httpx
from pymongo import ReturnDocument

from services.identity import personnummer as pnr
from services.identity.token_service import BANKID, Session, TokenService, citizen_principal
from services.runtime.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from services.runtime.mongo import DURABLE

log = logging.getLogger("svpl.identity.bankid")
ASSURANCE = "substantial"  # BankID: Swedish LoA 3, eIDAS substantial
ORDER_LIFETIME = dt.timedelta(minutes=10)

PENDING, FAILED, COMPLETE = "pending", "failed", "complete"

# The RFA user messages of the BankID integration guide, by hint code (QR code flow).
RFA1 = "Starta BankID-appen."
RFA3 = "Åtgärden avbruten. Försök igen."
RFA6 = "Åtgärden avbruten."
RFA8 = ("BankID-appen svarar inte. Kontrollera att den är startad och att du har internetanslutning. "
        "Om du inte har något giltigt BankID kan du skaffa ett hos din bank. Försök sedan igen.")
RFA9 = "Skriv in din säkerhetskod i BankID-appen och välj Identifiera eller Skriv under."
RFA16 = ("Det BankID du försöker använda är för gammalt eller spärrat. Använd ett annat BankID eller skaffa "
         "ett nytt hos din bank.")
RFA17 = ("Misslyckades att läsa av QR-koden. Starta BankID-appen och läs av QR-koden. Kontrollera att "
         "BankID-appen är uppdaterad. Om du inte har BankID-appen måste du installera den och skaffa ett "
         "BankID hos din bank. Installera appen från din appbutik eller https://install.bankid.com.")
RFA21 = "Identifiering eller underskrift pågår."
RFA22 = "Okänt fel. Försök igen."
RFA23 = "Fotografera och läs av din ID-handling med BankID-appen."
SEARCHING = "Söker efter BankID, det kan ta en liten stund…"
# userCallConfirm (the app asks the user to confirm a call with the RP) has no RFA text of its own;
# svpl starts no phone orders, so a short instruction of ours.
CONFIRM_CALL = "Bekräfta samtalet i BankID-appen."

HINT_MESSAGES = {
    PENDING: {
        "outstandingTransaction": RFA1, "noClient": RFA1, "started": SEARCHING, "userMrtd": RFA23,
        "userCallConfirm": CONFIRM_CALL, "userSign": RFA9,
    },
    FAILED: {
        "expiredTransaction": RFA8, "certificateErr": RFA16, "userCancel": RFA6, "cancelled": RFA3,
        "startFailed": RFA17, "userDeclinedCall": RFA3, "notSupportedByUserApp": RFA3,
        "transactionRiskBlocked": RFA22,
    },
}


def user_message(status: str, hint_code: str) -> str:
    """The message for a hint code; unknown codes get the guide's generic text for their status."""
    known = HINT_MESSAGES.get(status, {})
    return known.get(hint_code, RFA21 if status == PENDING else RFA22)


def qr_data(qr_start_token: str, qr_start_secret: str, seconds: int) -> str:
    digest = hmac.new(qr_start_secret.encode(), str(seconds).encode(), hashlib.sha256).hexdigest()
    return f"bankid.{qr_start_token}.{seconds}.{digest}"


class BankIdError(Exception):
    def __init__(self, status: int, error_code: str, details: str = "") -> None:
        super().__init__(f"{status} {error_code}: {details}")
        self.status, self.error_code, self.details = status, error_code, details


class BankIdClient:
    """The Relying Party API v6: POST JSON to <base>/auth, /collect, /cancel."""

    def __init__(self, base_url: str, client_cert: str, client_key: str, ca_file: str, timeout: float = 10.0) -> None:
        context = ssl.create_default_context(cafile=ca_file or None)
        context.load_cert_chain(client_cert, client_key)
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/") + "/", verify=context, timeout=timeout,
                                       headers={"Content-Type": "application/json"})

    async def close(self) -> None:
        await self._http.aclose()

    async def _post(self, path: str, body: dict) -> dict:
        try:
            response = await self._http.post(path, json=body)
        except httpx.HTTPError as exc:
            raise Unavailable(f"BankID is not reachable ({exc.__class__.__name__})") from None
        if response.status_code == 200:
            return response.json()
        try:
            error = response.json()
        except ValueError:
            error = {}
        raise BankIdError(response.status_code, error.get("errorCode", "unknown"), error.get("details", ""))

    async def auth(self, end_user_ip: str) -> dict:
        return await self._post("auth", {"endUserIp": end_user_ip})

    async def collect(self, order_ref: str) -> dict:
        return await self._post("collect", {"orderRef": order_ref})

    async def cancel(self, order_ref: str) -> dict:
        return await self._post("cancel", {"orderRef": order_ref})


@dataclass(frozen=True)
class Started:
    order_ref: str
    auto_start_token: str
    qr_data: str


@dataclass(frozen=True)
class Collected:
    status: str
    hint_code: str
    user_message: str
    session: Session | None = None


def _service_error(exc: BankIdError) -> Exception:
    """BankID's error answers, as svpl errors (the RP configuration is never blamed on the user)."""
    if exc.error_code == "alreadyInProgress":
        return FailedPrecondition("a BankID login for this person is already in progress: try again",
                                  reason="ALREADY_IN_PROGRESS")
    if exc.error_code in ("maintenance", "internalError", "requestTimeout"):
        return Unavailable(f"BankID is unavailable ({exc.error_code}): try again shortly")
    log.error("BankID refused the request: %s %s", exc.status, exc.error_code)
    return Unavailable(f"BankID refused the request ({exc.error_code})")


class BankIdLogin:
    def __init__(self, client: BankIdClient | None, db, tokens: TokenService, clock=time.time) -> None:
        self._client = client
        self._orders = db["bankid_orders"]
        self._records = db.get_collection("login_records", write_concern=DURABLE)
        self._tokens = tokens
        self._clock = clock

    async def ensure_indexes(self) -> None:
        await self._orders.create_index("expires_at", expireAfterSeconds=0)

    def _require(self) -> BankIdClient:
        if self._client is None:
            raise FailedPrecondition("BankID login is not configured", reason="BANKID_NOT_CONFIGURED")
        return self._client

    async def start(self, end_user_ip: str) -> Started:
        client = self._require()
        try:
            ip = str(ipaddress.ip_address((end_user_ip or "").strip()))
        except ValueError:
            raise InvalidArgument("end_user_ip", "the end user's IPv4 or IPv6 address is required") from None
        try:
            order = await client.auth(ip)
        except BankIdError as exc:
            raise _service_error(exc) from None
        now = self._clock()
        await self._orders.insert_one({
            "_id": order["orderRef"], "qr_start_token": order["qrStartToken"],
            "qr_start_secret": order["qrStartSecret"], "started": now, "status": PENDING,
            "expires_at": dt.datetime.fromtimestamp(now, dt.timezone.utc) + ORDER_LIFETIME,
        })
        return Started(order["orderRef"], order["autoStartToken"],
                       qr_data(order["qrStartToken"], order["qrStartSecret"], 0))

    async def _order(self, order_ref: str) -> dict:
        if not (order_ref or "").strip():
            raise InvalidArgument("order_ref", "is required")
        order = await self._orders.find_one({"_id": order_ref.strip()})
        if order is None:
            raise NotFound("no such BankID order (it may have expired)")
        return order

    async def qr(self, order_ref: str) -> str:
        order = await self._order(order_ref)
        if order["status"] != PENDING:
            raise FailedPrecondition("the BankID order is no longer pending", reason="ORDER_" + order["status"].upper())
        seconds = max(0, int(self._clock() - order["started"]))
        return qr_data(order["qr_start_token"], order["qr_start_secret"], seconds)

    async def collect(self, order_ref: str) -> Collected:
        order = await self._order(order_ref)
        if order["status"] != PENDING:
            raise FailedPrecondition("the BankID order is already finished", reason="ORDER_" + order["status"].upper())
        try:
            result = await self._require().collect(order["_id"])
        except BankIdError as exc:
            raise _service_error(exc) from None
        status, hint = result.get("status", ""), result.get("hintCode", "")
        if status == PENDING:
            return Collected(PENDING, hint, user_message(PENDING, hint))
        if status == COMPLETE:
            completion = result.get("completionData", {})
            user = completion.get("user", {})
            try:
                number = pnr.parse(user.get("personalNumber", ""), "personalNumber").normalized
            except InvalidArgument:
                log.error("BankID completed an order with an unusable personal number")
                raise Unavailable("BankID returned an unusable personal number") from None
            consumed = await self._orders.find_one_and_update(
                {"_id": order["_id"], "status": PENDING},
                {"$set": {"status": COMPLETE}, "$unset": {"qr_start_secret": ""}},
                return_document=ReturnDocument.AFTER)
            if consumed is None:
                raise FailedPrecondition("the BankID order is already finished", reason="ORDER_COMPLETE")
            name = user.get("name") or f"{user.get('givenName', '')} {user.get('surname', '')}".strip()
            log.info("BankID login", extra={"svpl_person": pnr.mask(number)})
            session = self._tokens.issue_session(citizen_principal(number, name, BANKID, ASSURANCE))
            await self._records.insert_one({
                "_id": session.token_id, "method": BANKID, "person_id": number, "order_ref": order["_id"],
                "at": dt.datetime.now(dt.timezone.utc), "expires_at": session.expires_at,
                "signature": str(completion.get("signature", "")),
                "ocsp_response": str(completion.get("ocspResponse", "")),
                "bankid_issue_date": str(completion.get("bankIdIssueDate", "")),
                "device_ip": str(completion.get("device", {}).get("ipAddress", "")),
            })
            return Collected(COMPLETE, "", "", session)
        await self._orders.update_one({"_id": order["_id"]},
                                      {"$set": {"status": FAILED}, "$unset": {"qr_start_secret": ""}})
        return Collected(FAILED, hint, user_message(FAILED, hint))

    async def cancel(self, order_ref: str) -> None:
        order = await self._order(order_ref)
        if order["status"] == PENDING:
            try:
                await self._require().cancel(order["_id"])
            except BankIdError as exc:
                if exc.error_code != "invalidParameters":  # already gone at BankID: cancelled all the same
                    raise _service_error(exc) from None
        await self._orders.update_one({"_id": order["_id"], "status": PENDING},
                                      {"$set": {"status": FAILED}, "$unset": {"qr_start_secret": ""}})

