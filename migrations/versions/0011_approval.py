"""Approval: a draft submitted to a leader for signature, the decision, the approved PDF

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 09:00:00

One row per submission (trình ký): the leader it is addressed to, who submitted it and when, the
leader's decision (ký duyệt or trả lại with a comment), a withdrawal, and where the approved PDF
is archived with its SHA-256. ``dispatch.signed`` says whether an issued letter carries the
digital signatures.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'dispatch_approval',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('dispatch_id', sa.Integer(), nullable=False),
        sa.Column('status', sa.Enum('submitted', 'returned', 'approved', 'withdrawn',
                                    name='approvalstatus', native_enum=False, length=20),
                  nullable=False),
        sa.Column('leader_id', sa.Integer(), nullable=False),
        sa.Column('submitted_by_id', sa.Integer(), nullable=True),
        sa.Column('submitted_at', sa.DateTime(), nullable=False),
        sa.Column('decided_at', sa.DateTime(), nullable=True),
        sa.Column('comment', sa.Text(), nullable=True),
        sa.Column('withdrawn_by_id', sa.Integer(), nullable=True),
        sa.Column('withdrawn_at', sa.DateTime(), nullable=True),
        sa.Column('certificate', sa.String(length=500), nullable=True),
        sa.Column('pdf_path', sa.String(length=500), nullable=True),
        sa.Column('pdf_sha256', sa.String(length=64), nullable=True),
        sa.Column('pdf_size', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['dispatch_id'], ['dispatch.id'], name=op.f('fk_dispatch_approval_dispatch_id_dispatch'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['leader_id'], ['user_account.id'], name=op.f('fk_dispatch_approval_leader_id_user_account')),
        sa.ForeignKeyConstraint(['submitted_by_id'], ['user_account.id'], name=op.f('fk_dispatch_approval_submitted_by_id_user_account')),
        sa.ForeignKeyConstraint(['withdrawn_by_id'], ['user_account.id'], name=op.f('fk_dispatch_approval_withdrawn_by_id_user_account')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_dispatch_approval')),
    )
    with op.batch_alter_table('dispatch_approval', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dispatch_approval_dispatch_id'), ['dispatch_id'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_dispatch_approval_leader_id'), ['leader_id'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_dispatch_approval_status'), ['status'],
                              unique=False)
    with op.batch_alter_table('dispatch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('signed', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))


def downgrade():
    with op.batch_alter_table('dispatch', schema=None) as batch_op:
        batch_op.drop_column('signed')
    with op.batch_alter_table('dispatch_approval', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dispatch_approval_status'))
        batch_op.drop_index(batch_op.f('ix_dispatch_approval_leader_id'))
        batch_op.drop_index(batch_op.f('ix_dispatch_approval_dispatch_id'))
    op.drop_table('dispatch_approval')
