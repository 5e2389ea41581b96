"""REST /api/v1 "directory": the HSA directory searched by name, relayed to identity with the
person's own token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from svpl.common.v1 import common_pb2
from svpl.identity.v1 import identity_pb2

from services.gateway.access import relays
from services.gateway.dependencies import Me
from services.gateway.routes.common import answers, relayed

router = APIRouter(prefix="/api/v1", tags=["directory"])


@router.get("/directory/people", responses=answers(identity_pb2.SearchDirectoryResponse),
            summary="Search the HSA directory by name (staff)")
@relays("identity", "SearchDirectory")
async def search_directory(request: Request, me: Me,
                           name: Annotated[str, Query(min_length=2, max_length=100)],
                           organization: Annotated[str, Query(max_length=100)] = "",
                           page_token: Annotated[str, Query(max_length=500)] = ""):
    msg = identity_pb2.SearchDirectoryRequest(name=name, organization=organization,
                                              page=common_pb2.PageRequest(page_token=page_token),
                                              purpose="registering meeting participants")
    return await relayed(request, me, msg)
