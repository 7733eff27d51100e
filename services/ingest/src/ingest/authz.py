"""Who may do what to which account's payments and webhook endpoints: one decision, for
every route. Pure.

- ``ops`` (a JWT role) may do everything, and only ``ops`` may list and decide payments
  held in REVIEW (an API key acts for its account, never as an operator);
- any other principal acts for one account (a JWT's ``sub``, an API key's account) within
  its scopes: ``payments:write`` to create, ``payments:read`` to read payments and their
  audit trails, ``webhooks:manage`` for everything about its webhook endpoints;
- a missing scope is 403 whatever the payment or endpoint (nothing about it is read first);
- creating a payment for another account is 403; reading another account's payment, or
  touching its endpoint, is 404, exactly as for an id that does not exist, so ids cannot
  be probed (OWASP API1, broken object-level authorization).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Final

from pulse.api_keys import PAYMENTS_READ, PAYMENTS_WRITE, WEBHOOKS_MANAGE

if TYPE_CHECKING:
    from pulse.credentials import Principal

__all__ = ["Action", "Verdict", "authorize"]


class Action(enum.Enum):
    CREATE = "create"  # POST /v1/payments
    READ = "read"  # GET /v1/payments/{id}, GET /v1/payments/{id}/events
    REVIEW = "review"  # GET /v1/payments?status=REVIEW, POST /v1/payments/{id}/review
    MANAGE_WEBHOOKS = "manage_webhooks"  # /v1/webhook-endpoints and below

    @property
    def scope(self) -> str | None:
        """The API-key scope the action needs; None: no scope grants it (operators only)."""
        return _SCOPES.get(self)


_SCOPES: Final = {
    Action.CREATE: PAYMENTS_WRITE,
    Action.READ: PAYMENTS_READ,
    Action.MANAGE_WEBHOOKS: WEBHOOKS_MANAGE,
}


class Verdict(enum.Enum):
    ALLOW = "allow"
    MISSING_SCOPE = "missing_scope"  # 403, insufficient_scope
    FORBIDDEN = "forbidden"  # 403: another account's payment, to create
    NOT_FOUND = "not_found"  # 404: another account's payment, to read


def authorize(principal: Principal, action: Action, account_id: str | None = None) -> Verdict:
    """May ``principal`` do ``action`` to a payment (or endpoint) of ``account_id``?

    With ``account_id`` None (the payment is not read yet) only the scope is checked.
    """
    if principal.is_ops:
        return Verdict.ALLOW
    if action.scope is None:
        return Verdict.FORBIDDEN
    if action.scope not in principal.scopes:
        return Verdict.MISSING_SCOPE
    if account_id is None or account_id == principal.account_id:
        return Verdict.ALLOW
    return Verdict.FORBIDDEN if action is Action.CREATE else Verdict.NOT_FOUND
