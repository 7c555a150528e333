"""The PostgreSQL job queue (procrastinate) that runs scheduled and background work once.

The schema is the one shipped by the pinned procrastinate release; a future
upgrade of that library brings its own migration files, applied by a new
revision here.

Revision ID: 0004_job_queue
Revises: 0003_core_2_0
"""

from alembic import op
from procrastinate.schema import SchemaManager

revision = "0004_job_queue"
down_revision = "0003_core_2_0"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(SchemaManager.get_schema())


def downgrade() -> None:
    raise NotImplementedError
