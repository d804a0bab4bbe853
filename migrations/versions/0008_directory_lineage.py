"""The directory through time: lineage between office versions, follow-up letters

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 10:00:00

``organisation_succession`` links an office version to the versions that took over from it
(renamed departments one-to-one, merged provinces many-to-one). ``dispatch.follow_up_of_id``
links a follow-up letter (công văn đôn đốc) to the dispatch whose late offices it chases.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('organisation_succession',
    sa.Column('predecessor_id', sa.Integer(), nullable=False),
    sa.Column('successor_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['predecessor_id'], ['organisation.id'], name=op.f('fk_organisation_succession_predecessor_id_organisation'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['successor_id'], ['organisation.id'], name=op.f('fk_organisation_succession_successor_id_organisation'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('predecessor_id', 'successor_id', name=op.f('pk_organisation_succession'))
    )
    with op.batch_alter_table('organisation_succession', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_organisation_succession_successor_id'), ['successor_id'], unique=False)

    with op.batch_alter_table('dispatch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('follow_up_of_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_dispatch_follow_up_of_id'), ['follow_up_of_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_dispatch_follow_up_of_id_dispatch'), 'dispatch', ['follow_up_of_id'], ['id'], ondelete='SET NULL')


def downgrade():
    with op.batch_alter_table('dispatch', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_dispatch_follow_up_of_id_dispatch'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_dispatch_follow_up_of_id'))
        batch_op.drop_column('follow_up_of_id')

    with op.batch_alter_table('organisation_succession', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_organisation_succession_successor_id'))

    op.drop_table('organisation_succession')
