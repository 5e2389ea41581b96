"""Logins: SITHS (client certificate from the TLS terminator), BankID (start, QR, collect,
cancel), 1177 e-services (OpenID Connect redirect and callback), and the development login
when it is on. Identity does every check and issues the session token; the gateway only
carries it in an HttpOnly, Secure, SameSite=Strict cookie."""

from __future__ import annotations

import datetime as dt
import io
import secrets
import urllib.parse
from typing import Annotated, cast

import segno
from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field
from svpl.common.v1 import common_pb2
from svpl.identity.v1 import identity_pb2

from services.gateway import access
from services.gateway.access import login, public, session_only
from services.gateway.config import GatewaySettings
from services.gateway.dependencies import BackendsDep, LoginLimiterDep, Me, SettingsDep, TrustedProxiesDep
from services.gateway.problems import Problem, problem_responses
from services.gateway.routes.common import Body, LoginMethodName, as_service
from services.gateway.security import SESSION_COOKIE, RateLimiter, client_address, cookie_header, peer, session_from
from services.runtime import auth

BANKID_COOKIE = "svpl_bankid"
OIDC_COOKIE = "svpl_oidc"

router = APIRouter()


class SessionInfo(BaseModel):
    name: str
    id_kind: str
    # An HSA-id in full; a personnummer masked (YYYYMMDD-****).
    id: str
    roles: list[str]
    method: str
    organization: str
    expires_at: str


class DevPerson(BaseModel):
    person_id: str
    label: str
    method: str = Field("", description="The login method the demo person logs in with (a LoginMethod name)")


class DevPeople(BaseModel):
    people: list[DevPerson]


class BankIdStart(BaseModel):
    order_ref: str
    auto_start_token: str
    qr_data: str


class BankIdQr(BaseModel):
    qr_data: str


class BankIdCollect(BaseModel):
    status: str
    hint_code: str
    user_message: str
    session: SessionInfo | None = None


class LoggedOut(BaseModel):
    logged_out: bool


def _masked(caller: auth.Caller) -> str:
    if caller.id_kind == "personnummer" and len(caller.id) >= 8:
        return f"{caller.id[:8]}-****"
    return caller.id


def session_info(caller: auth.Caller, expires_at: str) -> SessionInfo:
    return SessionInfo(name=caller.name, id_kind=caller.id_kind, id=_masked(caller), roles=sorted(caller.roles),
                       method=caller.method, organization=caller.organization, expires_at=expires_at)


def _rate_limit(limiter: RateLimiter, request: Request) -> None:
    wait = limiter.hit(client_address(request))
    if wait:
        raise Problem(429, "för många inloggningsförsök från den här adressen: vänta en minut", headers={
            "Retry-After": str(int(wait) + 1)})


async def _logged_in(keys: auth.KeySet, session: identity_pb2.Session, response: Response) -> SessionInfo:
    """Verify the new session token like every later request will, and set the cookie."""
    expires = session.expires_at.ToDatetime(dt.timezone.utc)
    max_age = max(0, int((expires - dt.datetime.now(dt.timezone.utc)).total_seconds()))
    response.headers.append("set-cookie", cookie_header(SESSION_COOKIE, session.token, max_age=max_age))
    claims = await auth.decode_token(keys, session.token, typ=auth.SESSION)
    return session_info(auth.caller_from_claims(claims, session.token), expires.isoformat())


AUTH_PROBLEMS = problem_responses(400, 401, 403, 404, 409, 413, 429, 503)


@router.get("/api/v1/session", tags=["auth"], responses={200: {"model": SessionInfo}, **AUTH_PROBLEMS})
@session_only
async def who_am_i(me: Me) -> SessionInfo:
    return session_info(me.caller, dt.datetime.fromtimestamp(me.expires_at, dt.timezone.utc).isoformat())


