"""Audit log: lanes and a key

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 06:00:00

Each entry now belongs to one of several chains (``lane``), so that writers in different lanes
do not wait for each other, and carries an HMAC (``mac``) made with a key kept outside the
database. Entries written before keep lane 0 and an empty ``mac``: ``dispatch audit verify``
accepts them only before the first keyed entry, and says how many there are.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lane', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('mac', sa.String(length=64), server_default='', nullable=False))
        batch_op.create_index('ix_audit_entry_lane_id', ['lane', 'id'], unique=False)


def downgrade():
    with op.batch_alter_table('audit_entry', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_entry_lane_id')
        batch_op.drop_column('mac')
        batch_op.drop_column('lane')
