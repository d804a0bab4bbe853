"""Audit log: where each lane ends, in a row an append locks

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 15:00:00

An append to a lane used to take an advisory lock and then look up the lane's last entry: two
round trips before its INSERT. ``audit_lane`` keeps each lane's last hash in a row that the
append locks and reads at once (``SELECT … FOR UPDATE``) and moves in the statement that inserts
the entry. It is filled here from the entries already written.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('audit_lane',
    sa.Column('lane', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('hash', sa.String(length=64), server_default='', nullable=False),
    sa.PrimaryKeyConstraint('lane', name=op.f('pk_audit_lane'))
    )
    op.execute(
        'INSERT INTO audit_lane (lane, hash) '
        'SELECT lane, hash FROM audit_entry '
        'WHERE id IN (SELECT max(id) FROM audit_entry GROUP BY lane)'
    )


def downgrade():
    op.drop_table('audit_lane')