@router.post("/api/v1/auth/logout", tags=["auth"], responses={200: {"model": LoggedOut}, **AUTH_PROBLEMS})
@login("identity", "RevokeTokens")
async def logout(request: Request, response: Response, backends: BackendsDep, settings: SettingsDep) -> LoggedOut:
    """Ends the session for good: identity revokes the token (a copied cookie stops working too),
    then the cookie is cleared. Without a valid session there is nothing to revoke."""
    try:
        session = await session_from(request, backends.keys)
    except Problem:
        session = None
    if session is not None:
        await access.stub_method(request, backends.identity)(
            identity_pb2.RevokeTokensRequest(token_id=session.caller.token_id, reason="logout"),
            **as_service(backends, settings))
        # At once in this process; every other process follows identity's list within its poll.
        # (The keys follow revocations whenever the gateway has a service token, which the call above needed.)
        cast(auth.Revocations, backends.keys.revocations).add(session.caller.token_id, session.expires_at)
    response.headers.append("set-cookie", cookie_header(SESSION_COOKIE, "", max_age=0))
    return LoggedOut(logged_out=True)


# ------------------------------------------------------------------ development login


def _require_development(settings: GatewaySettings) -> None:
    if not settings.development_login:
        raise Problem(404, "utvecklingsinloggningen är avstängd")


@router.get("/api/v1/auth/development/people", tags=["auth"], responses={200: {"model": DevPeople}, **AUTH_PROBLEMS},
            summary="Demo people for the development login (only when it is on)")
@public
async def development_people(settings: SettingsDep) -> DevPeople:
    _require_development(settings)
    people = []
    for entry in settings.development_people:
        person_id, _, rest = entry.partition("|")
        label, _, method = rest.partition("|")
        people.append(DevPerson(person_id=person_id, label=label or person_id, method=method))
    return DevPeople(people=people)


class DevelopmentLoginBody(Body):
    person_id: str = Field(min_length=1, max_length=40)
    method: LoginMethodName | None = None


@router.post("/api/v1/auth/development", tags=["auth"], responses={200: {"model": SessionInfo}, **AUTH_PROBLEMS},
             summary="Development login as a demo person (only when it is on)")
@login("identity", "DevelopmentLogin")
async def development_login(request: Request, response: Response, body: DevelopmentLoginBody,
                            backends: BackendsDep, settings: SettingsDep, limiter: LoginLimiterDep) -> SessionInfo:
    _require_development(settings)
    _rate_limit(limiter, request)
    answer = await access.stub_method(request, backends.identity)(
        identity_pb2.DevelopmentLoginRequest(person_id=body.person_id,
                                             method=body.method or common_pb2.LOGIN_METHOD_UNSPECIFIED),
        **as_service(backends, settings))
    return await _logged_in(backends.keys, answer.session, response)


# ------------------------------------------------------------------ SITHS


@router.post("/api/v1/auth/siths", tags=["auth"], responses={200: {"model": SessionInfo}, **AUTH_PROBLEMS},
             summary="SITHS login with the client certificate forwarded by the TLS terminator")
@login("identity", "LoginSiths")
async def siths_login(request: Request, response: Response, backends: BackendsDep, settings: SettingsDep,
                      limiter: LoginLimiterDep, trusted_proxies: TrustedProxiesDep) -> SessionInfo:
    _rate_limit(limiter, request)
    # The TCP peer itself must be the TLS terminator: a forwarded address proves nothing.
    if peer(request) not in trusted_proxies:
        raise Problem(403, "SITHS-inloggning måste gå via regionens TLS-terminering", reason="UNTRUSTED_PROXY")
    pem = urllib.parse.unquote(request.headers.get(settings.siths_certificate_header, ""))
    verified = request.headers.get(settings.siths_verify_header, "")
    if "BEGIN CERTIFICATE" not in pem or verified in ("", "NONE"):
        raise Problem(401, "inget SITHS-kortcertifikat skickades: sätt i kortet och försök igen",
                      reason="NO_CLIENT_CERTIFICATE")
    if verified != "SUCCESS":  # the TLS terminator refused the chain (FAILED:<reason>); identity would too
        raise Problem(401, "SITHS-kortets certifikat godtogs inte: kontrollera kortet och försök igen",
                      reason="CLIENT_CERTIFICATE_NOT_VERIFIED")
    answer = await access.stub_method(request, backends.identity)(
        identity_pb2.LoginSithsRequest(client_certificate_pem=pem), **as_service(backends, settings))
    return await _logged_in(backends.keys, answer.session, response)


# ------------------------------------------------------------------ BankID


