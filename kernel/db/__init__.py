"""PostgreSQL access: the connection pool and versioned migrations."""

from kernos.kernel.db.migrate import applied_versions, upgrade
from kernos.kernel.db.pool import open_pool

__all__ = ["applied_versions", "open_pool", "upgrade"]
