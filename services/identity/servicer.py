"""IdentityService: thin gRPC layer (decode, call the domain, encode)."""

from __future__ import annotations

import datetime as dt

from google.protobuf import timestamp_pb2
from svpl.common.v1 import common_pb2
from svpl.identity.v1 import identity_pb2, identity_pb2_grpc

from services.identity import bankid
from services.identity import hsa_id as hsa
from services.identity import personnummer as pnr
from services.identity.access_extract import AccessExtract
from services.identity.bankid import BankIdLogin
from services.identity.development import DevelopmentLogin as DevelopmentProvider
from services.identity.directory import (
    MUNICIPALITY,
    ORDER,
    REGION,
    Directory,
    DirectoryPerson,
    HsaMapping,
    Query,
)
from services.identity.oidc1177 import Oidc1177Login
from services.identity.saml1177 import Saml1177Login
from services.identity.siths import SithsLogin
from services.identity.token_service import (
    BANKID,
    DEVELOPMENT,
    E_SERVICES_1177,
    HSA_ID,
    PERSONNUMMER,
    SITHS,
    Principal,
    Session,
    TokenService,
)
from services.identity.tokens import KeyRing
from services.runtime import auth, paging
from services.runtime.access_log import AccessLog
from services.runtime.auth import ANYONE, LOGGED_IN, persons_with, services
from services.runtime.errors import NotFound, PermissionDenied
from services.runtime.timestamps import to_datetime

STAFF = persons_with(auth.ROLE_STAFF)

ACCESS = {
    "ValidatePersonnummer": LOGGED_IN | services("booking", "roster", "support", "gateway"),
    "ValidateHsaId": LOGGED_IN | services("booking", "roster", "support", "gateway"),
    "LookupPerson": STAFF | services("booking", "roster", "support"),
    "SearchDirectory": STAFF,
    "LoginSiths": services("gateway"),
    "StartBankIdLogin": services("gateway"),
    "GetBankIdQr": services("gateway"),
    "CollectBankIdLogin": services("gateway"),
    "CancelBankIdLogin": services("gateway"),
    "Start1177Login": services("gateway"),
    "Complete1177Login": services("gateway"),
    "DevelopmentLogin": services("gateway"),
    "IssueJoinToken": services("roster"),
    "VerifyToken": services("booking", "roster", "media", "support", "gateway"),
    "RevokeTokens": services("roster", "gateway"),
    "ListRevokedSessions": services("booking", "roster", "media", "support", "gateway"),
    "GetSigningKeys": ANYONE,
    "ListAccessRecords": persons_with(auth.ROLE_ACCESS_LOG),
}

_METHODS = {
    SITHS: common_pb2.LOGIN_METHOD_SITHS,
    BANKID: common_pb2.LOGIN_METHOD_BANKID,
    E_SERVICES_1177: common_pb2.LOGIN_METHOD_E_SERVICES_1177,
    DEVELOPMENT: common_pb2.LOGIN_METHOD_DEVELOPMENT,
}
_METHOD_NAMES = {v: k for k, v in _METHODS.items()}
_ID_KINDS = {HSA_ID: common_pb2.ID_KIND_HSA_ID, PERSONNUMMER: common_pb2.ID_KIND_PERSONNUMMER}
_STAFF_KINDS = {REGION: identity_pb2.STAFF_KIND_REGION, MUNICIPALITY: identity_pb2.STAFF_KIND_MUNICIPALITY}
_TOKEN_KINDS = {auth.SESSION: identity_pb2.TOKEN_KIND_SESSION, auth.JOIN: identity_pb2.TOKEN_KIND_JOIN,
                auth.SERVICE: identity_pb2.TOKEN_KIND_SERVICE}
_TOKEN_KIND_NAMES = {v: k for k, v in _TOKEN_KINDS.items()}
_BANKID_STATUS = {bankid.PENDING: identity_pb2.BANK_ID_STATUS_PENDING, bankid.FAILED: identity_pb2.BANK_ID_STATUS_FAILED,
                  bankid.COMPLETE: identity_pb2.BANK_ID_STATUS_COMPLETE}


def timestamp(when: dt.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when)
    return ts


