"""Every e-mail's own envelope sender (VERP) and the Reply-To mailbox."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from dispatch.extensions import db
from dispatch.mail.sender import deliver_due
from dispatch.mail.verp import bounce_address, is_token, new_token, token_in
from dispatch.models import OutboxMessage
from tests.fixtures.smtp import ISSUED_AT

AT = ISSUED_AT + dt.timedelta(minutes=1)
CONFIG = {"DISPATCH_BOUNCE_ADDRESS": "Hộp thư trả lại <bounces@thh.example>"}


@pytest.mark.nodb
def test_a_token_is_random_lower_case_and_round_trips_through_the_address():
    tokens = {new_token() for _ in range(200)}
    assert len(tokens) == 200
    token = tokens.pop()
    assert is_token(token) and token == token.lower() and len(token) == 24
    address = bounce_address(token, CONFIG)
    assert address == f"bounces+{token}@thh.example"
    # Relays may change the case of the address; a foreign domain or prefix is not ours.
    assert token_in(address.upper(), CONFIG) == token
    assert token_in(f"<{address}>", CONFIG) == token
    assert token_in(f"bounces+{token}@other.example", CONFIG) is None
    assert token_in(f"postmaster+{token}@thh.example", CONFIG) is None
    assert token_in("bounces+not-a-token@thh.example", CONFIG) is None
    assert bounce_address(token, {}) is None and token_in(address, {}) is None


def test_each_message_leaves_with_its_own_envelope_sender_and_the_reply_to(
    smtp_app, smtp_server, outbox_dispatch
):
    smtp_app.config.update(
        DISPATCH_BOUNCE_ADDRESS="bounces@thh.example", DISPATCH_REPLY_TO="van-thu-den@thh.example"
    )
    dispatch = outbox_dispatch(4)
    assert deliver_due(AT).sent == 4

    rows = {
        row.message_id: row
        for row in db.session.execute(
            select(OutboxMessage).where(OutboxMessage.dispatch_id == dispatch.id)
        ).scalars()
    }
    senders = set()
    for received in smtp_server.messages:
        row = rows[received.message_id]
        assert received.mail_from == f"bounces+{row.bounce_token}@thh.example"
        senders.add(received.mail_from)
        # The token is random, nothing else: not the address, not the ids of the row.
        assert is_token(row.bounce_token)
        assert row.recipient.email.split("@")[0].lower() not in row.bounce_token
        assert f"d{dispatch.id}" not in row.bounce_token
        mail = received.email
        assert mail["Reply-To"] == "van-thu-den@thh.example"
        assert mail["From"].addresses[0].addr_spec == "van-thu@thh.example"
    assert len(senders) == 4


def test_without_a_bounce_address_the_from_address_is_the_envelope_sender(
    smtp_app, smtp_server, outbox_dispatch
):
    outbox_dispatch(1)
    deliver_due(AT)
    (received,) = smtp_server.messages
    assert received.mail_from == "van-thu@thh.example"
    assert received.email["Reply-To"] is None