def _order_ref(request: Request) -> str:
    ref = request.cookies.get(BANKID_COOKIE, "")
    if not ref:
        raise Problem(409, "ingen BankID-inloggning pågår i den här webbläsaren: börja om", reason="NO_ORDER")
    return ref


@router.post("/api/v1/auth/bankid", tags=["auth"], responses={200: {"model": BankIdStart}, **AUTH_PROBLEMS},
             summary="Start a BankID login (the order is bound to this browser)")
@login("identity", "StartBankIdLogin")
async def bankid_start(request: Request, response: Response, backends: BackendsDep, settings: SettingsDep,
                       limiter: LoginLimiterDep) -> BankIdStart:
    _rate_limit(limiter, request)
    answer = await access.stub_method(request, backends.identity)(
        identity_pb2.StartBankIdLoginRequest(end_user_ip=client_address(request)), **as_service(backends, settings))
    response.headers.append("set-cookie", cookie_header(BANKID_COOKIE, answer.order_ref, max_age=600,
                                                        path="/api/v1/auth/bankid"))
    return BankIdStart(order_ref=answer.order_ref, auto_start_token=answer.auto_start_token, qr_data=answer.qr_data)


@router.get("/api/v1/auth/bankid/qr", tags=["auth"], responses={200: {"model": BankIdQr}, **AUTH_PROBLEMS},
            summary="This second's animated QR content for the order in progress")
@login("identity", "GetBankIdQr")
async def bankid_qr(request: Request, backends: BackendsDep, settings: SettingsDep) -> BankIdQr:
    answer = await access.stub_method(request, backends.identity)(
        identity_pb2.GetBankIdQrRequest(order_ref=_order_ref(request)), **as_service(backends, settings))
    return BankIdQr(qr_data=answer.qr_data)


@router.get("/api/v1/auth/bankid/qr.svg", tags=["auth"], response_class=Response,
            responses={200: {"description": "The QR code to scan with the BankID app",
                             "content": {"image/svg+xml": {"schema": {"type": "string"}}}}, **AUTH_PROBLEMS},
            summary="This second's animated QR code, drawn (the portal shows it as an image)")
@login("identity", "GetBankIdQr")
async def bankid_qr_image(request: Request, backends: BackendsDep, settings: SettingsDep) -> Response:
    answer = await access.stub_method(request, backends.identity)(
        identity_pb2.GetBankIdQrRequest(order_ref=_order_ref(request)), **as_service(backends, settings))
    out = io.BytesIO()
    segno.make(answer.qr_data, error="l").save(out, kind="svg", scale=5, border=4, dark="#000", light="#fff")
    return Response(out.getvalue(), media_type="image/svg+xml", headers={"cache-control": "no-store"})


@router.post("/api/v1/auth/bankid/collect", tags=["auth"], responses={200: {"model": BankIdCollect}, **AUTH_PROBLEMS},
             summary="Poll the order in progress; logs in when it is complete")
@login("identity", "CollectBankIdLogin")
async def bankid_collect(request: Request, response: Response, backends: BackendsDep,
                         settings: SettingsDep) -> BankIdCollect:
    answer = await access.stub_method(request, backends.identity)(
        identity_pb2.CollectBankIdLoginRequest(order_ref=_order_ref(request)), **as_service(backends, settings))
    status = identity_pb2.BankIdStatus.Name(answer.status)
    info = None
    if answer.status == identity_pb2.BANK_ID_STATUS_COMPLETE:
        info = await _logged_in(backends.keys, answer.session, response)
    if answer.status != identity_pb2.BANK_ID_STATUS_PENDING:
        response.headers.append("set-cookie", cookie_header(BANKID_COOKIE, "", max_age=0, path="/api/v1/auth/bankid"))
    return BankIdCollect(status=status, hint_code=answer.hint_code, user_message=answer.user_message, session=info)


@router.post("/api/v1/auth/bankid/cancel", tags=["auth"], responses={200: {"model": LoggedOut}, **AUTH_PROBLEMS})
@login("identity", "CancelBankIdLogin")
async def bankid_cancel(request: Request, response: Response, backends: BackendsDep,
                        settings: SettingsDep) -> LoggedOut:
    await access.stub_method(request, backends.identity)(
        identity_pb2.CancelBankIdLoginRequest(order_ref=_order_ref(request)), **as_service(backends, settings))
    response.headers.append("set-cookie", cookie_header(BANKID_COOKIE, "", max_age=0, path="/api/v1/auth/bankid"))
    return LoggedOut(logged_out=True)


