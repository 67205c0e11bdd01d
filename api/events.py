"""(skeleton: built in issue 28)"""

from fastapi import APIRouter

router = APIRouter()
