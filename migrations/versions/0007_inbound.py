"""Delivery truth and the national exchange: bounces, replies, edXML, recall and replacement

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-05 06:40:42

Every outbox row gets its own envelope sender token (VERP, ``bounce_token``). Inbound mail and
edXML status messages are kept in ``inbound_message`` (unique by the SHA-256 of their bytes);
the IMAP poller's position survives restarts in ``imap_cursor``. A recipient can now be bounced,
refused by the office's system, or have its handling followed (assigned, in progress, done).
``dispatch_amendment`` records a clerk's request, and a leader's decision, to recall or replace
an issued dispatch.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('imap_cursor',
    sa.Column('mailbox', sa.String(length=300), nullable=False),
    sa.Column('uidvalidity', sa.BigInteger(), nullable=False),
    sa.Column('last_uid', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('mailbox', name=op.f('pk_imap_cursor'))
    )
    op.create_table('dispatch_amendment',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('recall', 'replace', name='amendmentkind', native_enum=False, length=20), nullable=False),
    sa.Column('status', sa.Enum('requested', 'approved', 'rejected', name='amendmentstatus', native_enum=False, length=20), nullable=False),
    sa.Column('original_id', sa.Integer(), nullable=False),
    sa.Column('new_id', sa.Integer(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('requested_by_id', sa.Integer(), nullable=True),
    sa.Column('requested_at', sa.DateTime(), nullable=False),
    sa.Column('decided_by_id', sa.Integer(), nullable=True),
    sa.Column('decided_at', sa.DateTime(), nullable=True),
    sa.Column('decision_note', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['decided_by_id'], ['user_account.id'], name=op.f('fk_dispatch_amendment_decided_by_id_user_account')),
    sa.ForeignKeyConstraint(['new_id'], ['dispatch.id'], name=op.f('fk_dispatch_amendment_new_id_dispatch')),
    sa.ForeignKeyConstraint(['original_id'], ['dispatch.id'], name=op.f('fk_dispatch_amendment_original_id_dispatch')),
    sa.ForeignKeyConstraint(['requested_by_id'], ['user_account.id'], name=op.f('fk_dispatch_amendment_requested_by_id_user_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dispatch_amendment'))
    )
    with op.batch_alter_table('dispatch_amendment', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dispatch_amendment_new_id'), ['new_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_dispatch_amendment_original_id'), ['original_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_dispatch_amendment_status'), ['status'], unique=False)

    op.create_table('inbound_message',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('received_at', sa.DateTime(), nullable=False),
    sa.Column('door', sa.String(length=10), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('archive_path', sa.String(length=500), nullable=False),
    sa.Column('envelope_from', sa.String(length=254), nullable=True),
    sa.Column('envelope_to', sa.JSON(), nullable=False),
    sa.Column('header_message_id', sa.String(length=500), nullable=True),
    sa.Column('from_address', sa.String(length=254), nullable=True),
    sa.Column('from_name', sa.String(length=200), nullable=True),
    sa.Column('subject', sa.String(length=500), nullable=True),
    sa.Column('kind', sa.Enum('bounce', 'delay', 'delivered', 'auto_reply', 'reply', 'edxml_status', name='inboundkind', native_enum=False, length=20), nullable=False),
    sa.Column('matched_by', sa.String(length=20), nullable=True),
    sa.Column('outbox_message_id', sa.Integer(), nullable=True),
    sa.Column('recipient_id', sa.Integer(), nullable=True),
    sa.Column('dispatch_id', sa.Integer(), nullable=True),
    sa.Column('dsn_status', sa.String(length=20), nullable=True),
    sa.Column('diagnostic', sa.Text(), nullable=True),
    sa.Column('reporting_mta', sa.String(length=255), nullable=True),
    sa.Column('failed_recipient', sa.String(length=254), nullable=True),
    sa.Column('excerpt', sa.Text(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('confirmed_at', sa.DateTime(), nullable=True),
    sa.Column('confirmed_by_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['confirmed_by_id'], ['user_account.id'], name=op.f('fk_inbound_message_confirmed_by_id_user_account')),
    sa.ForeignKeyConstraint(['outbox_message_id'], ['outbox_message.id'], name=op.f('fk_inbound_message_outbox_message_id_outbox_message'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['recipient_id'], ['dispatch_recipient.id'], name=op.f('fk_inbound_message_recipient_id_dispatch_recipient'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_inbound_message')),
    sa.UniqueConstraint('sha256', name=op.f('uq_inbound_message_sha256'))
    )
    with op.batch_alter_table('inbound_message', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_inbound_message_dispatch_id'), ['dispatch_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_inbound_message_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_inbound_message_outbox_message_id'), ['outbox_message_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_inbound_message_received_at'), ['received_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_inbound_message_recipient_id'), ['recipient_id'], unique=False)

    with op.batch_alter_table('dispatch_recipient', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bounced_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('bounced_address', sa.String(length=254), nullable=True))
        batch_op.add_column(sa.Column('bounce_status', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('bounce_diagnostic', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('bounce_reporter', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('refused_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('refused_by', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('refusal_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('processing_state', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('processing_at', sa.DateTime(), nullable=True))

    with op.batch_alter_table('outbox_message', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bounce_token', sa.String(length=40), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_outbox_message_bounce_token'), ['bounce_token'])



def downgrade():
    with op.batch_alter_table('outbox_message', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_outbox_message_bounce_token'), type_='unique')
        batch_op.drop_column('bounce_token')

    with op.batch_alter_table('dispatch_recipient', schema=None) as batch_op:
        batch_op.drop_column('processing_at')
        batch_op.drop_column('processing_state')
        batch_op.drop_column('refusal_reason')
        batch_op.drop_column('refused_by')
        batch_op.drop_column('refused_at')
        batch_op.drop_column('bounce_reporter')
        batch_op.drop_column('bounce_diagnostic')
        batch_op.drop_column('bounce_status')
        batch_op.drop_column('bounced_address')
        batch_op.drop_column('bounced_at')

    with op.batch_alter_table('inbound_message', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_inbound_message_recipient_id'))
        batch_op.drop_index(batch_op.f('ix_inbound_message_received_at'))
        batch_op.drop_index(batch_op.f('ix_inbound_message_outbox_message_id'))
        batch_op.drop_index(batch_op.f('ix_inbound_message_kind'))
        batch_op.drop_index(batch_op.f('ix_inbound_message_dispatch_id'))

    op.drop_table('inbound_message')
    with op.batch_alter_table('dispatch_amendment', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dispatch_amendment_status'))
        batch_op.drop_index(batch_op.f('ix_dispatch_amendment_original_id'))
        batch_op.drop_index(batch_op.f('ix_dispatch_amendment_new_id'))

    op.drop_table('dispatch_amendment')
    op.drop_table('imap_cursor')