# ------------------------------------------------------------------ 1177 e-services (OpenID Connect)

Region = Annotated[str, Path(pattern=r"^[a-z0-9-]{1,20}$")]
MAX_SAML_FORM = 512 * 1024  # a SAMLResponse with its signature and certificate is a few kB


def check_region(settings: GatewaySettings, region: str) -> None:
    if region != settings.region:
        raise Problem(404, f"regionen {region!r} finns inte här")


def _callback_uri(request: Request, settings: GatewaySettings, region: str) -> str:
    base = settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")
    return f"{base}/auth/{region}/1177/callback"


@router.get("/auth/{region}/1177", include_in_schema=False)
@login("identity", "Start1177Login")
async def start_1177(request: Request, region: Region, backends: BackendsDep, settings: SettingsDep,
                     limiter: LoginLimiterDep):
    check_region(settings, region)
    _rate_limit(limiter, request)
    answer = await access.stub_method(request, backends.identity)(
        identity_pb2.Start1177LoginRequest(redirect_uri=_callback_uri(request, settings, region)),
        **as_service(backends, settings))
    # SameSite=Strict would drop this cookie on the identity provider's redirect back, and Lax on a SAML
    # IdP's cross-site POST back: None, for this one only (it binds the answer to this browser; it
    # grants nothing by itself and lives only under /auth/<region>/1177).
    redirect = RedirectResponse(answer.authorization_url, status_code=303)
    redirect.headers.append("set-cookie", f"{OIDC_COOKIE}={answer.state}; Path=/auth/{region}/1177; Secure; "
                                          "HttpOnly; SameSite=None; Max-Age=600")
    return redirect


@router.get("/auth/{region}/1177/callback", include_in_schema=False)
@login("identity", "Complete1177Login")
async def callback_1177(request: Request, region: Region, backends: BackendsDep, settings: SettingsDep,
                        state: str = "", code: str = "", error: str = ""):
    """OpenID Connect: the provider redirects back with the code and the state."""
    if error:
        check_region(settings, region)
        raise Problem(401, f"inloggningen via 1177 slutfördes inte ({error[:100]})")
    return await _complete_1177(request, region, backends, settings, state, code)


@router.post("/auth/{region}/1177/callback", include_in_schema=False)
@login("identity", "Complete1177Login")
async def saml_callback_1177(request: Request, region: Region, backends: BackendsDep, settings: SettingsDep):
    """SAML 2.0 (HTTP-POST binding): the IdP's page posts SAMLResponse and RelayState (the state)."""
    check_region(settings, region)
    body = await request.body()
    if len(body) > MAX_SAML_FORM:
        raise Problem(413, "svaret från 1177 är för stort")
    form = urllib.parse.parse_qs(body.decode("ascii", "replace"), max_num_fields=10)
    return await _complete_1177(request, region, backends, settings, form.get("RelayState", [""])[0],
                                form.get("SAMLResponse", [""])[0])


async def _complete_1177(request: Request, region: str, backends, settings: GatewaySettings, state: str,
                         code: str) -> RedirectResponse:
    check_region(settings, region)
    expected = request.cookies.get(OIDC_COOKIE, "")
    if not expected or not state or not secrets.compare_digest(expected, state) or not code:
        raise Problem(400, "svaret från 1177 hör inte till den här webbläsaren: börja om", reason="STATE")
    answer = await access.stub_method(request, backends.identity)(
        identity_pb2.Complete1177LoginRequest(state=state, code=code,
                                              redirect_uri=_callback_uri(request, settings, region)),
        **as_service(backends, settings))
    redirect = RedirectResponse("/portal/", status_code=303)
    await _logged_in(backends.keys, answer.session, redirect)
    redirect.headers.append("set-cookie", f"{OIDC_COOKIE}=; Path=/auth/{region}/1177; Secure; HttpOnly; "
                                          "SameSite=None; Max-Age=0")
    return redirect


