"""Signing: a leader's key reference, password variable and signature image

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-05 10:35:00

Only the reference of the key (a PKCS#12 path or a pkcs11: URI) and the name of the environment
variable that holds its password are stored; the private key and the password never are.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('user_account', schema=None) as batch_op:
        batch_op.add_column(sa.Column('signing_key', sa.String(length=1000), nullable=True))
        batch_op.add_column(sa.Column('signing_password_env', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('signature_image', sa.LargeBinary(), nullable=True))


def downgrade():
    with op.batch_alter_table('user_account', schema=None) as batch_op:
        batch_op.drop_column('signature_image')
        batch_op.drop_column('signing_password_env')
        batch_op.drop_column('signing_key')