def principal_pb(p: Principal) -> identity_pb2.Principal:
    return identity_pb2.Principal(
        person=common_pb2.PersonRef(id_kind=_ID_KINDS.get(p.id_kind, common_pb2.ID_KIND_UNSPECIFIED),
                                    id=p.person_id, display_name=p.name),
        method=_METHODS.get(p.method, common_pb2.LOGIN_METHOD_UNSPECIFIED),
        assurance=p.assurance, roles=list(p.roles), organization=p.organization, unit=p.unit,
    )


def session_pb(s: Session) -> identity_pb2.Session:
    return identity_pb2.Session(token=s.token, expires_at=timestamp(s.expires_at), principal=principal_pb(s.principal))


def person_pb(p: DirectoryPerson) -> identity_pb2.DirectoryPerson:
    return identity_pb2.DirectoryPerson(
        hsa_id=p.hsa_id, given_name=p.given_name, surname=p.surname, title=p.title, organization=p.organization,
        unit=p.unit, staff_kind=_STAFF_KINDS.get(p.organization_kind, identity_pb2.STAFF_KIND_UNSPECIFIED),
    )


class IdentityServicer(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(self, keys: KeyRing, tokens: TokenService, directory: Directory, development: DevelopmentProvider,
                 access_log: AccessLog, siths: SithsLogin, bankid: BankIdLogin,
                 e_services: Oidc1177Login | Saml1177Login,
                 extract: AccessExtract, *, mapping: HsaMapping | None = None, test_environment: bool = False) -> None:
        self._keys = keys
        self._tokens = tokens
        self._directory = directory
        self._development = development
        self._access_log = access_log
        self._siths = siths
        self._bankid = bankid
        self._e_services = e_services
        self._extract = extract
        self._mapping = mapping or HsaMapping()
        self._test_environment = test_environment

    # ------------------------------------------------------------ identifiers

    async def ValidatePersonnummer(self, request, context):
        p = pnr.parse(request.personnummer)
        kind = (identity_pb2.PERSONNUMMER_KIND_SAMORDNINGSNUMMER if p.kind == pnr.SAMORDNINGSNUMMER
                else identity_pb2.PERSONNUMMER_KIND_PERSONNUMMER)
        return identity_pb2.ValidatePersonnummerResponse(
            normalized=p.normalized, birth_date=p.birth_date.isoformat(), kind=kind, masked=p.masked)

    async def ValidateHsaId(self, request, context):
        h = hsa.parse(request.hsa_id, test_environment=self._test_environment)
        return identity_pb2.ValidateHsaIdResponse(normalized=h.normalized, organization_number=h.organization_number)

    # ------------------------------------------------------------ directory

    async def LookupPerson(self, request, context):
        hsa_id = hsa.parse(request.hsa_id, test_environment=self._test_environment).normalized
        person = await self._directory.lookup(hsa_id)
        if person is None:
            raise NotFound(f"{hsa_id} is not in the HSA directory")
        await self._access_log.record("identity.lookup_person", hsa_id, resource=f"directory/{hsa_id}",
                                      purpose=request.purpose.strip()[:500])
        return identity_pb2.LookupPersonResponse(person=person_pb(person))

    async def SearchDirectory(self, request, context):
        # Protected persons (skyddade personuppgifter) only for those who may see them.
        query = Query.parse(request.name, request.organization, request.unit,
                            include_protected=self._mapping.sees_protected(auth.caller().roles))
        size = paging.page_size(request.page.page_size)
        after = ORDER.position(request.page.page_token, query)
        people, more = await self._directory.search(query, after, size)
        await self._access_log.record("identity.search_directory", [p.hsa_id for p in people],
                                      resource="directory/search", purpose=request.purpose.strip()[:500])
        token = ORDER.token(people[-1].sort_key(), query) if more and people else ""
        return identity_pb2.SearchDirectoryResponse(people=[person_pb(p) for p in people],
                                                    page=common_pb2.PageResponse(next_page_token=token))

    # ------------------------------------------------------------ logins

    async def LoginSiths(self, request, context):
        session = await self._siths.login(request.client_certificate_pem)
        return identity_pb2.LoginSithsResponse(session=session_pb(session))

    async def StartBankIdLogin(self, request, context):
        started = await self._bankid.start(request.end_user_ip)
        return identity_pb2.StartBankIdLoginResponse(order_ref=started.order_ref,
                                                     auto_start_token=started.auto_start_token,
                                                     qr_data=started.qr_data)

    async def GetBankIdQr(self, request, context):
        return identity_pb2.GetBankIdQrResponse(qr_data=await self._bankid.qr(request.order_ref))

    async def CollectBankIdLogin(self, request, context):
        c = await self._bankid.collect(request.order_ref)
        response = identity_pb2.CollectBankIdLoginResponse(status=_BANKID_STATUS[c.status], hint_code=c.hint_code,
                                                           user_message=c.user_message)
        if c.session is not None:
            response.session.CopyFrom(session_pb(c.session))
        return response

    async def CancelBankIdLogin(self, request, context):
        await self._bankid.cancel(request.order_ref)
        return identity_pb2.CancelBankIdLoginResponse()

    async def Start1177Login(self, request, context):
        url, state = await self._e_services.start(request.redirect_uri)
        return identity_pb2.Start1177LoginResponse(authorization_url=url, state=state)

    async def Complete1177Login(self, request, context):
        session = await self._e_services.complete(request.state, request.code, request.redirect_uri)
        return identity_pb2.Complete1177LoginResponse(session=session_pb(session))

    async def DevelopmentLogin(self, request, context):
        session = await self._development.login(request.person_id, _METHOD_NAMES.get(request.method, ""))
        return identity_pb2.DevelopmentLoginResponse(session=session_pb(session))

    # ------------------------------------------------------------ tokens

    async def IssueJoinToken(self, request, context):
        token, jti, expires = await self._tokens.issue_join(
            meeting_id=request.meeting_id, participant_id=request.participant_id,
            media_instance=request.media_instance, ttl_seconds=request.ttl_seconds)
        return identity_pb2.IssueJoinTokenResponse(token=token, token_id=jti, expires_at=timestamp(expires))

    async def VerifyToken(self, request, context):
        v = await self._tokens.verify(request.token, _TOKEN_KIND_NAMES.get(request.expected_kind))
        response = identity_pb2.VerifyTokenResponse(
            kind=_TOKEN_KINDS[v.kind], token_id=v.token_id, expires_at=timestamp(v.expires_at),
            meeting_id=v.meeting_id, participant_id=v.participant_id, media_instance=v.media_instance,
            service=v.service)
        if v.principal is not None:
            response.principal.CopyFrom(principal_pb(v.principal))
        return response

    async def RevokeTokens(self, request, context):
        who = auth.caller()
        if who.id == "gateway" and (request.meeting_id or request.participant_id or not request.token_id):
            raise PermissionDenied("the gateway may revoke one session token (logout), nothing wider")
        await self._tokens.revoke(token_id=request.token_id, meeting_id=request.meeting_id,
                                  participant_id=request.participant_id, reason=request.reason,
                                  actor=auth.caller().actor())
        return identity_pb2.RevokeTokensResponse()

    async def ListRevokedSessions(self, request, context):
        sessions, cursor = await self._tokens.revoked_sessions(request.cursor)
        return identity_pb2.ListRevokedSessionsResponse(
            sessions=[identity_pb2.RevokedSession(token_id=tid, expires_at=timestamp(exp)) for tid, exp in sessions],
            cursor=cursor)

    async def GetSigningKeys(self, request, context):
        return identity_pb2.GetSigningKeysResponse(jwks_json=self._keys.jwks_json())

    # ------------------------------------------------------------ access log

    async def ListAccessRecords(self, request, context):
        start = to_datetime(request.period.start, "period.start") if request.period.HasField("start") else None
        end = to_datetime(request.period.end, "period.end") if request.period.HasField("end") else None
        records, token = await self._extract.list(request.patient_personnummer, start, end, request.page.page_size,
                                                  request.page.page_token)
        return identity_pb2.ListAccessRecordsResponse(
            records=[identity_pb2.AccessRecord(
                at=timestamp(r["at"]), actor=r.get("actor", ""), action=r.get("action", ""),
                patient=r.get("patient", ""), care_unit=r.get("care_unit", ""), service=r.get("service", ""),
                resource=r.get("resource", ""), purpose=r.get("purpose", ""), via=r.get("via", "")) for r in records],
            page=common_pb2.PageResponse(next_page_token=token))
