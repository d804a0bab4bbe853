"""A verification code per dispatch, for the public page its QR code opens

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 09:00:00

Every dispatch gets a random, URL-safe code (``/xac-minh/<code>``); existing rows are given one
here, each its own.
"""
import secrets

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('dispatch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('verification_code', sa.String(length=32), nullable=True))

    dispatch = sa.table('dispatch', sa.column('id', sa.Integer), sa.column('verification_code'))
    conn = op.get_bind()
    ids = conn.execute(sa.select(dispatch.c.id)).scalars().all()
    for dispatch_id in ids:
        conn.execute(
            dispatch.update()
            .where(dispatch.c.id == dispatch_id)
            .values(verification_code=secrets.token_urlsafe(12))
        )

    with op.batch_alter_table('dispatch', schema=None) as batch_op:
        batch_op.alter_column('verification_code', existing_type=sa.String(length=32), nullable=False)
        batch_op.create_unique_constraint(batch_op.f('uq_dispatch_verification_code'), ['verification_code'])


def downgrade():
    with op.batch_alter_table('dispatch', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_dispatch_verification_code'), type_='unique')
        batch_op.drop_column('verification_code')
