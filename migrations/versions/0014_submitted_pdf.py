"""Approval: the PDF submitted for signature, archived, is the one the leader reads and signs

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 09:00:00

A submission (trình ký) renders the letter once and keeps those exact bytes in the archive with
their SHA-256; the leader's page shows them and the approval signs them. A submission made
before this revision has none: it must be withdrawn and submitted again to be signed.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('dispatch_approval', schema=None) as batch_op:
        batch_op.add_column(sa.Column('submitted_pdf_path', sa.String(length=500), nullable=True))
        batch_op.add_column(sa.Column('submitted_pdf_sha256', sa.String(length=64),
                                      nullable=True))
        batch_op.add_column(sa.Column('submitted_pdf_size', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('dispatch_approval', schema=None) as batch_op:
        batch_op.drop_column('submitted_pdf_size')
        batch_op.drop_column('submitted_pdf_sha256')
        batch_op.drop_column('submitted_pdf_path')
