"""Merge the two 0002 branches (rung tables, loop tables) into one head.

Revision ID: 0003
Revises: 0002, 0002_rungs
"""

from __future__ import annotations

revision = "0003"
down_revision = ("0002", "0002_rungs")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
