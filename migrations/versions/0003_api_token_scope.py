"""API tokens: a scope (read or write) and an expiry

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 10:00:00

Tokens made before this revision could do everything their owner's role allowed and never
expired: they keep the "write" scope, so that the systems using them go on working, and expire
90 days after the upgrade, which gives their owners time to replace them.
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "0003"
down_revision = '0002'
branch_labels = None
depends_on = None

EXISTING_TOKENS_LAST = dt.timedelta(days=90)


def upgrade():
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "scope",
                sa.Enum("read", "write", name="tokenscope", native_enum=False, length=20),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(), nullable=True))
    # Stored as naive UTC, as every UTCDateTime column.
    expires = (dt.datetime.now(dt.UTC) + EXISTING_TOKENS_LAST).replace(tzinfo=None)
    api_token = sa.table(
        "api_token", sa.column("scope", sa.String), sa.column("expires_at", sa.DateTime)
    )
    op.execute(api_token.update().values(scope="write", expires_at=expires))
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.alter_column(
            "scope",
            existing_type=sa.Enum("read", "write", name="tokenscope", native_enum=False, length=20),
            nullable=False,
        )
        batch_op.alter_column("expires_at", existing_type=sa.DateTime(), nullable=False)


def downgrade():
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
        batch_op.drop_column("scope")
