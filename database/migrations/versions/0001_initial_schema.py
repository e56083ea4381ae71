"""Initial schema: campaigns, iterations, structures, selections, labels, models, api_tokens.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 01:52:47.727620
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('name', name=op.f('uq_api_tokens_name')),
    sa.UniqueConstraint('token_sha256', name=op.f('uq_api_tokens_token_sha256'))
    )
    op.create_table('campaigns',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_message', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('created', 'running', 'paused', 'cancelled', 'converged', 'failed')", name=op.f('ck_campaigns_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaigns')),
    sa.UniqueConstraint('name', name=op.f('uq_campaigns_name'))
    )
    op.create_table('iterations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('step_timings', sa.JSON(), nullable=False),
    sa.Column('n_explored', sa.Integer(), nullable=False),
    sa.Column('n_accurate', sa.Integer(), nullable=False),
    sa.Column('n_candidate', sa.Integer(), nullable=False),
    sa.Column('n_failed', sa.Integer(), nullable=False),
    sa.Column('validation', sa.JSON(), nullable=False),
    sa.Column('max_force_devs', sa.LargeBinary(), nullable=True),
    sa.CheckConstraint("status IN ('created', 'running', 'done', 'failed')", name=op.f('ck_iterations_status')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_iterations_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_iterations')),
    sa.UniqueConstraint('campaign_id', 'index', name=op.f('uq_iterations_campaign_id_index'))
    )
    with op.batch_alter_table('iterations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_iterations_campaign_id'), ['campaign_id'], unique=False)

    op.create_table('models',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('iteration_id', sa.Integer(), nullable=True),
    sa.Column('member_count', sa.Integer(), nullable=False),
    sa.Column('checkpoint_uri', sa.Text(), nullable=False),
    sa.Column('checkpoint_sha256', sa.String(length=64), nullable=False),
    sa.Column('training_label_ids', sa.LargeBinary(), nullable=False),
    sa.Column('validation', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_models_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['iteration_id'], ['iterations.id'], name=op.f('fk_models_iteration_id_iterations'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_models'))
    )
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_models_campaign_id'), ['campaign_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_models_iteration_id'), ['iteration_id'], unique=False)

    op.create_table('structures',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('natoms', sa.Integer(), nullable=False),
    sa.Column('formula', sa.String(length=200), nullable=False),
    sa.Column('numbers', sa.LargeBinary(), nullable=False),
    sa.Column('positions', sa.LargeBinary(), nullable=False),
    sa.Column('cell', sa.LargeBinary(), nullable=False),
    sa.Column('pbc', sa.LargeBinary(), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.Column('origin_campaign_id', sa.Integer(), nullable=True),
    sa.Column('origin_iteration_id', sa.Integer(), nullable=True),
    sa.Column('walker', sa.String(length=100), nullable=True),
    sa.Column('temperature', sa.Float(), nullable=True),
    sa.Column('pressure', sa.Float(), nullable=True),
    sa.Column('md_step', sa.Integer(), nullable=True),
    sa.Column('info', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['origin_campaign_id'], ['campaigns.id'], name=op.f('fk_structures_origin_campaign_id_campaigns'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['origin_iteration_id'], ['iterations.id'], name=op.f('fk_structures_origin_iteration_id_iterations'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_structures')),
    sa.UniqueConstraint('hash', name=op.f('uq_structures_hash'))
    )
    with op.batch_alter_table('structures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_structures_origin_campaign_id'), ['origin_campaign_id'], unique=False)

    op.create_table('labels',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('structure_id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=True),
    sa.Column('iteration_id', sa.Integer(), nullable=True),
    sa.Column('labeler', sa.String(length=100), nullable=False),
    sa.Column('labeler_version', sa.String(length=100), nullable=False),
    sa.Column('settings_hash', sa.String(length=64), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('energy', sa.Float(), nullable=True),
    sa.Column('forces', sa.LargeBinary(), nullable=True),
    sa.Column('stress', sa.LargeBinary(), nullable=True),
    sa.Column('failure_kind', sa.String(length=32), nullable=True),
    sa.Column('failure_message', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('wall_time', sa.Float(), nullable=True),
    sa.Column('host', sa.String(length=200), nullable=True),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status != 'done' OR (energy IS NOT NULL AND forces IS NOT NULL)", name=op.f('ck_labels_done_complete')),
    sa.CheckConstraint("status != 'failed' OR failure_kind IS NOT NULL", name=op.f('ck_labels_failed_kind')),
    sa.CheckConstraint("status IN ('pending', 'running', 'done', 'failed')", name=op.f('ck_labels_status')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_labels_campaign_id_campaigns'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['iteration_id'], ['iterations.id'], name=op.f('fk_labels_iteration_id_iterations'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['structure_id'], ['structures.id'], name=op.f('fk_labels_structure_id_structures'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_labels')),
    sa.UniqueConstraint('structure_id', 'labeler', 'settings_hash', name=op.f('uq_labels_structure_id_labeler_settings_hash'))
    )
    with op.batch_alter_table('labels', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_labels_campaign_id'), ['campaign_id'], unique=False)
        batch_op.create_index('ix_labels_claim', ['status', 'labeler', 'settings_hash', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_labels_iteration_id'), ['iteration_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_labels_structure_id'), ['structure_id'], unique=False)

    op.create_table('selections',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('iteration_id', sa.Integer(), nullable=True),
    sa.Column('structure_id', sa.Integer(), nullable=False),
    sa.Column('max_force_dev', sa.Float(), nullable=True),
    sa.Column('energy_std', sa.Float(), nullable=True),
    sa.Column('forces_std', sa.LargeBinary(), nullable=True),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('strategy', sa.String(length=100), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_selections_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['iteration_id'], ['iterations.id'], name=op.f('fk_selections_iteration_id_iterations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['structure_id'], ['structures.id'], name=op.f('fk_selections_structure_id_structures'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_selections')),
    sa.UniqueConstraint('campaign_id', 'structure_id', name=op.f('uq_selections_campaign_id_structure_id'))
    )
    with op.batch_alter_table('selections', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_selections_campaign_id'), ['campaign_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_selections_iteration_id'), ['iteration_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_selections_structure_id'), ['structure_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('selections', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_selections_structure_id'))
        batch_op.drop_index(batch_op.f('ix_selections_iteration_id'))
        batch_op.drop_index(batch_op.f('ix_selections_campaign_id'))

    op.drop_table('selections')
    with op.batch_alter_table('labels', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_labels_structure_id'))
        batch_op.drop_index(batch_op.f('ix_labels_iteration_id'))
        batch_op.drop_index('ix_labels_claim')
        batch_op.drop_index(batch_op.f('ix_labels_campaign_id'))

    op.drop_table('labels')
    with op.batch_alter_table('structures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_structures_origin_campaign_id'))

    op.drop_table('structures')
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_models_iteration_id'))
        batch_op.drop_index(batch_op.f('ix_models_campaign_id'))

    op.drop_table('models')
    with op.batch_alter_table('iterations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_iterations_campaign_id'))

    op.drop_table('iterations')
    op.drop_table('campaigns')
    op.drop_table('api_tokens')

